"""A vectorisable exp for the compiled neuron kernels (numba).

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
"""
from __future__ import annotations

try:
    import numpy as np
    from llvmlite import ir
    from numba import njit, types
    from numba.extending import intrinsic, overload
except ImportError:  # pragma: no cover - the torch path needs none of this
    njit = None

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


def vexp(x):
    """e^x (float32 or float64 scalar) inside numba-compiled code; see the module docstring."""
    raise NotImplementedError("vexp is only callable from numba-compiled code")


if njit is not None:
    @overload(vexp)
    def _vexp_overload(x):  # pragma: no cover - compiled
        if x == types.float32:
            return lambda x: _exp32(x)
        if x == types.float64:
            return lambda x: _exp64(x)
        return None


__all__ = ["vexp"]
