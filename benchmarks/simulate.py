"""Simulation speed and memory: SNN wall time for T steps divided by T x the ANN forward time
(timed alternately in the same run, median of 5), peak memory, conversion time, and growth with
T, batch and width. Writes benchmarks/RESULTS.md.

    python benchmarks/simulate.py [--device cpu|cuda] [--repeats 5] [--quick]
    python benchmarks/simulate.py --attention-memory # product neurons against a naive layout
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from common import write_section  # noqa: E402

import signgd_lab as sl  # noqa: E402

T = 128


def cifar_cnn() -> nn.Module:
    """A CIFAR-shaped CNN (3x32x32), random weights: conv-BN-ReLU-maxpool x3, two linears."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1), nn.BatchNorm2d(128), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(128 * 16, 256), nn.ReLU(), nn.Linear(256, 10)).eval()


def wide_mlp(width: int) -> nn.Module:
    """A GELU / LayerNorm MLP of the given width on 8x8 inputs (random weights)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.GELU(), nn.LayerNorm(width),
                         nn.Linear(width, 10)).eval()


def build(name: str, batch: int | None, device: str):
    """(model, calibration, input) for a benchmark case."""
    if name.startswith("digits_"):
        model, (x_tr, _), (x_te, _) = sl.zoo.load(name)
        x = x_te[:batch or 64]
        return model.to(device), x_tr[:256].to(device), x.to(device)
    if name == "cifar_cnn":
        torch.manual_seed(1)
        data = torch.rand(256, 3, 32, 32)
        return cifar_cnn().to(device), data.to(device), data[:batch or 64].to(device)
    if name.startswith("mlp_w"):
        torch.manual_seed(1)
        data = torch.rand(256, 1, 8, 8)
        return wide_mlp(int(name[5:])).to(device), data.to(device), data[:batch or 64].to(device)
    import timm

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).eval().to(device)
    data = torch.randn(batch or 2, 3, 224, 224, device=device)
    return model, data, data


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def seconds(fn, reps: int, device: str = "cpu") -> float:
    """Mean wall time of ``reps`` calls of ``fn`` (device work included)."""
    sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    sync(device)
    return (time.perf_counter() - t) / reps


def timing(name: str, batch: int | None, steps: int, repeats: int, device: str) -> dict:
    """ANN and SNN (multistep, stepwise) times measured alternately; conversion time."""
    model, calib, x = build(name, batch, device)
    t0 = time.perf_counter()
    snn = sl.convert(model, calib)
    convert_s = time.perf_counter() - t0
    runs = {"ann": lambda: model(x), "multistep": lambda: snn(x, [steps]),
            "stepwise": lambda: snn(x, [steps], mode="stepwise")}
    times: dict[str, list[float]] = {k: [] for k in runs}
    with torch.no_grad():
        for fn in runs.values():  # warm-up (kernel compilation, caches)
            fn()
        for _ in range(repeats):
            for key, fn in runs.items():
                times[key].append(seconds(fn, 10 if key == "ann" else 1, device))
    ann = statistics.median(times["ann"])
    return {"name": name, "batch": x.shape[0], "T": steps, "ann_ms": ann * 1e3,
            "block": snn.block_steps(x.shape[1:], x.shape[0], steps),
            "convert_s": convert_s,
            "multistep_ratio": statistics.median(times["multistep"]) / (steps * ann),
            "stepwise_ratio": statistics.median(times["stepwise"]) / (steps * ann),
            "multistep_s": statistics.median(times["multistep"])}


def peak_memory(name: str, batch: int | None, steps: int, mode: str, device: str) -> float:
    """Extra peak resident memory (MB) of one SNN run over the ANN run, in a fresh process."""
    code = f"""
import json, sys, torch
sys.path.insert(0, {str(Path(__file__).parent)!r})
import simulate
model, calib, x = simulate.build({name!r}, {batch!r}, {device!r})
snn = simulate.sl.convert(model, calib)
with torch.no_grad():
    model(x)
    snn(x[:1], [2], mode={mode!r})
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1])  # kB
if {device!r} == "cuda":
    torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()
else:
    open("/proc/self/clear_refs", "w").write("5")  # reset the peak resident size (VmHWM)
    base = status("VmRSS:")
with torch.no_grad():
    snn(x, [{steps}], mode={mode!r})
if {device!r} == "cuda":
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20
else:
    peak = (status("VmHWM:") - base) / 1024
print(json.dumps(peak))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return float(out.stdout.strip().splitlines()[-1])


_PRODUCT_RUN = """
import json, sys, torch
sys.path.insert(0, {here!r})
from common import peak_rss_mb
from signgd_lab.dynamics import NeuronState, get_target
from signgd_lab.dynamics.neurons import Drive, ProductSumNeurons
B, H, N, K, M, T = 16, 2, 32, 32, 32, 8
g = torch.Generator().manual_seed(0)
a0, b0 = torch.rand(B, H, N, K, generator=g), torch.rand(B, H, K, M, generator=g)
da = Drive(torch.rand(T, B, H, N, K, generator=g), torch.rand(1, H, N, K, generator=g))
db = Drive(torch.rand(T, B, H, K, M, generator=g), torch.rand(1, H, K, M, generator=g))
etas = torch.full((T,), 0.01)

def ours():
    state = NeuronState((a0.clone(), b0.clone()), torch.zeros(B, H, N, K, M))
    return ProductSumNeurons(get_target("mul")).run(state, (da, db), etas)

def naive():  # every product neuron's estimates, target, spike and membrane at full size
    a, b, v, out = a0.clone(), b0.clone(), torch.zeros(B, H, N, K, M), []
    for k in range(T):
        a = a - etas[k] * (2 * da.current[k] - da.offset)
        b = b - etas[k] * (2 * db.current[k] - db.offset)
        a_full = a.unsqueeze(-1).expand(B, H, N, K, M).contiguous()
        b_full = b.unsqueeze(-3).expand(B, H, N, K, M).contiguous()
        target = a_full * b_full
        s = (v >= target).to(v.dtype)
        v = v - etas[k] * (2 * s - 1)
        out.append(s.sum(-2))
    return torch.stack(out)

fn = {{"ours": ours, "naive": naive}}[{which!r}]
fn()  # warm-up: kernel loading and allocator caches are not part of the layout
print(json.dumps(peak_rss_mb(fn)))
"""


def attention_memory() -> str:
    """Peak memory of one attention product-neuron population: ours against a naive layout."""
    peaks = {}
    for which in ("ours", "naive"):
        code = _PRODUCT_RUN.format(here=str(Path(__file__).parent), which=which)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=600)
        if out.returncode != 0:
            raise RuntimeError(out.stderr[-2000:])
        peaks[which] = float(out.stdout.strip().splitlines()[-1])
    membranes = 16 * 2 * 32 * 32 * 32 * 4 / 2**20
    return (f"Attention product neurons (one q k^T population: B x H x N x K x M = 16 x 2 x 32 x 32 "
            f"x 32, a block of 8 steps, fresh process each, after one warm-up run): peak memory "
            f"{peaks['ours']:.1f} MB with "
            f"ProductSumNeurons against {peaks['naive']:.1f} MB for a naive layout that holds "
            f"estimates, targets and spikes of every product neuron at full size: "
            f"{peaks['ours'] / peaks['naive']:.2f} of naive. The membranes themselves are "
            f"{membranes:.1f} MB; targets and spikes are computed row by row inside the kernel, "
            "so besides the membranes only the block's (N, K), (K, M) estimates and (N, M) "
            "spike counts are held.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true",
                        help="small models only, 3 repeats, no growth table")
    parser.add_argument("--attention-memory", action="store_true",
                        help="only measure product-neuron memory against the naive layout")
    args = parser.parse_args()
    if args.attention_memory:
        write_section("Attention product-neuron memory", attention_memory(),
                      "python benchmarks/simulate.py --attention-memory")
        return
    torch.set_num_threads(torch.get_num_threads())
    cases = [("digits_cnn", 64), ("cifar_cnn", 64), ("digits_mlp", 64), ("digits_attention", 64)]
    if not args.quick:
        cases += [("convnext_atto", 2), ("mixer_s16_224", 2), ("resmlp_12_224", 2)]
    repeats = 3 if args.quick else args.repeats
    rows = []
    for name, batch in cases:
        r = timing(name, batch, T, repeats if batch != 2 else max(3, repeats - 2), args.device)
        r["mem_multistep"] = peak_memory(name, batch, T, "multistep", args.device)
        r["mem_stepwise"] = peak_memory(name, batch, T, "stepwise", args.device)
        rows.append(r)
        print(json.dumps(r), flush=True)
    table = ("| model | batch | ANN forward (ms) | conversion (s) | block (steps) | multistep ratio | "
             "stepwise ratio | peak MB multistep | peak MB stepwise |\n"
             "|---|---|---|---|---|---|---|---|---|\n" + "\n".join(
                 f"| {r['name']} | {r['batch']} | {r['ann_ms']:.2f} | {r['convert_s']:.2f} | {r['block']} | "
                 f"{r['multistep_ratio']:.2f} | {r['stepwise_ratio']:.2f} | {r['mem_multistep']:.0f} | "
                 f"{r['mem_stepwise']:.0f} |" for r in rows))
    growth = []
    cases = () if args.quick else (  # --quick (the GPU script's budget): no growth table
        *((f"T={t}", "digits_cnn, batch 64", "digits_cnn", 64, t) for t in (32, 64, 128, 256)),
        *((f"batch={b}", "digits_cnn, T=128", "digits_cnn", b, T) for b in (16, 64, 256)),
        *((f"width={w}", "GELU/LayerNorm MLP, batch 64, T=128", f"mlp_w{w}", 64, T)
          for w in (64, 256, 1024)))
    for label, case, name, batch, steps in cases:
        r = timing(name, batch, steps, 3, args.device)
        mem = peak_memory(name, batch, steps, "multistep", args.device)
        growth.append(f"| {label} | {case} | {r['multistep_s'] * 1e3:.0f} ms | "
                      f"{r['multistep_ratio']:.2f} | {mem:.0f} |")
    body = (
        "Ratio = SNN wall time for T=128 steps / (128 x ANN forward time), ANN and SNN timed "
        f"alternately in the same process, median of {repeats} (timm models: fewer). Peak MB = "
        "extra resident memory of one SNN run over what the process held before it (CPU: peak "
        "VmHWM after resetting it via /proc/self/clear_refs; CUDA: max allocated), each measured "
        "in a fresh process after a 2-step warm-up run. Multistep and stepwise give the same outputs "
        "(tests/test_convert.py).\n\n" + table

        + ("\n\nGrowth (multistep wall time, ratio to the ANN at the same size, peak MB as "
           "above):\n\n| varied | case | SNN time | ratio | peak MB |\n|---|---|---|---|---|\n"
           + "\n".join(growth) if growth else ""))
    write_section(f"Simulation speed ({args.device})", body,
                  f"python benchmarks/simulate.py --device {args.device}" + (" --quick" if args.quick else ""))


if __name__ == "__main__":
    main()
