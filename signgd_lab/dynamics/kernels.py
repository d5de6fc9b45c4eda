"""Fused CPU kernels for the signGD recurrences (numba); elsewhere the neurons run as torch ops
(on CUDA with the compiled step of :mod:`.compiled_step`).

The sequential part of a signGD population is, per neuron and step k,

    x_hat_k = x_hat_{k-1} - eta_k (2 I_k - offset)      (one per input)
    s_k     = 1[v_{k-1} >= g(x_hat_k)]   (or '>')        v_k = v_{k-1} - eta_k (2 s_k - 1)

:func:`population_steps` runs all of it for a block of steps with the state in registers: one
compiled kernel per target, input layout and option set, so the target is a compile-time
constant and the inner loop vectorises. Each kernel is a module-level function or a closure over
plain flags, so numba's on-disk cache (``NUMBA_CACHE_DIR``, else ``__pycache__``) serves it to
every later process: only the first process on a machine compiles it. Targets made of exact
IEEE operations (relu, leaky_relu, abs, square, max, mul, div, the x1/sqrt(x2) rule) give the
torch path's numbers bit for bit. The exp-based targets (exp, gelu, silu, sigmoid, softplus) use
:func:`~signgd_lab.dynamics.vecmath.vexp` (within 2 ulp), gelu_erf
:func:`~signgd_lab.dynamics.vecmath.verf` (float32, within 1 ulp; float64: the C library), and
gelu_tanh / tanh the C library: their g may differ from torch's (itself not the same in its
vectorised and scalar loops) in the last bit, which changes a spike only at a tie that close
(tested). ``ENABLED`` turns the kernels off (then everything runs as torch ops); so does
``SIGNGD_LAB_NO_KERNELS=1``.
"""
from __future__ import annotations

import math
import os
from functools import lru_cache

import torch

from .vecmath import verf, vexp

try:  # numba is a dependency; the torch path still works where it cannot be imported
    import numpy as np
    from numba import njit, prange
except ImportError:  # pragma: no cover
    njit = None

ENABLED = njit is not None and os.environ.get("SIGNGD_LAB_NO_KERNELS", "") in ("", "0")
_CHUNK = 2048

#: targets the population kernels compute: exact IEEE arithmetic (bit for bit with torch), and
#: transcendental ones (vexp, verf or the C library: within a few ulp of torch)
EXACT_TARGETS = ("relu", "leaky_relu", "abs", "square", "max", "mul", "div", "rsqrt_div")
TRANSCENDENTAL_TARGETS = ("exp", "gelu", "gelu_erf", "gelu_tanh", "silu", "sigmoid", "tanh",
                          "softplus")
_CODES = {name: i for i, name in enumerate(EXACT_TARGETS + TRANSCENDENTAL_TARGETS)}
_BINARY = ("max", "mul", "div", "rsqrt_div")
_FLOATS = (torch.float32, torch.float64)  # the dtypes the kernels are compiled for
# constants in the tensors' dtype, so every operation rounds as torch's do
_TWO, _ZERO, _ONE, _PARAM, _HALF, _GELU_K, _SQRT1_2, _TANH_BETA, _TANH_KAPPA, _TWENTY = range(10)


if njit is not None:
    @njit(cache=True, error_model="numpy")
    def _charged(x_hat, eta, two, current, offset):  # pragma: no cover - compiled
        # one input-estimate step: x_hat_k = x_hat_{k-1} - eta_k (2 I_k - offset)
        return x_hat - eta * (two * current - offset)

    @njit(parallel=True, cache=True, boundscheck=False, error_model="numpy")
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

    @njit(parallel=True, cache=True, boundscheck=False, error_model="numpy")
    def _estimates(two, cur, off, x, out, etas):  # pragma: no cover - compiled
        # x_hat_k = x_hat_{k-1} - eta_k (2 I_k - offset): cur / out (T, B, S), off (S,), x (B, S)
        steps, batch, size = cur.shape
        for bi in prange(batch):
            for k in range(steps):
                e = etas[k]
                for j in range(size):
                    a = _charged(x[bi, j], e, two, cur[k, bi, j], off[j])
                    x[bi, j] = a
                    out[k, bi, j] = a

    @njit(parallel=True, cache=True, boundscheck=False, error_model="numpy")
    def _float_encoder(half, one, f, x, out, etas):  # pragma: no cover - compiled
        # e_k = (1 + (f - x)) / 2, f <- f - eta_k (f - x): f / x (B, S), out (T, B, S)
        steps, batch, size = out.shape
        for bi in prange(batch):
            for k in range(steps):
                e = etas[k]
                for j in range(size):
                    gradient = f[bi, j] - x[bi, j]
                    out[k, bi, j] = half * (one + gradient)
                    f[bi, j] = f[bi, j] - e * gradient


def _constants(param: float) -> list[float]:
    return [2.0, 0.0, 1.0, param, 0.5, 1.702, math.sqrt(0.5), math.sqrt(2.0 / math.pi), 0.044715,
            20.0]


# the target codes, module constants the compiled functions fold into their branches
(_RELU, _LEAKY, _ABS, _SQUARE, _MAX, _MUL, _DIV, _RSQRT, _EXP, _GELU, _GELU_ERF, _GELU_TANH, _SILU,
 _SIGMOID, _TANH, _SOFTPLUS) = (_CODES[n] for n in (
    "relu", "leaky_relu", "abs", "square", "max", "mul", "div", "rsqrt_div", "exp", "gelu",
    "gelu_erf", "gelu_tanh", "silu", "sigmoid", "tanh", "softplus"))


if njit is not None:
    # Compiled once per dtype; LLVM inlines them into each kernel, where code and scaled are
    # compile-time constants, and folds the branches away, so only one target's arithmetic is
    # left in the loop and it vectorises. Module-level functions (not closures over
    # dispatchers), so the kernels that call them can be loaded from numba's on-disk cache.
    @njit(cache=True, error_model="numpy")
    def _target(code, a, b, c):  # pragma: no cover - compiled
        # g(a, b) of one target (c: the constants); gelu_erf's is in _fires_gelu_erf
        if code == _RELU:
            return a if a > c[_ZERO] else c[_ZERO]
        if code == _LEAKY:  # both sides computed: a load inside a branch stops vectorisation
            scaled = c[_PARAM] * a
            return a if a >= c[_ZERO] else scaled
        if code == _ABS:
            return abs(a)
        if code == _SQUARE:
            return a * a
        if code == _MAX:
            return a if a >= b else b
        if code == _MUL:
            return a * b
        if code == _DIV:
            return a / b
        if code == _EXP:
            return vexp(a)
        if code == _GELU:  # x sigmoid(1.702 x)
            return a * (c[_ONE] / (c[_ONE] + vexp(-(c[_GELU_K] * a))))
        if code == _GELU_TANH:
            inner = c[_TANH_BETA] * (a + c[_TANH_KAPPA] * (a * a * a))
            return c[_HALF] * a * (c[_ONE] + math.tanh(inner))
        if code == _SILU:
            return a / (c[_ONE] + vexp(-a))
        if code == _SIGMOID:
            return c[_ONE] / (c[_ONE] + vexp(-a))
        if code == _TANH:
            return math.tanh(a)
        if code == _SOFTPLUS:
            return a if a > c[_TWENTY] else math.log1p(vexp(a))
        return a  # rsqrt_div has a spike rule instead of a target

    @njit(cache=True, error_model="numpy")
    def _fires(code, scaled, v, a, b, s, tie, c):  # pragma: no cover - compiled
        # the spike decision of one target (scaled: h(z) = g(s z) / s)
        if code == _RSQRT:  # the reference's rule for x1 / sqrt(x2); b is sqrt(x2_hat) here
            return b * v > a
        if scaled:
            g = _target(code, s * a, b, c) / s
        else:
            g = _target(code, a, b, c)
        return v >= g if tie else v > g

    @njit(cache=True, error_model="numpy", inline="always")
    def _fires_gelu_erf(scaled, v, a, s, tie, c):  # pragma: no cover - compiled
        # _fires for gelu_erf, x (1 + erf(x / sqrt 2)) / 2 with the vectorised erf. numba inlines
        # it into the kernel: LLVM would not inline a function this large, and a call per
        # neuron-step keeps the loop from vectorising (34 ns per neuron-step instead of 6-7)
        z = s * a if scaled else a
        g = z * c[_HALF] * (c[_ONE] + verf(z * c[_SQRT1_2]))
        if scaled:
            g = g / s
        return v >= g if tie else v > g


if njit is not None:
    @njit(cache=True, error_model="numpy", inline="always")
    def _count_and_scale(spikes, k, bi, tally, post, counting, multiplied):  # pragma: no cover
        # the second pass over step k of sample bi's spikes (0 / 1): tally gains each spike
        # (per neuron, not a sum: the loop vectorises) and the spikes become s * post, exactly
        # post or a signed zero. Inlined, with the flags constants of the calling kernel
        for j in range(spikes.shape[2]):
            s = spikes[k, bi, j]
            if counting:
                tally[j] += s
            if multiplied:
                spikes[k, bi, j] = s * post[j]

    @njit(cache=True, error_model="numpy")
    def _total(tally):  # pragma: no cover - compiled
        # the spikes a block's tally holds (each entry a whole number of at most the block's
        # steps, so exact in any float type), as an integer
        total = 0
        for j in range(tally.shape[0]):
            total += int(tally[j])
        return total


@lru_cache(maxsize=None)
def _population_kernel(code: int, arms: int, row: bool, scaled: bool, shifted: bool,
                       divided: bool, multiplied: bool, counting: bool):
    """Compiled block kernel for one target and input layout: arms = inputs with a drive;
    row: the second input has one value per row of the last dimension (x2 (B, R), S = R * W);
    shifted / divided / multiplied: ``shift`` is subtracted from the first input current, which
    is then divided by ``pre``, and the spikes are multiplied by ``post`` (per neuron), as a
    neuron module's rescaling ``(x - c) / m -> g -> * m'`` would; counting: ``counts[b]`` gains
    the spikes of sample b. The kernel is a closure over these flags only (ints and bools:
    numba's cache keys on their values), so a later process loads it from the cache instead of
    compiling it."""

    if row:
        @njit(parallel=True, cache=True, boundscheck=False, error_model="numpy")
        def kernel(c, tie, cur1, off1, cur2, off2, x1, x2, v, scale, shift, pre, post, etas,
                   spikes, counts):  # pragma: no cover - compiled
            # cur1 (T, B, S), off1 (S,), x1 / v (B, S); cur2 (T, B, R), off2 (R,), x2 (B, R):
            # one second-input value per row of S / R neurons
            two, zero, one = c[_TWO], c[_ZERO], c[_ONE]
            steps, batch, size = cur1.shape
            rows = x2.shape[1]
            width = size // rows
            for bi in prange(batch):
                spread = np.empty(size, dtype=x1.dtype)  # the row values, one per neuron
                tally = np.zeros(size if counting else 1, dtype=x1.dtype)  # spikes per neuron
                for k in range(steps):
                    e = etas[k]
                    for r in range(rows):
                        b = _charged(x2[bi, r], e, two, cur2[k, bi, r], off2[r])
                        x2[bi, r] = b
                        if code == _RSQRT:
                            b = math.sqrt(b)
                        for j in range(r * width, (r + 1) * width):
                            spread[j] = b
                    for j in range(size):  # one long loop: vectorises
                        i1 = cur1[k, bi, j] - shift[j] if shifted else cur1[k, bi, j]
                        if divided:
                            i1 = i1 / pre[j]
                        a = _charged(x1[bi, j], e, two, i1, off1[j])
                        x1[bi, j] = a
                        x = v[bi, j]
                        if code == _GELU_ERF:
                            f = _fires_gelu_erf(scaled, x, a, scale[j] if scaled else one, tie, c)
                        else:
                            f = _fires(code, scaled, x, a, spread[j],
                                       scale[j] if scaled else one, tie, c)
                        v[bi, j] = x - e if f else x + e
                        spikes[k, bi, j] = one if f else zero
                    if counting or multiplied:  # a second pass keeps the first one vectorised
                        _count_and_scale(spikes, k, bi, tally, post, counting, multiplied)
                if counting:
                    counts[bi] += _total(tally)
    else:
        @njit(parallel=True, cache=True, boundscheck=False, error_model="numpy")
        def kernel(c, tie, cur1, off1, cur2, off2, x1, x2, v, scale, shift, pre, post, etas,
                   spikes, counts):  # pragma: no cover - compiled
            # cur (T, B, S), off (S,), x / v (B, S), spikes (T, B, S)
            two, zero, one = c[_TWO], c[_ZERO], c[_ONE]
            steps, batch, size = cur1.shape
            for bi in prange(batch):
                tally = np.zeros(size if counting else 1, dtype=x1.dtype)  # spikes per neuron
                for k in range(steps):
                    e = etas[k]
                    for j in range(size):
                        i1 = cur1[k, bi, j] - shift[j] if shifted else cur1[k, bi, j]
                        if divided:
                            i1 = i1 / pre[j]
                        a = _charged(x1[bi, j], e, two, i1, off1[j])
                        x1[bi, j] = a
                        b = a
                        if arms == 2:
                            b = _charged(x2[bi, j], e, two, cur2[k, bi, j], off2[j])
                            x2[bi, j] = b
                            if code == _RSQRT:
                                b = math.sqrt(b)
                        x = v[bi, j]
                        if code == _GELU_ERF:
                            f = _fires_gelu_erf(scaled, x, a, scale[j] if scaled else one, tie, c)
                        else:
                            f = _fires(code, scaled, x, a, b, scale[j] if scaled else one, tie, c)
                        v[bi, j] = x - e if f else x + e
                        spikes[k, bi, j] = one if f else zero
                    if counting or multiplied:  # a second pass keeps the first one vectorised
                        _count_and_scale(spikes, k, bi, tally, post, counting, multiplied)
                if counting:
                    counts[bi] += _total(tally)

    return kernel


def per_neuron(v: torch.Tensor, *tensors: torch.Tensor | None) -> bool:
    """True when every tensor given (None counts as absent) broadcasts to one value per neuron
    of a sample, i.e. to (1, *v.shape[1:])."""
    sample = (1, *v.shape[1:])
    return all(t is None or t.dim() <= len(sample) and all(
        n in (1, m) for n, m in zip(t.shape[::-1], sample[::-1])) for t in tensors)


def population_layout(kernel: str | None, x_hat: tuple[torch.Tensor, ...], v: torch.Tensor,
                      offsets: tuple[torch.Tensor, ...], scale: torch.Tensor | None = None
                      ) -> str | None:
    """How :func:`population_steps` would run this population: ``"elementwise"`` (every input
    has v's shape), ``"row"`` (a second input with one value per row of the last dimension,
    as softmax's sum and LayerNorm's variance), or None when no kernel applies. ``kernel`` is
    a target's :attr:`~signgd_lab.dynamics.Target.kernel`."""
    if kernel not in _CODES or len(x_hat) != (2 if kernel in _BINARY else 1) or v.dim() == 0:
        return None
    batch = v.shape[0]
    if not per_neuron(v, scale):
        return None
    if x_hat[0].shape != v.shape or offsets[0].numel() * batch != v.numel():
        return None
    if len(x_hat) == 1 or x_hat[1].shape == v.shape and offsets[1].numel() * batch == v.numel():
        return "elementwise"
    row_shape = (*v.shape[:-1], 1)
    if v.dim() >= 2 and x_hat[1].shape == row_shape and offsets[1].numel() * batch == x_hat[1].numel():
        return "row"
    return None


def population_steps(kernel: str, param: float, tie: bool, currents: tuple[torch.Tensor, ...],
                     offsets: tuple[torch.Tensor, ...], x_hat: tuple[torch.Tensor, ...],
                     v: torch.Tensor, etas: torch.Tensor, scale: torch.Tensor | None = None,
                     shift: torch.Tensor | None = None, divisor: torch.Tensor | None = None,
                     out_scale: torch.Tensor | None = None, layout: str | None = None,
                     count: bool = False) -> tuple[torch.Tensor, int]:
    """Charge, fire and reset of a whole block in one pass: currents (T, B, *S_i) with offsets
    (1, *S_i); x_hat (B, *S_i) and v (B, *S) are contiguous and updated in place; ``scale``
    (broadcastable to (1, *S)) makes the target h(z) = g(s z) / s; ``shift`` is subtracted from
    the first input's current, which is then divided by ``divisor``, and ``out_scale``
    multiplies the spikes (all per neuron, rounding exactly as torch's subtraction, division and
    multiplication). Returns the spikes (T, B, *S) and how many there were (0 unless
    ``count``: counting costs a little speed). ``layout`` is
    :func:`population_layout`'s answer when the caller has it already; ``kernel`` names the
    target (:attr:`~signgd_lab.dynamics.Target.kernel`). A population that runs block after
    block prepares a :class:`PopulationKernel` once instead."""
    return PopulationKernel(kernel, param, tie, offsets, x_hat, v, scale, shift, divisor,
                            out_scale, layout, count)(currents, x_hat, v, etas)


class PopulationKernel:
    """:func:`population_steps` for one population, with what stays the same from block to
    block prepared once: the layout, the compiled kernel, the offsets and per-neuron scales as
    arrays. Call it on each block's ``(currents, x_hat, v, etas)``; :meth:`fits` says whether it
    still describes a population (the same tensors, not modified in place since)."""

    def __init__(self, kernel: str, param: float, tie: bool, offsets: tuple[torch.Tensor, ...],
                 x_hat: tuple[torch.Tensor, ...], v: torch.Tensor,
                 scale: torch.Tensor | None = None, shift: torch.Tensor | None = None,
                 divisor: torch.Tensor | None = None, out_scale: torch.Tensor | None = None,
                 layout: str | None = None, count: bool = False) -> None:
        layout = layout or population_layout(kernel, x_hat, v, offsets, scale)
        if layout is None:
            raise ValueError(f"no population kernel {kernel!r} for inputs "
                             f"{[tuple(x.shape) for x in x_hat]} and membranes {tuple(v.shape)}")
        dt = v.dtype
        self.target = (kernel, param, bool(tie))  # what the neurons compute
        self.dtype, self.count = dt, bool(count)
        self.shapes = (tuple(x.shape for x in x_hat), v.shape)
        slots = _roles(offsets, scale, shift, divisor, out_scale)
        self._sources = tuple((t, None if t is None else _stamp(t)) for t in slots)
        dummy = self._dummy = _dummies(_dtype_str(dt))  # arrays the kernel never reads

        def vector(t: torch.Tensor, i: int) -> "np.ndarray":
            # offsets as they are, the rest broadcast to one value per neuron
            t = t.to(dt)
            return _array(t if i < 2 else torch.broadcast_to(t, (1, *v.shape[1:])), -1)

        # the offsets, then scale, shift, divisor and output scale (stand-ins for absent ones);
        # an array that does not share the tensor's memory (broadcast, cast) is made again on
        # every block, so no edit of the tensor is missed
        self._vector = vector
        self._vectors = [dummy[1 if i < 2 else 1 + i] if t is None else vector(t, i)
                         for i, t in enumerate(slots)]
        self._refresh = [(i, t) for i, t in enumerate(slots)
                         if t is not None and not _views(self._vectors[i], t)]
        self._constants = _constant_array(param, _dtype_str(dt))
        self._tie = bool(tie)
        self._compiled = _population_kernel(
            _CODES[kernel], len(offsets), layout == "row", scale is not None, shift is not None,
            divisor is not None, out_scale is not None, self.count)
        self._state: tuple = ()  # (state tensors of the last block, their data pointers, arrays)

    def fits(self, offsets: tuple[torch.Tensor, ...], x_hat: tuple[torch.Tensor, ...],
             v: torch.Tensor, scale: torch.Tensor | None, shift: torch.Tensor | None,
             divisor: torch.Tensor | None, out_scale: torch.Tensor | None, count: bool) -> bool:
        """True when this kernel was prepared for these very tensors in these roles (none
        modified in place since), state of these shapes and dtype, and this counting."""
        slots = _roles(offsets, scale, shift, divisor, out_scale)
        return bool(count) == self.count and \
            all(t is s and (t is None or _stamp(t) == n)
                for t, (s, n) in zip(slots, self._sources)) and \
            v.dtype == self.dtype and self.shapes == (tuple(x.shape for x in x_hat), v.shape)

    def __call__(self, currents: tuple[torch.Tensor, ...], x_hat: tuple[torch.Tensor, ...],
                 v: torch.Tensor, etas: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Run one block: see :func:`population_steps`."""
        steps, batch = currents[0].shape[0], v.shape[0]
        dummy = self._dummy
        if len(x_hat) > 1:
            x1, x2, v_ = self._arrays((*x_hat, v), batch)
            c1 = _currents(currents[0], x_hat[0], steps)
            c2 = _currents(currents[1], x_hat[1], steps)
        else:
            (x1, v_), x2 = self._arrays((x_hat[0], v), batch), dummy[2]
            c1, c2 = _currents(currents[0], x_hat[0], steps), dummy[0]
        for i, t in self._refresh:
            self._vectors[i] = self._vector(t, i)
        o1, o2, *per_neuron = self._vectors
        spikes = torch.empty(steps, *v.shape, dtype=self.dtype)
        counts = np.zeros(batch, dtype=np.int64)
        self._compiled(self._constants, self._tie, c1, o1, c2, o2, x1, x2, v_, *per_neuron,
                       _steps_array(etas, self.dtype), spikes.numpy().reshape(steps, batch, -1),
                       counts)
        return spikes, int(counts.sum()) if self.count else 0

    def _arrays(self, state: tuple[torch.Tensor, ...], batch: int) -> tuple["np.ndarray", ...]:
        """The state tensors as (B, S) arrays (the kernel updates them in place, so a population
        passes the same tensors block after block: their arrays are kept while the tensors and
        their storage are the same)."""
        tensors, pointers, arrays = self._state or ((), (), ())
        if len(tensors) != len(state) or any(t is not s or t.data_ptr() != p
                                             for t, s, p in zip(state, tensors, pointers)):
            arrays = tuple(_state_array(t, batch, -1) for t in state)
            self._state = (state, tuple(t.data_ptr() for t in state), arrays)
        return arrays


def _roles(offsets: tuple[torch.Tensor, ...], *per_neuron: torch.Tensor | None
           ) -> tuple[torch.Tensor | None, ...]:
    """A population's tensors by role: first offset, second offset (None for one input), then
    scale, shift, divisor and output scale (None where absent)."""
    return (*offsets, *([None] * (2 - len(offsets))), *per_neuron)


@lru_cache(maxsize=None)
def _dummies(dtype: str) -> tuple["np.ndarray", ...]:
    """Stand-ins for absent kernel arguments, made once per dtype (the kernels never read them):
    a second arm's current, offset and estimate, then the scale, shift, divisor and output
    scale. Distinct arrays, so none aliases another argument (which would stop vectorisation)."""
    return (np.zeros((1, 1, 1), dtype), np.zeros(1, dtype), np.zeros((1, 1), dtype),
            *(np.ones(1, dtype) for _ in range(4)))


@lru_cache(maxsize=None)
def _dtype_str(dtype: torch.dtype) -> str:
    """numpy's name of a torch dtype ('<f4' for float32)."""
    return torch.empty((), dtype=dtype).numpy().dtype.str


@lru_cache(maxsize=None)
def _constant_array(param: float, dtype: str) -> "np.ndarray":
    """The kernels' constants (:func:`_constants`) in ``dtype``, made once (read only)."""
    return np.array(_constants(param), dtype=dtype)


def _array(t: torch.Tensor, *shape: int) -> "np.ndarray":
    """``t`` as a C-contiguous array of ``shape`` (-1 allowed): its own memory where ``t`` is
    contiguous, else torch's contiguous copy. Reshaping on the numpy side costs a fraction of
    a torch call, which counts in populations that run many small blocks."""
    return (t if t.is_contiguous() else t.contiguous()).numpy().reshape(shape)


def _views(array: "np.ndarray", t: torch.Tensor) -> bool:
    """True when ``array`` starts at ``t``'s memory (made from it without a copy, so edits of
    ``t`` show through it)."""
    return array.__array_interface__["data"][0] == t.data_ptr()


def _currents(c: torch.Tensor, x_hat: torch.Tensor, steps: int) -> "np.ndarray":
    """A block's input currents (T, B, *S) as a (steps, B, S) array: broadcast over the steps
    and to the estimate's shape (a kernel reads S values per sample and step), copied if
    strided."""
    if c.shape != (steps, *x_hat.shape):
        c = c.expand(steps, *x_hat.shape)
    return _array(c, steps, x_hat.shape[0], -1)


def _stamp(t: torch.Tensor) -> tuple:
    """What tells a tensor's in-place edits and new storage apart: torch's version counter and
    the data pointer. An inference tensor has no version counter; the arrays made from it share
    its memory (so in-place edits show through them) or are made again on every block."""
    return (None if t.is_inference() else t._version), t.data_ptr()


def _state_array(t: torch.Tensor, *shape: int) -> "np.ndarray":
    """A tensor a kernel updates in place as an array of ``shape``: its own memory (a
    non-contiguous one is refused, since a copy would drop the updates)."""
    if not t.is_contiguous():
        raise ValueError(f"a kernel updates this {tuple(t.shape)} state in place, so it must be "
                         "contiguous; pass t.contiguous() and keep that tensor as the state")
    return t.numpy().reshape(shape)


def _steps_array(etas: torch.Tensor, dtype: torch.dtype) -> "np.ndarray":
    """A block's step sizes as a contiguous array of ``dtype``. The populations of one block
    share the tensor, so the array of the last one asked for is kept when it is a view of the
    tensor's own memory (any edit of the values shows through it; new storage or a new shape
    makes it again); a converted or copied array is made on every call."""
    kept = _LAST_STEPS[0]
    if kept is not None and kept[0] is etas and kept[1] == (etas.data_ptr(), etas.shape, dtype):
        return kept[2]
    array = _array(etas.to(dtype), -1)
    if _views(array, etas):
        _LAST_STEPS[0] = (etas, (etas.data_ptr(), etas.shape, dtype), array)
    return array


#: (etas, its data pointer, shape and the dtype asked for, the array) of the last view that
#: _steps_array made; it keeps that small tensor alive until the next block replaces it
_LAST_STEPS: list = [None]


@lru_cache(maxsize=None)
def _chain_kernel(counting: bool):
    """Compiled block kernel of a max-pool chain (see :func:`max_chain_steps`); counting: the
    spikes are counted. A closure over this flag only, so later processes load it from numba's
    cache."""

    @njit(parallel=True, cache=True, boundscheck=False, error_model="numpy")
    def kernel(c, tie, y, sample, index, off1, off2, x1, x2, v, etas, out,
               counts):  # pragma: no cover - compiled
        # y: the block's input, flat; element j of window w of sample (k, b) is
        # y[(k B + b) sample + index[w, j]]. Neuron m of the chain (state x1 / x2 / v (n, B, S),
        # offsets (n, S)) takes the spikes of neuron m - 1 (m = 0: window 0) and window m + 1;
        # out (T, B, S) gets the last neuron's spikes and, when counting, counts[m, b] gains
        # neuron m's spikes of sample b. The windows are gathered first (one long indexed loop
        # each), so the neuron loops read contiguous rows and vectorise
        two, zero, one = c[_TWO], c[_ZERO], c[_ONE]
        n = x1.shape[0]
        steps, batch, size = out.shape
        for bi in prange(batch):
            windows = np.empty((n + 1, size), dtype=x1.dtype)  # this sample's windows
            prev = np.empty(size, dtype=x1.dtype)  # output of the previous neuron
            tally = np.zeros((n, size) if counting else (1, 1), dtype=x1.dtype)  # per neuron
            for k in range(steps):
                e = etas[k]
                base = (k * batch + bi) * sample
                for w in range(n + 1):
                    for j in range(size):
                        windows[w, j] = y[base + index[w, j]]
                for j in range(size):
                    prev[j] = windows[0, j]
                for m in range(n):  # one long loop per neuron: vectorises
                    for j in range(size):
                        a = _charged(x1[m, bi, j], e, two, prev[j], off1[m, j])
                        x1[m, bi, j] = a
                        b = _charged(x2[m, bi, j], e, two, windows[m + 1, j], off2[m, j])
                        x2[m, bi, j] = b
                        x = v[m, bi, j]
                        f = _fires(_MAX, False, x, a, b, one, tie, c)
                        v[m, bi, j] = x - e if f else x + e
                        prev[j] = one if f else zero
                        if counting:
                            tally[m, j] += one if f else zero
                for j in range(size):
                    out[k, bi, j] = prev[j]
            if counting:
                for m in range(n):
                    counts[m, bi] += _total(tally[m])

    return kernel


def window_index(sample_shape: torch.Size, windows: list[tuple]) -> torch.Tensor:
    """Where each window lies in a sample: for each index expression of ``windows`` (applied to
    a (B, *sample_shape) tensor, leaving dim 0 alone), the flat offsets of its elements within
    one sample, (len(windows), S) int32 (int64 for samples of 2**31 elements or more)."""
    size = math.prod(sample_shape)
    dtype = torch.int32 if size < 2**31 else torch.int64
    ids = torch.arange(size, dtype=dtype).view(1, *sample_shape)
    return torch.stack([ids[w].reshape(-1) for w in windows]).contiguous()


def max_chain_steps(tie: bool, y: torch.Tensor, index: torch.Tensor,
                    offsets: tuple[torch.Tensor, torch.Tensor], x1: torch.Tensor,
                    x2: torch.Tensor, v: torch.Tensor, etas: torch.Tensor,
                    count: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """A chain of n max neurons over windows of ``y`` (T*B, ...) for a block of T steps, in one
    pass (see :class:`~signgd_lab.conversion.neuron_ops.MaxPoolChain`): ``index`` (n + 1, S)
    from :func:`window_index`; state x1, x2, v (n, B, S) updated in place; offsets (n, S) per
    arm. Returns the last neuron's spikes (T, B, S) and the spikes per neuron and sample (n, B)
    (zeros unless ``count``); every number equals the neuron-by-neuron path."""
    steps, (n, batch, size) = etas.shape[0], v.shape
    if index.shape != (n + 1, size) or y.numel() != steps * batch * y[0].numel():
        raise ValueError(f"window index {tuple(index.shape)} and input {tuple(y.shape)} do not "
                         f"fit a chain of {n} neurons over {size} outputs, {steps} steps of "
                         f"{batch} samples")
    out = torch.empty(steps, batch, size, dtype=v.dtype)
    counts = np.zeros((n, batch), dtype=np.int64)
    _chain_kernel(bool(count))(
        _constant_array(0.0, _dtype_str(x1.dtype)), bool(tie), _array(y, -1), y[0].numel(),
        index.numpy(), offsets[0].numpy(), offsets[1].numpy(), _state_array(x1, *x1.shape),
        _state_array(x2, *x2.shape), _state_array(v, *v.shape), _steps_array(etas, v.dtype),
        out.numpy(), counts)
    return out, torch.from_numpy(counts)


def estimates(x_hat: torch.Tensor, current: torch.Tensor, offset: torch.Tensor,
              etas: torch.Tensor) -> torch.Tensor:
    """Input estimates of every step of a block, (T, B, *S): x_hat (B, *S) is updated in place,
    current is (T, B, *S) and offset (1, *S)."""
    steps, batch = current.shape[0], x_hat.shape[0]
    dt = x_hat.dtype
    out = torch.empty(steps, *x_hat.shape, dtype=dt)
    if offset.shape != (1, *x_hat.shape[1:]):
        offset = torch.broadcast_to(offset, (1, *x_hat.shape[1:]))
    _estimates(_constant_array(0.0, _dtype_str(dt))[_TWO], _currents(current, x_hat, steps),
               _array(offset.to(dt), -1), _state_array(x_hat, batch, -1),
               out.numpy().reshape(steps, batch, -1), _steps_array(etas, dt))
    return out


def float_encoder(f: torch.Tensor, x: torch.Tensor, etas: torch.Tensor) -> torch.Tensor:
    """The float encoder's emitted values for a block, (T, *x.shape): e_k = (1 + (f - x)) / 2,
    then f <- f - eta_k (f - x), with f (contiguous, x's shape) updated in place; the same
    roundings as the torch ops of :class:`~signgd_lab.dynamics.codec.FloatEncoder`."""
    steps, batch, dt = etas.shape[0], x.shape[0], x.dtype
    out = torch.empty(steps, *x.shape, dtype=dt)
    const = _constant_array(0.0, _dtype_str(dt))
    _float_encoder(const[_HALF], const[_ONE], _state_array(f, batch, -1), _array(x, batch, -1),
                   out.numpy().reshape(steps, batch, -1), _steps_array(etas, dt))
    return out


if njit is not None:
    @njit(cache=True, boundscheck=False, error_model="numpy")
    def _nonzero(x):  # pragma: no cover - compiled
        # how many entries of a flat array are not zero (one pass, vectorised, no temporaries)
        total = 0
        for j in range(x.shape[0]):
            total += 1 if x[j] != 0 else 0
        return total


def count_nonzero(t: torch.Tensor) -> int:
    """How many entries of ``t`` are not zero (NaN counts, -0.0 does not): a kernel pass on
    contiguous CPU float tensors (2.5x faster than ``t.bool().sum()`` on a 2048 x 64 spike
    block), torch's count otherwise."""
    if usable(t) and t.is_contiguous():
        return int(_nonzero(t.detach().reshape(-1).numpy()))
    return int(t.bool().sum())


def usable(*tensors: torch.Tensor) -> bool:
    """True when the fused CPU kernels can run on these tensors."""
    return ENABLED and all(t.is_cpu and t.dtype in _FLOATS for t in tensors)


def sign_steps(v: torch.Tensor, g: torch.Tensor, etas: torch.Tensor, tie: bool) -> torch.Tensor:
    """Run the membrane recursion over a block: v (*S) is updated in place, g is (T, *S);
    returns the spikes (T, *S) in v's dtype."""
    flat_v = v.reshape(-1)
    spikes = torch.empty(g.shape, dtype=v.dtype)
    _sign_steps(flat_v.numpy(), g.reshape(g.shape[0], -1).contiguous().numpy(),
                _steps_array(etas, v.dtype), bool(tie), spikes.reshape(g.shape[0], -1).numpy())
    if flat_v.data_ptr() != v.data_ptr():  # pragma: no cover - v was not contiguous
        v.copy_(flat_v.view_as(v))
    return spikes


#: membranes (elements) of the rows a product kernel takes through a whole block of steps before
#: it moves on: they stay in the core's cache from one step to the next (measured: 16k-64k best)
_PRODUCT_TILE = 2**15


@lru_cache(maxsize=None)
def _product_kernel(tie: bool):
    """Compiled block kernel of product neurons summed over K (see :func:`product_steps`), with
    the tie rule a compile-time constant (a closure over a plain bool: cached on disk)."""

    @njit(parallel=True, cache=True, boundscheck=False, error_model="numpy")
    def kernel(v, a, b, etas, counts, tile):  # pragma: no cover - compiled
        # v (P N, K M); a (T, P N, K); b (T, P, K M); counts (T, P N, M). Each task takes the N
        # rows of one p (they share b) a tile of rows at a time through every step: the rows'
        # membranes stay in cache and each step reads a, b and counts in long runs (2.2-2.4x faster
        # than one row at a time, whose step-strided reads missed the TLB)
        rows, km = v.shape
        k_dim = a.shape[2]
        m_dim = km // k_dim
        p_dim = b.shape[1]
        n_dim = rows // p_dim
        steps = a.shape[0]
        # the reset as arithmetic, x + (e - s * 2e) with s the spike as 0 / 1 in v's dtype:
        # exactly x - e or x + e while 2e is finite (a step size below half the dtype's
        # largest value; the schedules' are at most lr0), and the m loop vectorises
        for p in prange(p_dim):
            for first in range(p * n_dim, (p + 1) * n_dim, tile):
                last = min(first + tile, (p + 1) * n_dim)
                for t in range(steps):
                    e = etas[t]
                    e2 = e + e
                    for row in range(first, last):
                        for m in range(m_dim):
                            counts[t, row, m] = 0
                        for kk in range(k_dim):
                            x_a = a[t, row, kk]
                            base = kk * m_dim
                            for m in range(m_dim):
                                x = v[row, base + m]
                                g = x_a * b[t, p, base + m]
                                s = v.dtype.type(x >= g if tie else x > g)
                                v[row, base + m] = x + (e - s * e2)
                                counts[t, row, m] += s

    return kernel


def _spelled_out(x: torch.Tensor, lead: torch.Size, tail: tuple[int, int]) -> torch.Tensor:
    """An operand (T, *P', *tail) broadcast over the membranes' leading dims P (P' aligned to
    P's right, as matmul broadcasts): (T, *P, *tail), a view."""
    missing = len(lead) - (x.dim() - 1 - len(tail))
    return x.reshape(x.shape[0], *([1] * missing), *x.shape[1:]).expand(x.shape[0], *lead, *tail)


def product_steps(v: torch.Tensor, a: torch.Tensor, b: torch.Tensor, etas: torch.Tensor,
                  tie: bool) -> torch.Tensor:
    """Product neurons summed over K: v (*P, N, K, M) updated in place; a (T, *P, N, K),
    b (T, *P, K, M); returns spike counts (T, *P, N, M) in v's dtype."""
    lead = v.shape[:-3]
    n, k, m = v.shape[-3:]
    steps = a.shape[0]
    if v.numel() == 0:  # no neurons (or K = 0: no spikes to sum)
        return torch.zeros(steps, *lead, n, m, dtype=v.dtype)
    rows = v.numel() // (k * m)  # P N
    counts = torch.empty(steps, rows, m, dtype=v.dtype)
    a, b = _spelled_out(a, lead, (n, k)), _spelled_out(b, lead, (k, m))
    _product_kernel(bool(tie))(_state_array(v, rows, k * m), _array(a, steps, rows, k),
                               _array(b, steps, rows // n, k * m),
                               _steps_array(etas, v.dtype), counts.numpy(),
                               max(1, _PRODUCT_TILE // (k * m)))
    return counts.view(steps, *lead, n, m)


__all__ = ["ENABLED", "EXACT_TARGETS", "TRANSCENDENTAL_TARGETS", "PopulationKernel",
           "count_nonzero", "estimates", "float_encoder", "max_chain_steps", "per_neuron",
           "population_layout", "population_steps", "product_steps", "sign_steps", "usable",
           "window_index"]
