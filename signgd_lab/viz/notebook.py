"""Notebook set-up: make matplotlib figures display as embedded PNG images."""
from __future__ import annotations


def setup_notebook(dpi: int = 100) -> None:
    """Register a PNG formatter for matplotlib figures in the running IPython shell, so that
    ``display(fig)`` embeds an image (which nbconvert keeps in HTML reports) without pyplot's
    global state. Does nothing outside IPython."""
    try:
        from IPython import get_ipython
        from IPython.core.pylabtools import select_figure_formats
    except ImportError:  # pragma: no cover - IPython is a dependency
        return
    shell = get_ipython()
    if shell is not None:
        select_figure_formats(shell, {"png"}, dpi=dpi, bbox_inches="tight")
