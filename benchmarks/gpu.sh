#!/usr/bin/env bash
# One prepared GPU check for a session that has the device machine (budget: ~5 minutes).
# Usage (from the repository root, on the GPU machine):  bash benchmarks/gpu.sh
# It creates a venv if needed, checks CUDA results against CPU, times the SNN on CUDA, and
# writes everything under $OUT (or ./gpu-results) for benchmarks/RESULTS.md.
set -euo pipefail
OUT="${OUT:-gpu-results}"
mkdir -p "$OUT"
PY=python3
if [ ! -x .venv/bin/python ]; then
    $PY -m venv .venv && .venv/bin/pip install -q -e '.[dev]'
fi
PY=.venv/bin/python
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1 || true
# 1. CUDA agrees with CPU (neurons and a converted network)
timeout 120 $PY -m pytest -q tests/test_neurons.py -k cuda 2>&1 | tail -3 > "$OUT/pytest_cuda.txt" || true
timeout 120 $PY - > "$OUT/cuda_vs_cpu.json" 2>&1 <<'PYEOF' || true
import json, torch, signgd_lab as sl
model, (x_tr, _), (x_te, y_te) = sl.zoo.load("digits_cnn")
snn = sl.convert(model, x_tr[:256])
cpu = snn(x_te[:128], [16, 64])
snn_gpu = sl.convert(model.cuda(), x_tr[:256].cuda())
gpu = snn_gpu(x_te[:128].cuda(), [16, 64]).cpu()
print(json.dumps({"max_abs_diff": (cpu - gpu).abs().max().item(),
                  "acc_cpu_T64": (cpu[1].argmax(-1) == y_te[:128]).float().mean().item(),
                  "acc_gpu_T64": (gpu[1].argmax(-1) == y_te[:128]).float().mean().item()}))
PYEOF
# 2. speed on CUDA (small models; the full list takes longer than this budget)
timeout 200 $PY benchmarks/simulate.py --device cuda --quick > "$OUT/simulate_cuda.log" 2>&1 || true
cp benchmarks/RESULTS.md "$OUT/RESULTS.md" 2>/dev/null || true
echo "done: $OUT"
