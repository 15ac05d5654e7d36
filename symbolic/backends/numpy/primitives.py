"""The NumPy backend's code of every primitive: one entry per primitive.

A primitive added to :data:`symbolic.primitives.PRIMITIVES` needs one entry here (a test
walks both tables).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import sympy as sp

from symbolic import primitives


@dataclass(frozen=True)
class Form:
    """A primitive in NumPy code.

    Attributes:
        call: The call on arrays, ``{0}`` the printed argument.
        out: The call writing into a buffer: ``{i}`` the input, ``{o}`` the output
            (they may be the same array). Empty when the primitive is rewritten instead.
        helper: Source of a function the code calls, emitted once into each module that
            uses the primitive (NumPy code in either backend's modules).
        rewrite: ``(z, scale) -> expr``: the primitive in other primitives, as the code
            computes it; ``scale(c, z)`` builds c*z (the caller decides whether to
            distribute c over a sum).
    """

    call: str
    out: str = ""
    helper: str = ""
    rewrite: Callable[[sp.Expr, Callable], sp.Expr] | None = None


FORMS: dict[str, Form] = {
    "sigmoid": Form(
        # 1/(1 + e^-z) in four passes over the array, in place, as PyTorch's and JAX's CPU
        # kernels compute it: for z < 0 the value is 1/(1 + e^|z|), free of the
        # cancellation of (1 + tanh(z/2))/2 (which is 0 for z <= -38 in float64). Where
        # e^-z overflows (z < -709.78 in float64, -88.72 in float32) the value is 0, and
        # the exact one is below the smallest normal number. Measured on a million random
        # values, one core: 0.82 ms float32 and 1.85 ms float64, against 1.76 and 4.17 for
        # the seven passes of 1 or e^-|z| over 1 + e^-|z| (and 6 ms for its first form, a
        # masked copy, which branches on every element).
        call="_np_sigmoid({0})",
        out="_np_sigmoid({i}, out={o})",
        helper="""
def _np_sigmoid(z, out=None):
    \"\"\"1/(1 + e^-z), accurate to a few ulp wherever the value is a normal number (0 for
    z < -709.78 in float64, -88.72 in float32).\"\"\"
    z = np.asarray(z)
    if out is None:
        out = np.empty_like(z, dtype=z.dtype if z.dtype.kind == "f" else np.float64)
    with np.errstate(over="ignore", under="ignore"):
        np.negative(z, out=out)
        np.exp(out, out=out)
        np.add(out, 1.0, out=out)
        return np.divide(1.0, out, out=out)
""",
    ),
    "tanh": Form(
        call="np.tanh({0})",
        out="np.tanh({i}, out={o})",
    ),
    "exp": Form(
        call="np.exp({0})",
        out="np.exp({i}, out={o})",
    ),
    "log": Form(
        call="np.log({0})",
        out="np.log({i}, out={o})",
    ),
    "softplus": Form(
        # max(z, 0) + log1p(e^-|z|), the form np.logaddexp(0, z) computes one element at a
        # time (no SIMD loop): on a million random values, one core, 17 ms in either dtype
        # against 4.2 (float64) and 2.0 (float32) for these passes
        call="_np_softplus({0})",
        out="_np_softplus({i}, out={o})",
        helper="""
def _np_softplus(z, out=None):
    \"\"\"log(1 + e^z) as max(z, 0) + log1p(e^-|z|): no overflow, and no cancellation
    for large negative z.\"\"\"
    z = np.asarray(z)
    dtype = z.dtype if z.dtype.kind == "f" else np.float64
    if out is None:
        out = np.empty_like(z, dtype=dtype)
    tail = np.empty_like(z, dtype=dtype)
    np.abs(z, out=tail)
    with np.errstate(under="ignore"):
        np.negative(tail, out=tail)
        np.exp(tail, out=tail)
    np.log1p(tail, out=tail)
    np.maximum(z, 0, out=out)
    return np.add(out, tail, out=out)
""",
    ),
    "step": Form(
        # in the argument's dtype (a comparison's bool would make tanh(step(z)) float16),
        # and NaN stays NaN; np.heaviside branches on every element (6 ms on a million
        # random values, against 0.9 ms for this maximum and sign)
        call="np.sign(np.maximum({0}, 0))",
        out="np.sign(np.maximum({i}, 0, out={o}), out={o})",
    ),
    "relu": Form(
        call="np.maximum({0}, 0)",
        out="np.maximum({i}, 0, out={o})",
    ),
    "sign": Form(
        call="np.sign({0})",
        out="np.sign({i}, out={o})",
    ),
    "abs": Form(
        call="np.abs({0})",
        out="np.abs({i}, out={o})",
    ),
    "sqrt": Form(
        call="np.sqrt({0})",
        out="np.sqrt({i}, out={o})",
    ),
    "erf": Form(
        call="_np_erf({0})",
        out="_np_erf({i}, out={o})",
        helper="""
def _np_erf(z, out=None):
    \"\"\"erf(z) elementwise: the C library's, element by element (NumPy has no erf).\"\"\"
    import math

    z = np.asarray(z)
    dtype = z.dtype if z.dtype.kind == "f" else np.dtype(np.float64)
    value = np.asarray(np.frompyfunc(math.erf, 1, 1)(z), dtype=dtype)
    if out is None:
        return value
    np.copyto(out, value)
    return out
""",
    ),
}


#: The functions of :mod:`symbolic.reductions`: a reduction over the units (the last
#: axis) broadcast back to the units, max's tie-sharing adjoint, and maximum/minimum
#: (``{0}``, ``{1}`` their arguments).
REDUCTIONS: dict[str, Form] = {
    "unit_sum": Form(
        call="_np_unit_sum({0})",
        out="_np_unit_sum({i}, out={o})",
        helper="""
def _np_unit_sum(z, out=None):
    \"\"\"The sum over the units (the last axis), broadcast back to every unit.\"\"\"
    z = np.asarray(z)
    value = np.sum(z, axis=-1, keepdims=True)
    if out is None:
        return np.broadcast_to(value, z.shape)
    np.copyto(out, value)
    return out
""",
    ),
    "unit_mean": Form(
        call="_np_unit_mean({0})",
        out="_np_unit_mean({i}, out={o})",
        helper="""
def _np_unit_mean(z, out=None):
    \"\"\"The mean over the units (the last axis), broadcast back to every unit (a layer
    of no units has no mean to broadcast: nothing is computed).\"\"\"
    z = np.asarray(z)
    value = np.sum(z, axis=-1, keepdims=True) / z.dtype.type(max(z.shape[-1], 1))
    if out is None:
        return np.broadcast_to(value, z.shape)
    np.copyto(out, value)
    return out
""",
    ),
    "unit_max": Form(
        call="_np_unit_max({0})",
        out="_np_unit_max({i}, out={o})",
        helper="""
def _np_unit_max(z, out=None):
    \"\"\"The largest value over the units (the last axis), broadcast back (NaN where a
    unit is NaN; a layer of no units reduces to nothing).\"\"\"
    z = np.asarray(z)
    value = np.max(z, axis=-1, keepdims=True, initial=-np.inf)
    if out is None:
        return np.broadcast_to(value, z.shape)
    np.copyto(out, value)
    return out
""",
    ),
    "max_share": Form(
        call="_np_max_share({0})",
        out="_np_max_share({i}, out={o})",
        helper="""
def _np_max_share(z, out=None):
    \"\"\"1/k at the k units (last axis) where z reaches its maximum, 0 elsewhere: tied
    maxima share max's gradient equally. NaN on a row holding a NaN.\"\"\"
    z = np.asarray(z)
    top = np.equal(z, np.max(z, axis=-1, keepdims=True, initial=-np.inf)).astype(z.dtype)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = top / np.sum(top, axis=-1, keepdims=True)
    if out is None:
        return share
    np.copyto(out, share)
    return out
""",
    ),
    "unit_count": Form(
        call="_np_unit_count({0})",
        out="_np_unit_count({i}, out={o})",
        helper="""
def _np_unit_count(z, out=None):
    \"\"\"The number of units (the last axis) at every unit.\"\"\"
    z = np.asarray(z)
    if out is None:
        return np.full(z.shape, z.shape[-1], z.dtype)
    out.fill(z.shape[-1])
    return out
""",
    ),
    "maximum": Form(call="np.maximum({0}, {1})"),
    "minimum": Form(call="np.minimum({0}, {1})"),
}


def form(name: str) -> Form:
    """The NumPy code of a primitive or of a function of :mod:`symbolic.reductions`."""
    return FORMS[name] if name in FORMS else REDUCTIONS[name]


def helpers(names) -> list[str]:
    """The helper sources the NumPy code of ``names`` needs."""
    return [form(n).helper.strip() for n in sorted(names) if form(n).helper]


def namespace() -> dict:
    """What printed NumPy code needs to run outside a generated module (tests, the
    report): NumPy, math, and every primitive's helper."""
    import math

    out: dict = {"np": np, "math": math}
    for name in primitives.PRIMITIVES:
        if FORMS[name].helper:
            exec(FORMS[name].helper, out)  # noqa: S102 - our own table, not spec text
    for entry in REDUCTIONS.values():
        if entry.helper:
            exec(entry.helper, out)  # noqa: S102 - our own table, not spec text
    return out
