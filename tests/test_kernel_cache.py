"""The population kernels are loaded from numba's on-disk cache by a later process: a fresh
interpreter that converts and simulates with a cache written by an earlier one compiles nothing."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from signgd_lab.dynamics import kernels

pytestmark = pytest.mark.skipif(not kernels.ENABLED, reason="numba kernels unavailable or disabled")

# converts a tiny model with the paper's dynamics (relu, a max-pooling chain, gelu, LayerNorm's
# row-broadcast division: every kind of kernel closure) and simulates it for a few steps; prints
# the numba compilations (functions compiled in this process) and the outputs
SCRIPT = """
import json
from numba.core import event
compiled = []
class Count(event.Listener):
    def on_start(self, ev):
        compiled.append(ev.data["dispatcher"].py_func.__qualname__)
    def on_end(self, ev):
        pass
event.register("numba:compile", Count())
import torch
from torch import nn
import signgd_lab as sl
torch.set_num_threads(1)
torch.manual_seed(0)
model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                      nn.Linear(64, 16), nn.GELU(), nn.LayerNorm(16), nn.Linear(16, 3)).eval()
x = torch.rand(4, 1, 8, 8)
with torch.no_grad():
    outputs = sl.convert(model, x, dynamics="paper")(x, timestamps=[8]).tolist()
print(json.dumps({"compiled": compiled, "outputs": outputs}))
"""


def fresh_process(cache: Path) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
    env.pop("SIGNGD_LAB_NO_KERNELS", None)
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_second_process_compiles_nothing(tmp_path):
    first = fresh_process(tmp_path)
    kernel_names = [n for n in first["compiled"] if n.endswith("<locals>.kernel")]
    assert kernel_names, f"the first process compiled no population kernel: {first['compiled']}"
    files = sorted(p.name for p in tmp_path.rglob("*.nbi"))
    second = fresh_process(tmp_path)
    assert second["compiled"] == [], f"recompiled in a second process: {second['compiled']}"
    assert second["outputs"] == first["outputs"]
    assert sorted(p.name for p in tmp_path.rglob("*.nbi")) == files  # no new index per process
