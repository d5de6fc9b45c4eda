"""Interactive panels for notebooks: controls that redraw a figure with a package function."""
from __future__ import annotations

import html
from typing import Any, Callable

from matplotlib.figure import Figure


class LivePanel:
    """A heading, controls (wrapping onto several rows), a status line and a figure redrawn by
    ``draw(**values)`` whenever a control changes.

    While ``draw`` runs the status line says "computing..."; if it raises, the panel shows the
    error (type and message) in its own output instead of a stale figure. A control may be
    shared by several panels (it is then linked: moving it redraws all of them).

    Attributes:
        controls: name -> ipywidgets control; its value is passed to ``draw`` under that name.
        figure: the last figure drawn; ``redraws`` counts successful draws.
        error: the message of the last failed draw, or None after a successful one.
        widget: the ipywidgets box to display (a LivePanel also displays itself).
    """

    def __init__(self, draw: Callable[..., Any], controls: dict[str, Any], title: str = "") -> None:
        import ipywidgets as widgets

        self.draw = draw
        self.controls = controls
        self.output = widgets.Output()
        self.status = widgets.HTML(value="")
        self.redraws = 0
        self.error: str | None = None
        self.figure: Figure | None = None
        for control in controls.values():
            control.observe(self._redraw, names="value")
            if hasattr(control, "style") and hasattr(control.style, "description_width"):
                control.style.description_width = "initial"
            if not control.layout.width:
                control.layout.min_width = "16em"
        row = widgets.Layout(flex_flow="row wrap", grid_gap="0.3em 1.5em")  # CSS grid-gap = gap
        controls_box = widgets.HBox(list(controls.values()), layout=row)
        heading = [widgets.HTML(f"<b>{html.escape(title)}</b>")] if title else []
        self.widget = widgets.VBox([*heading, controls_box, self.status, self.output],
                                   layout=widgets.Layout(border="1px solid #ddd", padding="0.4em"))
        self.widget.add_class("signgd-panel")  # a handle for styling and browser tests
        self._redraw()

    def values(self) -> dict[str, Any]:
        """Current value of every control."""
        return {k: c.value for k, c in self.controls.items()}

    def _redraw(self, change: Any = None) -> None:
        # set the Output widget's state directly rather than capturing printed output into it:
        # a plain state update, which headless executors (nbclient) handle without routing
        self.status.value = "<i>computing...</i>"
        try:
            figure = self.draw(**self.values())
        except Exception as err:  # shown in the panel: a callback's error has no other place
            self.error = f"{type(err).__name__}: {err}"
            self.output.outputs = ()
            self.output.append_display_data(_ErrorMessage(self.error))
            self.status.value = ""
            return
        self.error = None
        self.figure = figure
        self.redraws += 1
        self.output.outputs = ()
        if figure is not None:
            self.output.append_display_data(figure)
        self.status.value = ""

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


class _ErrorMessage:
    """An error shown in a panel (HTML in a browser, plain text elsewhere)."""

    def __init__(self, message: str) -> None:
        self.message = message

    def _repr_html_(self) -> str:
        return (f'<pre class="signgd-panel-error" style="color:#b00020;white-space:pre-wrap">'
                f"error: {html.escape(self.message)}</pre>")

    def __repr__(self) -> str:
        return f"error: {self.message}"
