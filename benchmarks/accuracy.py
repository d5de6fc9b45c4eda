"""Accuracy and relative logit error against T for every zoo model: paper vs IF vs extended
vs ANN, plus where paper mode cannot reach a target's range. Writes benchmarks/RESULTS.md.

    python benchmarks/accuracy.py [--samples 450]
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import write_section  # noqa: E402

import signgd_lab as sl  # noqa: E402
from signgd_lab.probes import ann_activations  # noqa: E402

TS = [8, 16, 32, 64, 128, 256]
MODES = ["paper", "if", "extended"]


def out_of_range(snn: sl.SpikingNetwork, x: torch.Tensor) -> dict[str, float]:
    """Share of each neuron role's ANN targets beyond the output bound sum(eta) (product
    neurons: share of products a_nk b_km beyond it)."""
    bound = snn.dynamics.output_bound
    counts: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for name, (inputs, out) in ann_activations(snn, x).items():
        module = snn.neurons[name]
        if isinstance(module, sl.conversion.MatmulNeuronOp):
            a, b = inputs
            values = (a.unsqueeze(-1) * b.unsqueeze(-3)).abs()
        else:
            values = out.abs()
        counts[module.role][0] += float((values > bound).sum())
        counts[module.role][1] += values.numel()
    return {role: hit / total for role, (hit, total) in counts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=450, help="test images (450 = all)")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    acc_rows, err_rows, range_rows = [], [], []
    for name in sl.zoo.list_models():
        model, (x_tr, _), (x_te, y_te) = sl.zoo.load(name)
        x, y = x_te[:args.samples], y_te[:args.samples]
        with torch.no_grad():
            ref = model(x)
        ann_acc = (ref.argmax(-1) == y).float().mean().item()
        for mode in MODES:
            try:
                snn = sl.convert(model, x_tr[:256], dynamics=mode)
            except sl.ConversionError as err:
                why = str(err).splitlines()[1].strip(" -")[:70] if "\n" in str(err) else str(err)
                acc_rows.append(f"| {name} | {mode} | {ann_acc:.3f} | " + " | ".join("n/a" for _ in TS)
                                + f" | not convertible: IF neurons only do ReLU ({why}...) |")
                continue
            out = snn(x, TS)
            accs = [(o.argmax(-1) == y).float().mean().item() for o in out]
            errs = [((o - ref).norm() / ref.norm()).item() for o in out]
            acc_rows.append(f"| {name} | {mode} | {ann_acc:.3f} | " + " | ".join(f"{a:.3f}" for a in accs) + " | |")
            err_rows.append(f"| {name} | {mode} | " + " | ".join(f"{e:.4f}" for e in errs) + " |")
            if mode != "if":
                shares = out_of_range(snn, x[:64])
                worst = sorted(shares.items(), key=lambda kv: -kv[1])[:3]
                range_rows.append(f"| {name} | {mode} | " + ", ".join(
                    f"{role} {100 * s:.2g}%" for role, s in worst if s > 0) + " |")
            print(name, mode, [round(a, 3) for a in accs], flush=True)
    head = " | ".join(f"T={t}" for t in TS)
    body = (
        f"Test accuracy ({args.samples} digits test images) against T; the ANN column is the "
        "model itself.\n\n"
        f"| model | mode | ANN | {head} | note |\n|---|---|---|" + "---|" * len(TS) + "---|\n"
        + "\n".join(acc_rows)
        + "\n\nRelative logit error ||SNN - ANN|| / ||ANN|| against T:\n\n"
        f"| model | mode | {head} |\n|---|---|" + "---|" * len(TS) + "\n" + "\n".join(err_rows)
        + "\n\nWhy paper mode stalls: share of ANN targets beyond the signGD output bound "
        "sum(eta) = 3.0 (64 test images), for the three worst neuron roles. A target beyond the "
        "bound can never be reached: the neuron saturates at 3.0 (docs/theory.md, sections 2 "
        "and 7). The paper recipe normalises ReLU only and leaves max-pooling, LayerNorm's "
        "square and normalisation, softmax's exp and the attention products at raw scale; it "
        "also feeds the input through the float encoder (gain 0.956 at most). The extended "
        "recipe normalises every neuron exactly and subtracts the row maximum before exp.\n\n"
        "| model | mode | roles with out-of-range targets |\n|---|---|---|\n" + "\n".join(range_rows))
    write_section("Accuracy against time-steps", body, "python benchmarks/accuracy.py")


if __name__ == "__main__":
    main()
