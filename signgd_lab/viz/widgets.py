"""Interactive panels for notebooks: controls that redraw a figure with a package function."""
from __future__ import annotations

from typing import Any, Callable

from matplotlib.figure import Figure


class LivePanel:
    """Controls plus a figure redrawn by ``draw(**values)`` whenever a control changes.

    Attributes:
        controls: name -> ipywidgets control; its value is passed to ``draw`` under that name.
        figure: the last figure drawn; ``redraws`` counts how many were drawn.
        widget: the ipywidgets box to display (a LivePanel also displays itself).
    """

    def __init__(self, draw: Callable[..., Any], controls: dict[str, Any]) -> None:
        import ipywidgets as widgets

        self.draw = draw
        self.controls = controls
        self.output = widgets.Output()
        self.redraws = 0
        self.figure: Figure | None = None
        for control in controls.values():
            control.observe(self._redraw, names="value")
        self.widget = widgets.VBox([widgets.HBox(list(controls.values())), self.output])
        self._redraw()

    def values(self) -> dict[str, Any]:
        """Current value of every control."""
        return {k: c.value for k, c in self.controls.items()}

    def _redraw(self, change: Any = None) -> None:
        figure = self.draw(**self.values())
        self.figure = figure
        self.redraws += 1
        # set the Output widget's state directly rather than capturing printed output into it:
        # a plain state update, which headless executors (nbclient) handle without routing
        self.output.outputs = ()
        if figure is not None:
            self.output.append_display_data(figure)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
