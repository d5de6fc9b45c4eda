"""Fused CPU kernels for the signGD recurrences (numba), with the plain torch loop as fallback.

The only sequential part of a signGD population is the membrane recursion

    s_k = 1[v_{k-1} >= g_k]   (or '>')        v_k = v_{k-1} - eta_k (2 s_k - 1)

once the targets g_k of a block of steps are known. These kernels run it for every neuron with v
in a register, writing the spikes; they compute v_k as v - eta or v + eta, which is bit for bit
the value of the formula above, so fused and plain paths agree exactly (tested).
``ENABLED`` turns them off (then everything runs as torch ops).
"""
from __future__ import annotations

import os

import torch

try:  # numba is a dependency; the torch path still works where it cannot be imported
    import numpy as np
    from numba import njit, prange
except ImportError:  # pragma: no cover
    njit = None

ENABLED = njit is not None and os.environ.get("SIGNGD_LAB_NO_KERNELS", "") in ("", "0")
_CHUNK = 2048

if njit is not None:
    @njit(parallel=True, cache=True, boundscheck=False)
    def _sign_steps(v, g, etas, tie, spikes):  # pragma: no cover - compiled
        n = v.shape[0]
        steps = g.shape[0]
        chunks = (n + _CHUNK - 1) // _CHUNK
        for c in prange(chunks):
            lo = c * _CHUNK
            hi = min(n, lo + _CHUNK)
            for k in range(steps):
                e = etas[k]
                for i in range(lo, hi):
                    x = v[i]
                    fire = x >= g[k, i] if tie else x > g[k, i]
                    if fire:
                        v[i] = x - e
                        spikes[k, i] = 1.0
                    else:
                        v[i] = x + e
                        spikes[k, i] = 0.0

    @njit(parallel=True, cache=True, boundscheck=False)
    def _product_steps(v, a, b, etas, tie, counts):  # pragma: no cover - compiled
        # v (P, N, K, M); a (T, P, N, K); b (T, P, K, M); counts (T, P, N, M)
        p_dim, n_dim, k_dim, m_dim = v.shape
        steps = a.shape[0]
        for row in prange(p_dim * n_dim):
            p = row // n_dim
            n = row % n_dim
            acc = np.zeros(m_dim, dtype=counts.dtype)
            for t in range(steps):
                e = etas[t]
                acc[:] = 0
                for kk in range(k_dim):
                    x_a = a[t, p, n, kk]
                    for m in range(m_dim):
                        x = v[p, n, kk, m]
                        g = x_a * b[t, p, kk, m]
                        fire = x >= g if tie else x > g
                        v[p, n, kk, m] = x - e if fire else x + e
                        acc[m] += 1 if fire else 0
                for m in range(m_dim):
                    counts[t, p, n, m] = acc[m]

    @njit(parallel=True, cache=True, boundscheck=False)
    def _estimates(two, cur, off, x, out, etas):  # pragma: no cover - compiled
        # x_hat_k = x_hat_{k-1} - eta_k (2 I_k - offset): cur / out (T, B, S), off (S,), x (B, S)
        steps, batch, size = cur.shape
        for bi in prange(batch):
            for k in range(steps):
                e = etas[k]
                for j in range(size):
                    a = x[bi, j] - e * (two * cur[k, bi, j] - off[j])
                    x[bi, j] = a
                    out[k, bi, j] = a

    @njit(parallel=True, cache=True, boundscheck=False)
    def _ratio_steps(v, c, a, etas, tie, spikes):  # pragma: no cover - compiled
        # fire when c * v > a (x1 / sqrt(x2) neurons: c = sqrt(x2_hat), a = x1_hat); (T, n)
        n = v.shape[0]
        steps = c.shape[0]
        chunks = (n + _CHUNK - 1) // _CHUNK
        for ch in prange(chunks):
            lo = ch * _CHUNK
            hi = min(n, lo + _CHUNK)
            for k in range(steps):
                e = etas[k]
                for i in range(lo, hi):
                    x = v[i]
                    lhs = c[k, i] * x
                    fire = lhs >= a[k, i] if tie else lhs > a[k, i]
                    v[i] = x - e if fire else x + e
                    spikes[k, i] = 1.0 if fire else 0.0


if njit is not None:
    @njit(parallel=True, cache=True, boundscheck=False)
    def _fused_steps(code, consts, tie, cur1, off1, cur2, off2, x1, x2, v, etas,
                     spikes):  # pragma: no cover - compiled
        # cur (T, B, S), off (S,), x / v (B, S), spikes (T, B, S); consts = [2, 0, slope] in
        # the tensors' dtype, so every operation rounds exactly as torch's do
        two, zero, slope = consts[0], consts[1], consts[2]
        steps, batch, size = cur1.shape
        for bi in prange(batch):
            for k in range(steps):
                e = etas[k]
                for j in range(size):
                    a = x1[bi, j] - e * (two * cur1[k, bi, j] - off1[j])
                    x1[bi, j] = a
                    b = a
                    if code >= 4:
                        b = x2[bi, j] - e * (two * cur2[k, bi, j] - off2[j])
                        x2[bi, j] = b
                    x = v[bi, j]
                    g = zero
                    if code == 0:
                        g = a if a > zero else zero
                    elif code == 1:
                        g = a if a >= zero else slope * a
                    elif code == 2:
                        g = abs(a)
                    elif code == 3:
                        g = a * a
                    elif code == 4:
                        g = a if a >= b else b
                    elif code == 5:
                        g = a * b
                    elif code == 6:
                        g = a / b
                    if code == 7:
                        fire = np.sqrt(b) * x > a
                    elif tie:
                        fire = x >= g
                    else:
                        fire = x > g
                    v[bi, j] = x - e if fire else x + e
                    spikes[k, bi, j] = 1.0 if fire else 0.0


#: targets whose g is exact IEEE arithmetic, so the fused kernel matches torch bit for bit
FUSED_CODES = {"relu": 0, "leaky_relu": 1, "abs": 2, "square": 3, "max": 4, "mul": 5, "div": 6,
               "rsqrt_div": 7}


def fused_code(name: str) -> int | None:
    """Kernel code of a target name (``leaky_relu(slope=..)`` included), None if not fused."""
    return FUSED_CODES.get(name.split("(")[0]) if "[" not in name else None


def fused_steps(code: int, param: float, tie: bool, currents: tuple[torch.Tensor, ...],
                offsets: tuple[torch.Tensor, ...], x_hat: tuple[torch.Tensor, ...],
                v: torch.Tensor, etas: torch.Tensor) -> torch.Tensor:
    """Charge, fire and reset in one pass: currents (T, B, *S) with offsets (1, *S); x_hat and v
    (B, *S) are updated in place; returns the spikes (T, B, *S)."""
    steps, batch = currents[0].shape[:2]
    dt = v.dtype

    def as3(t: torch.Tensor) -> "np.ndarray":
        return t.reshape(steps, batch, -1).contiguous().numpy()

    def as2(t: torch.Tensor) -> "np.ndarray":
        return t.reshape(batch, -1).numpy()

    c1 = as3(currents[0])
    o1 = offsets[0].reshape(-1).to(dt).contiguous().numpy()
    if len(currents) > 1:
        c2, o2, x2 = as3(currents[1]), offsets[1].reshape(-1).to(dt).contiguous().numpy(), as2(x_hat[1])
    else:  # distinct dummies: arrays that alias the first arm's would stop vectorisation
        c2, o2, x2 = (torch.zeros(1, 1, 1, dtype=dt).numpy(), torch.zeros(1, dtype=dt).numpy(),
                      torch.zeros(1, 1, dtype=dt).numpy())
    spikes = torch.empty(steps, *v.shape, dtype=dt)
    consts = torch.tensor([2.0, 0.0, param], dtype=dt).numpy()
    _fused_steps(code, consts, bool(tie), c1, o1, c2, o2, as2(x_hat[0]), x2, as2(v),
                 etas.to(dt).contiguous().numpy(), spikes.reshape(steps, batch, -1).numpy())
    return spikes


def estimates(x_hat: torch.Tensor, current: torch.Tensor, offset: torch.Tensor,
              etas: torch.Tensor) -> torch.Tensor:
    """Input estimates of every step of a block, (T, B, *S): x_hat (B, *S) is updated in place,
    current is (T, B, *S) and offset (1, *S)."""
    steps, batch = current.shape[:2]
    dt = x_hat.dtype
    out = torch.empty(steps, *x_hat.shape, dtype=dt)
    _estimates(torch.tensor(2.0, dtype=dt).numpy()[()],
               current.reshape(steps, batch, -1).contiguous().numpy(),
               offset.reshape(-1).to(dt).contiguous().numpy(), x_hat.reshape(batch, -1).numpy(),
               out.reshape(steps, batch, -1).numpy(), etas.to(dt).contiguous().numpy())
    return out


def ratio_steps(v: torch.Tensor, c: torch.Tensor, a: torch.Tensor, etas: torch.Tensor,
                tie: bool) -> torch.Tensor:
    """Membrane recursion with the spike rule c * v > a (c, a: (T, *v.shape)); v in place."""
    steps = c.shape[0]
    spikes = torch.empty(steps, *v.shape, dtype=v.dtype)
    _ratio_steps(v.reshape(-1).numpy(), c.reshape(steps, -1).contiguous().numpy(),
                 a.reshape(steps, -1).contiguous().numpy(), etas.to(v.dtype).contiguous().numpy(),
                 bool(tie), spikes.reshape(steps, -1).numpy())
    return spikes


def usable(*tensors: torch.Tensor) -> bool:
    """True when the fused CPU kernels can run on these tensors."""
    return ENABLED and all(t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64)
                           for t in tensors)


def sign_steps(v: torch.Tensor, g: torch.Tensor, etas: torch.Tensor, tie: bool) -> torch.Tensor:
    """Run the membrane recursion over a block: v (*S) is updated in place, g is (T, *S);
    returns the spikes (T, *S) in v's dtype."""
    flat_v = v.reshape(-1)
    spikes = torch.empty(g.shape, dtype=v.dtype)
    _sign_steps(flat_v.numpy(), g.reshape(g.shape[0], -1).contiguous().numpy(),
                etas.to(v.dtype).contiguous().numpy(), bool(tie),
                spikes.reshape(g.shape[0], -1).numpy())
    if flat_v.data_ptr() != v.data_ptr():  # pragma: no cover - v was not contiguous
        v.copy_(flat_v.view_as(v))
    return spikes


def product_steps(v: torch.Tensor, a: torch.Tensor, b: torch.Tensor, etas: torch.Tensor,
                  tie: bool) -> torch.Tensor:
    """Product neurons summed over K: v (*P, N, K, M) updated in place; a (T, *P, N, K),
    b (T, *P, K, M); returns spike counts (T, *P, N, M) in v's dtype."""
    lead = v.shape[:-3]
    n, k, m = v.shape[-3:]
    steps = a.shape[0]
    v4 = v.reshape(-1, n, k, m)
    counts = torch.empty(steps, v4.shape[0], n, m, dtype=v.dtype)
    _product_steps(v4.numpy(), a.reshape(steps, -1, n, k).contiguous().numpy(),
                   b.reshape(steps, -1, k, m).contiguous().numpy(),
                   etas.to(v.dtype).contiguous().numpy(), bool(tie), counts.numpy())
    return counts.reshape(steps, *lead, n, m)


def _cuda_step(v: torch.Tensor, g: torch.Tensor, eta: torch.Tensor, tie: bool
               ) -> tuple[torch.Tensor, torch.Tensor]:
    fire = v >= g if tie else v > g
    s = fire.to(v.dtype)
    return v - eta * (2.0 * s - 1.0), s


_compiled_step = None


def fused_step(v: torch.Tensor, g: torch.Tensor, eta: torch.Tensor, tie: bool
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """One membrane step as a single compiled kernel (torch.compile; meant for CUDA). Falls back
    to plain torch ops if compilation is unavailable."""
    global _compiled_step
    if _compiled_step is None:
        try:
            _compiled_step = torch.compile(_cuda_step, dynamic=True)
        except Exception:  # pragma: no cover - no compiler backend
            _compiled_step = _cuda_step
    return _compiled_step(v, g, eta, tie)


__all__ = ["ENABLED", "FUSED_CODES", "estimates", "fused_code", "fused_step", "fused_steps",
           "product_steps", "ratio_steps", "sign_steps", "usable"]
