"""Paper-mode parity with the official implementation, on the data in ``tests/data/reference``.

Where the data comes from: the official implementation of Oh & Lee (ICML 2024), package
``snn_signgd`` at commit 22b6818, run unmodified on CPU with torch 2.13 by the team's harness, on
four digits models trained with a fixed seed. For each model and dynamics (``signgd`` = paper
mode, ``subgradient`` = IF mode) ``<model>_<dynamics>.pt`` holds ``timestamps`` (1, 2, 4, ...,
256), ``ann`` (360, 10) logits, ``snn`` (9, 360, 10) decoded outputs at each T from one run and
``y`` labels; ``<model>_weights.pt`` are the models' state dicts and ``digits_split.json`` the
train/test split (indices into scikit-learn's digits). Calibration: the first 384 training
samples in order.

The architectures below are written from the models' description (their state-dict keys must
match); :func:`compare` converts one with signgd_lab and measures the difference.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

DATA = Path(__file__).parent / "data" / "reference"
MODELS = ("digits_cnn", "digits_cnn_avg", "digits_mlp", "digits_attn")
RELU_MODELS = ("digits_cnn", "digits_cnn_avg")
DYNAMICS_FILE = {"paper": "signgd", "if": "subgradient"}
CALIBRATION_SAMPLES = 384


class _DigitsCNN(nn.Module):
    """(B, 1, 8, 8) -> (B, 10): [conv3x3 (no bias), BN, ReLU] x 2, 2x2 pool, Linear, ReLU, Linear."""

    def __init__(self, pool: str) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.conv2, self.bn2 = nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32)
        self.act1, self.act2, self.act3 = nn.ReLU(), nn.ReLU(), nn.ReLU()
        self.pool = nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2)
        self.fc1, self.fc2 = nn.Linear(32 * 4 * 4, 64), nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act2(self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x))))))  # (B, 32, 8, 8)
        x = torch.flatten(self.pool(x), 1)  # (B, 512)
        return self.fc2(self.act3(self.fc1(x)))


class _DigitsMLP(nn.Module):
    """Linear 64->128, LayerNorm, GELU, Linear, LeakyReLU(0.1), Linear -> 10."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.ln1, self.act1 = nn.Linear(64, 128), nn.LayerNorm(128), nn.GELU()
        self.fc2, self.act2, self.fc3 = nn.Linear(128, 128), nn.LeakyReLU(0.1), nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.ln1(self.fc1(torch.flatten(x, 1))))
        return self.fc3(self.act2(self.fc2(x)))


class _DigitsAttention(nn.Module):
    """Image rows as 8 tokens -> Linear 8->32 + position -> MultiheadAttention (4 heads,
    need_weights=False) -> residual LayerNorm -> token mean -> Linear, ReLU, Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(8, 32)
        self.pos = nn.Parameter(torch.zeros(1, 8, 32))
        self.attn = nn.MultiheadAttention(32, 4, batch_first=True)
        self.ln = nn.LayerNorm(32)
        self.fc1, self.act, self.fc2 = nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x.reshape(x.shape[0], 8, 8)) + self.pos  # (B, 8 tokens, 32)
        a, _ = self.attn(t, t, t, need_weights=False)
        t = self.ln(t + a)
        return self.fc2(self.act(self.fc1(t.mean(1))))


def load_model(name: str) -> nn.Module:
    """The reference's trained model ``name`` (eval mode)."""
    model = {"digits_cnn": lambda: _DigitsCNN("max"), "digits_cnn_avg": lambda: _DigitsCNN("avg"),
             "digits_mlp": _DigitsMLP, "digits_attn": _DigitsAttention}[name]()
    model.load_state_dict(torch.load(DATA / f"{name}_weights.pt", weights_only=True))
    return model.eval()


def digits_split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train, y_train, x_test, y_test) of the reference's split; x = images / 16, (N, 1, 8, 8)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    split = json.loads((DATA / "digits_split.json").read_text())
    train, test = torch.tensor(split["train_idx"]), torch.tensor(split["test_idx"])
    return x[train], y[train], x[test], y[test]


def reference_outputs(name: str, dynamics: str) -> dict:
    """The stored reference run of model ``name`` in ``paper`` or ``if`` mode."""
    return torch.load(DATA / f"{name}_{DYNAMICS_FILE[dynamics]}.pt", weights_only=True)


@dataclass
class Parity:
    """How far our outputs are from the reference's, per T (T >= ``min_T``).

    Attributes:
        timestamps: the T values compared.
        mean_difference: mean over samples of ||ours - ref|| / ||ann||, per T.
        correct_ours, correct_ref: correct test predictions per T.
        ann_gap: max |our ANN logits - the reference's ANN logits|.
    """

    timestamps: list[int]
    mean_difference: list[float]
    correct_ours: list[int]
    correct_ref: list[int]
    ann_gap: float


def compare(name: str, dynamics: str, min_T: int = 8, recipe: object = None) -> Parity:
    """Convert model ``name`` with ``dynamics`` (``paper`` / ``if``; ``recipe``: the preset's
    unless given) as the reference did and compare the outputs at every stored T >= ``min_T``."""
    import signgd_lab as sl

    model = load_model(name)
    x_train, _, x_test, y_test = digits_split()
    ref = reference_outputs(name, dynamics)
    ts = [t for t in ref["timestamps"] if t >= min_T]
    rows = [ref["timestamps"].index(t) for t in ts]
    snn = sl.convert(model, x_train[:CALIBRATION_SAMPLES], dynamics=dynamics, recipe=recipe)
    with torch.no_grad():
        ann = model(x_test)
        ours = snn(x_test, ts)  # (len(ts), 360, 10)
    theirs = ref["snn"][rows]
    norms = ref["ann"].norm(dim=1)
    diff = ((ours - theirs).norm(dim=2) / norms).mean(1)
    return Parity(ts, diff.tolist(),
                  (ours.argmax(2) == y_test).sum(1).tolist(),
                  (theirs.argmax(2) == ref["y"]).sum(1).tolist(),
                  float((ann - ref["ann"]).abs().max()))
