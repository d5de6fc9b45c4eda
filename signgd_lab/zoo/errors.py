"""The error raised by bad model and data specs."""
from __future__ import annotations


class SpecError(ValueError):
    """A model or data spec that cannot be used (missing file, folder without images, class
    count not matching the model's head, weights that do not fit, ...). The message names the
    problem and the fix; it is raised before any conversion or evaluation work starts."""
