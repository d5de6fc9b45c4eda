"""Which timm families convert (random seeded weights, extended dynamics), with the relative
logit error of the SNN against the ANN at T = 8 / 32 / 128, or what the refusal names.

    python benchmarks/timm_families.py [--px 32] [--batch 2] [names ...]

Prints one markdown row per model (the table in benchmarks/RESULTS.md and the README).
"""
from __future__ import annotations

import argparse
import time

import torch

import signgd_lab as sl

#: model -> timm kwargs for small inputs (swin: 2-token windows so every stage tiles)
FAMILIES = {
    "resnet18": {}, "efficientnet_b0": {}, "mobilenetv3_small_100": {}, "convnext_atto": {},
    "poolformer_s12": {}, "mixer_s16_224": {"img_size": None}, "resmlp_12_224": {"img_size": None},
    "gmlp_ti16_224": {"img_size": None}, "vit_tiny_patch16_224": {"img_size": None},
    "deit_tiny_patch16_224": {"img_size": None}, "levit_128s": {"img_size": None},
    "swin_tiny_patch4_window7_224": {"img_size": None, "window_size": 2},
}
TIMESTAMPS = (8, 32, 128)


def build(name: str, px: int) -> torch.nn.Module:
    """The seeded random-weight model for ``px`` x ``px`` inputs."""
    import timm

    kwargs = {k: (px if v is None else v) for k, v in FAMILIES[name].items()}
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, **kwargs).eval()
    head = model.get_classifier()
    if isinstance(head, torch.nn.Linear) and not head.weight.any():
        # timm zero-initialises some heads (MLP-Mixer, ResMLP, gMLP): all logits would be the
        # bias and the relative error 0 / 0; a seeded random head makes the logits informative
        torch.nn.init.normal_(head.weight, std=head.in_features ** -0.5)
    return model


def measure(name: str, px: int = 32, batch: int = 2, calibration: int = 8) -> dict:
    """Convert ``name`` and return its errors at :data:`TIMESTAMPS` (or the refusal)."""
    model = build(name, px)
    torch.manual_seed(1)
    x = torch.randn(calibration, 3, px, px)
    start = time.perf_counter()
    try:
        snn = sl.convert(model, x, dynamics="extended")
    except sl.ConversionError as exc:
        return dict(name=name, refused=str(exc))
    convert_s = time.perf_counter() - start
    with torch.no_grad():
        ref = model(x[:batch])
    start = time.perf_counter()
    out = snn(x[:batch], list(TIMESTAMPS))
    errors = [((y - ref).norm() / ref.norm()).item() for y in out]
    return dict(name=name, errors=errors, neurons=len(snn.neurons), convert_s=convert_s,
                simulate_s=time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=list(FAMILIES))
    parser.add_argument("--px", type=int, default=32)
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| model | converts | rel. error T=8 / 32 / 128 | neuron populations | convert s | simulate s |")
    print("|---|---|---|---|---|---|")
    for name in args.names:
        r = measure(name, args.px, args.batch)
        if "refused" in r:
            print(f"| {name} | refused | {r['refused'].splitlines()[0]} | | | |", flush=True)
            continue
        errs = " / ".join(f"{e:.3g}" for e in r["errors"])
        print(f"| {name} | yes | {errs} | {r['neurons']} | {r['convert_s']:.1f} | "
              f"{r['simulate_s']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
