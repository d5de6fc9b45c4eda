"""Conversion recipes: *what* to replace and how to calibrate, separate from the executor.

``paper`` follows docs/theory.md, section 4 (the reference's pipeline). ``extended`` is ours
(section 6): it keeps every equation of the neurons but picks targets that match the module
(exact erf/tanh GELU, the module's LeakyReLU slope) and brings every neuron's output into the
signGD range with an exact rewrite (see :mod:`signgd_lab.conversion.passes.scaling`), not only
ReLU's. ``if`` is the paper recipe with max-pooling written as max(a, b) = a + ReLU(b - a), so
IF neurons can pool.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Recipe:
    """What the conversion passes do.

    Attributes:
        name: preset name.
        gelu: ``paper`` (every GELU becomes the sigmoid-approximation neuron) or ``match``
            (erf GELU -> ``gelu_erf``, approximate='tanh' -> ``gelu_tanh``).
        leaky_slope: ``paper`` (slope 0.1 whatever the module says) or ``module``.
        scaled_targets: neuron targets normalised by calibrated elementwise maxima
            (x / m -> g -> * m). Paper: ReLU only.
        maxpool_padding: the padding around max-pool windows: a value (reference: -200) or
            ``"replicate"`` (copies of the edge values: exact, since every window that holds a
            padded cell also holds the edge cell it copies, and it keeps the pool's inputs in
            the range of the data instead of 200 below it).
        softmax: ``paper`` (exp, sum, div; no max-subtraction, as the reference) or
            ``max_subtract`` (subtract the row maximum from a tree of max neurons first: exact,
            since any error of the estimated maximum is common to the row and cancels).
        maxpool_neuron: ``max`` (pairwise max neurons, reference) or ``relu``
            (max(a, b) = a + ReLU(b - a), so ReLU-only dynamics such as IF can pool).
        calibration_floor: calibrated maxima <= this are set to 1 (reference: 1e-5).
        offset_sum: how the correction offset A(1) + A(0) is rounded: ``reference``
            ((A(1) - A(0)) + 2 A(0), the reference's order, which brings paper mode measurably
            closer to it) or ``direct`` (A(1) + A(0), one rounding).
    """

    name: str = "paper"
    gelu: str = "paper"
    leaky_slope: str = "paper"
    scaled_targets: tuple[str, ...] = ("relu",)
    maxpool_padding: float | str = -200.0
    maxpool_neuron: str = "max"
    softmax: str = "paper"
    calibration_floor: float = 1e-5
    offset_sum: str = "reference"

    def __post_init__(self) -> None:
        if self.gelu not in ("paper", "match"):
            raise ValueError(f"Recipe.gelu must be 'paper' or 'match', got {self.gelu!r}")
        if self.softmax not in ("paper", "max_subtract"):
            raise ValueError(f"Recipe.softmax must be 'paper' or 'max_subtract', got {self.softmax!r}")
        if self.maxpool_neuron not in ("max", "relu"):
            raise ValueError(f"Recipe.maxpool_neuron must be 'max' or 'relu', got {self.maxpool_neuron!r}")
        if isinstance(self.maxpool_padding, str) and self.maxpool_padding != "replicate":
            raise ValueError(f"Recipe.maxpool_padding must be a number or 'replicate', "
                             f"got {self.maxpool_padding!r}")
        if self.offset_sum not in ("reference", "direct"):
            raise ValueError(f"Recipe.offset_sum must be 'reference' or 'direct', "
                             f"got {self.offset_sum!r}")
        if self.leaky_slope not in ("paper", "module"):
            raise ValueError(f"Recipe.leaky_slope must be 'paper' or 'module', got {self.leaky_slope!r}")


RECIPES = {
    "paper": Recipe(),
    "if": Recipe(name="if", maxpool_neuron="relu", maxpool_padding="replicate"),
    "extended": Recipe(name="extended", gelu="match", leaky_slope="module",
                       softmax="max_subtract", offset_sum="direct", maxpool_padding="replicate",
                       scaled_targets=("relu", "leaky_relu", "abs", "max", "square", "div",
                                       "rsqrt_div", "mul", "gelu", "gelu_erf", "gelu_tanh",
                                       "silu", "sigmoid", "tanh", "softplus", "log")),
}


def get_recipe(recipe: str | Recipe) -> Recipe:
    """A preset by name (``paper``, ``extended``) or a :class:`Recipe` unchanged."""
    if isinstance(recipe, Recipe):
        return recipe
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; choose one of {', '.join(RECIPES)} or pass a Recipe")
    return RECIPES[recipe]


def list_recipes() -> list[str]:
    """Names of the recipe presets."""
    return list(RECIPES)
