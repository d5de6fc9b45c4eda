"""A vectorisable exp and float32 erf for the compiled neuron kernels (numba).

The C library's ``expf`` / ``exp`` is an opaque call, so a loop that contains it cannot use SIMD
and costs about 2 ns per neuron-step. :func:`vexp` is branch-free arithmetic that LLVM
vectorises:

    n = round(x / ln 2),   r = x - n ln2_hi - n ln2_lo      (Cody-Waite, |r| <= ln(2) / 2)
    e^x = p(r) * 2^h * 2^(n - h),   h = floor(n / 2)

with p the Taylor polynomial of degree 7 (float32) or 13 (float64), whose truncation error is
below 0.1 ulp, and the powers of two built from their IEEE bit patterns (two factors, so results
in the subnormal range round once, like the C library's). Measured against float64/long double
references in ``tests/test_kernels.py``: at most 2 ulp from the correctly rounded value. NaN
stays NaN, overflow gives inf, underflow 0.

:func:`verf` (float32; float64 calls the C library's ``erf``) works in float64, both pieces
computed and one selected, so the loop stays branch-free::

    |x| < 1:       erf(x) = x q(x^2),       q the Taylor polynomial of degree 11 (error < 1e-10)
    1 <= |x| < 4:  erf(x) = sign(x) (1 - r(|x|)),   r ~ erfc on [1, 4]
    |x| >= 4:      sign(x)                  (erfc(4) = 1.5e-8 rounds away in float32)

with r the Chebyshev interpolant of degree 20 of the C library's erfc on [1, 4], built at import
(absolute error 1.2e-12), evaluated in powers of t as four interleaved Horner chains (the
vectorised loop is bound by their latency). The float64 result is rounded to float32 once.
Checked on every float32 (a review): within 1 ulp of the correctly rounded erf, and equal to it
for all but 1,132 values of each sign in |x| < 5, about one in a million; the test checks a
sample. The C library's ``erff`` is an opaque call that costs 15-50 ns per neuron-step in a
kernel loop; :func:`verf` about 5.
"""
from __future__ import annotations

import math

try:
    import numpy as np
    from llvmlite import ir
    from numba import njit, types
    from numba.extending import intrinsic, overload
except ImportError:  # pragma: no cover - the torch path needs none of this
    njit = None


def _erfc_polynomial(lo: float, hi: float, degree: int) -> tuple[float, ...]:
    """Power-series coefficients, in t = (2x - lo - hi) / (hi - lo), of the Chebyshev interpolant
    of the C library's erfc on [lo, hi] (well conditioned there: the coefficients sum to 0.2 in
    absolute value)."""
    from numpy.polynomial import chebyshev

    def erfc_at(t):
        return np.array([math.erfc(0.5 * (lo + hi) + 0.5 * (hi - lo) * v) for v in t])

    return tuple(float(c) for c in chebyshev.cheb2poly(chebyshev.chebinterpolate(erfc_at, degree)))


if njit is not None:
    @intrinsic
    def _bits_as_float(typingctx, bits):  # pragma: no cover - compiled
        """Reinterpret an int32 (int64) bit pattern as float32 (float64)."""
        if bits == types.int32:
            sig, llvm_type = types.float32(types.int32), ir.FloatType()
        elif bits == types.int64:
            sig, llvm_type = types.float64(types.int64), ir.DoubleType()
        else:
            return None

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], llvm_type)

        return sig, codegen

    _F32 = dict(log2e=np.float32(1.4426950408889634), ln2_hi=np.float32(0.693359375),
                ln2_lo=np.float32(-2.12194440e-4), hi=np.float32(88.72283), lo=np.float32(-103.97208),
                half=np.float32(0.5), one=np.float32(1.0), zero=np.float32(0.0),
                inf=np.float32(np.inf))
    _F64 = dict(log2e=1.4426950408889634, ln2_hi=6.93147180369123816490e-01,
                ln2_lo=1.90821492927058770002e-10, hi=709.782712893384, lo=-745.1332191019412,
                half=0.5, one=1.0, zero=0.0, inf=np.inf)
    _INV_FACT = [1.0 / float(np.prod(np.arange(1, k + 1, dtype=np.float64))) for k in range(14)]
    _P32 = tuple(np.float32(c) for c in _INV_FACT[:8])
    _P64 = tuple(_INV_FACT)

    def _make_exp(k: dict, coeffs: tuple, int_type, bias: int, shift: int):
        log2e, ln2_hi, ln2_lo, hi, lo = k["log2e"], k["ln2_hi"], k["ln2_lo"], k["hi"], k["lo"]
        half, zero, inf = k["half"], k["zero"], k["inf"]
        degree = len(coeffs) - 1
        c = coeffs

        @njit(cache=True, error_model="numpy")
        def exp(x):  # pragma: no cover - compiled
            xc = min(max(x, lo), hi)
            n = np.floor(xc * log2e + half)
            r = (xc - n * ln2_hi) - n * ln2_lo
            p = c[degree]
            for i in range(degree - 1, -1, -1):
                p = p * r + c[i]
            ni = int_type(n)
            h = ni >> 1
            s1 = _bits_as_float(int_type((h + bias) << shift))
            s2 = _bits_as_float(int_type((ni - h + bias) << shift))
            y = p * s1 * s2
            y = inf if x > hi else y
            y = zero if x < lo else y
            return x if x != x else y

        return exp

    _exp32 = _make_exp(_F32, _P32, np.int32, 127, 23)
    _exp64 = _make_exp(_F64, _P64, np.int64, 1023, 52)

    def _make_polynomial(coeffs: tuple):
        """p(t) = sum_i coeffs[i] t^i (float64) as four Horner chains in t^4, joined at the end:
        a vectorised loop around it is bound by the chain's latency, which this cuts by 4."""
        length = (len(coeffs) + 3) // 4
        padded = tuple(coeffs) + (0.0,) * (4 * length - len(coeffs))
        c0, c1, c2, c3 = (padded[j::4] for j in range(4))
        last = length - 1

        @njit(cache=True, error_model="numpy", inline="always")
        def polynomial(t):  # pragma: no cover - compiled
            t2 = t * t
            t4 = t2 * t2
            p0, p1, p2, p3 = c0[last], c1[last], c2[last], c3[last]
            for i in range(last - 1, -1, -1):  # a few trips: unrolled, then vectorised
                p0 = p0 * t4 + c0[i]
                p1 = p1 * t4 + c1[i]
                p2 = p2 * t4 + c2[i]
                p3 = p3 * t4 + c3[i]
            return (p0 + t * p1) + t2 * (p2 + t * p3)

        return polynomial

    def _make_erf32(taylor: tuple, lo: float, hi: float, erfc_in_t: tuple):
        small, large = _make_polynomial(taylor), _make_polynomial(erfc_in_t)
        mid, width = lo + hi, hi - lo

        @njit(cache=True, error_model="numpy", inline="always")
        def erf32(x):  # pragma: no cover - compiled
            d = np.float64(x)
            a = min(abs(d), hi)
            tail = 1.0 - large((2.0 * a - mid) / width)
            tail = tail if d >= 0.0 else -tail
            y = np.float32(d * small(a * a) if a < lo else tail)
            return x if x != x else y

        return erf32

    # erf(x) = x q(x^2) on |x| < 1: q's Taylor coefficients 2 / sqrt(pi) (-1)^n / (n! (2n + 1))
    _ERF_TAYLOR = tuple(2.0 / math.sqrt(math.pi) * (-1.0) ** k / (math.factorial(k) * (2 * k + 1))
                        for k in range(12))
    _erf32 = _make_erf32(_ERF_TAYLOR, 1.0, 4.0, _erfc_polynomial(1.0, 4.0, 20))


def vexp(x):
    """e^x (float32 or float64 scalar) inside numba-compiled code; see the module docstring."""
    raise NotImplementedError("vexp is only callable from numba-compiled code")


def verf(x):
    """erf(x) (float32 or float64 scalar) inside numba-compiled code; see the module
    docstring."""
    raise NotImplementedError("verf is only callable from numba-compiled code")


if njit is not None:
    @overload(vexp)
    def _vexp_overload(x):  # pragma: no cover - compiled
        if x == types.float32:
            return lambda x: _exp32(x)
        if x == types.float64:
            return lambda x: _exp64(x)
        return None

    @overload(verf, inline="always")
    def _verf_overload(x):  # pragma: no cover - compiled
        if x == types.float32:
            return lambda x: _erf32(x)
        if x == types.float64:
            return lambda x: math.erf(x)
        return None


__all__ = ["verf", "vexp"]
