"""Fidelity of paper mode: our outputs against the official implementation's, on the four
digits models whose reference outputs are stored in tests/data/reference (360 test images,
T = 8 .. 256). Writes the "Fidelity" section of benchmarks/RESULTS.md and prints the table.

    python benchmarks/parity.py
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from common import write_section  # noqa: E402
from reference_parity import MODELS, RELU_MODELS, compare  # noqa: E402


def table() -> str:
    """The fidelity table: per model, dynamics and T, the mean relative difference and both
    correct counts (ours / the reference's, of 360)."""
    rows = ["| model | mode | " + " | ".join(f"T={t}" for t in (8, 16, 32, 64, 128, 256)) + " |",
            "|---|---|" + "---|" * 6]
    for mode, names in (("paper", MODELS), ("if", RELU_MODELS)):
        for name in names:
            p = compare(name, mode)
            cells = [f"{d:.1e} ({a}/{b})" for d, a, b in
                     zip(p.mean_difference, p.correct_ours, p.correct_ref)]
            rows.append(f"| {name} | {mode} | " + " | ".join(cells) + " |")
            print(rows[-1], flush=True)
    return "\n".join(rows)


def main() -> None:
    torch.set_num_threads(1)
    body = (
        "Paper mode (and IF mode on the ReLU CNNs) against the official implementation's stored "
        "outputs: mean over the 360 test images of ||ours - reference|| / ||ANN||, and in "
        "brackets the correct predictions of ours / of the reference. The test "
        "(`tests/test_reference_parity.py`) requires <= 2e-3 and counts within one image. IF "
        "mode on `digits_cnn` (max-pooling) differs by design: the reference's IF mode takes the "
        "maximum of spike trains, ours pools with IF neurons and converges to the ANN (see "
        "docs/theory.md).\n\n" + table())
    write_section("Fidelity: paper mode against the reference implementation", body,
                  "python benchmarks/parity.py")


if __name__ == "__main__":
    main()
