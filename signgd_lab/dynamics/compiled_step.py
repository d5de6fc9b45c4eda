"""The membrane step as one compiled GPU kernel (torch.compile), for populations off the CPU.

On CPU the fused numba kernels of :mod:`.kernels` run whole blocks; on CUDA the signGD neuron
runs its membrane recursion step by step, and each step

    s_k = 1[v_{k-1} >= g_k]  (or '>')        v_k = v_{k-1} - eta_k (2 s_k - 1)

is one compiled kernel instead of four elementwise launches.
"""
from __future__ import annotations

import torch


def membrane_step(v: torch.Tensor, g: torch.Tensor, eta: torch.Tensor, tie: bool
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """One membrane step as plain torch ops: (v_k, s_k) from v_{k-1}, the target g_k and eta_k
    (``tie``: a tie fires)."""
    fire = v >= g if tie else v > g
    s = fire.to(v.dtype)
    return v - eta * (2.0 * s - 1.0), s


_compiled_step = None


def fused_step(v: torch.Tensor, g: torch.Tensor, eta: torch.Tensor, tie: bool
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`membrane_step` compiled with torch.compile (compiled on the first call; falls
    back to the plain ops where no compiler backend is available)."""
    global _compiled_step
    if _compiled_step is None:
        try:
            _compiled_step = torch.compile(membrane_step, dynamic=True)
        except Exception:  # pragma: no cover - no compiler backend
            _compiled_step = membrane_step
    return _compiled_step(v, g, eta, tie)
