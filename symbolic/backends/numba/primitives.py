"""The Numba backend's code of every primitive (scalar code inside a compiled loop): one
entry per primitive.

A primitive added to :data:`symbolic.primitives.PRIMITIVES` needs one entry here (a test
walks both tables).
"""

from __future__ import annotations

from dataclasses import dataclass

from symbolic import primitives
from symbolic.backends.numpy import primitives as numpy_primitives


@dataclass(frozen=True)
class Form:
    """A primitive in Numba scalar code.

    Attributes:
        call: The scalar code, ``{0}`` the printed argument.
        helper: Source of a compiled helper the code calls, emitted once into each
            module that uses the primitive.
        requires: Primitives whose helpers this helper calls.
        vectorizes: False where the code calls the C library's scalar function (LLVM
            cannot vectorize a loop around it; NumPy's whole-array ufunc is SIMD code).
    """

    call: str
    helper: str = ""
    requires: tuple[str, ...] = ()
    vectorizes: bool = True


FORMS: dict[str, Form] = {
    "sigmoid": Form(
        call="_sigmoid({0})",
        # Scalar code for a compiled loop: with the polynomial _exp below, LLVM vectorizes it.
        # e^-|x| never overflows, so a large negative x keeps its tiny value (e^x / (1 + e^x))
        # down to the subnormals. The float32 ones keep a float32 argument in float32 (a
        # float64 one promotes them exactly).
        helper="""
@_jit(error_model="numpy", fastmath={"contract"})
def _sigmoid(x):
    e = _exp(-abs(x))
    return (np.float32(1.0) if x >= 0 else e) / (np.float32(1.0) + e)
""",
        requires=("exp",),
    ),
    "tanh": Form(
        call="_tanh({0})",
        # Cephes' forms: near 0 a rational (float64) or a polynomial (float32) in x*x, exact
        # to about 1 ulp with no cancellation; beyond, 1 - 2/(e^2|x| + 1). Both branches are
        # computed and one selected, so the loop vectorizes.
        helper="""
def _tanh64(x):
    a = abs(x)
    z = x * x
    p = (-9.64399179425052238628e-1 * z - 9.92877231001918586564e1) * z
    p = p - 1.61468768441708447952e3
    q = ((z + 1.12811678491632931402e2) * z + 2.23548839060100448583e3) * z
    q = q + 4.84406305325125486048e3
    small = x + x * z * p / q
    s = _exp(-2.0 * a)
    large = (1.0 - s) / (1.0 + s)
    large = large if x >= 0 else -large
    return small if a < 0.625 else large


def _tanh32(x):
    a = abs(x)
    z = x * x
    p = np.float32(-5.70498872745e-3) * z + np.float32(2.06390887954e-2)
    p = p * z + np.float32(-5.37397155531e-2)
    p = p * z + np.float32(1.33314422036e-1)
    p = p * z + np.float32(-3.33332819422e-1)
    small = p * z * x + x
    s = _exp(np.float32(-2.0) * a)
    large = (np.float32(1.0) - s) / (np.float32(1.0) + s)
    large = large if x >= np.float32(0.0) else -large
    return small if a < np.float32(0.625) else large


def _tanh(x):  # compiled code takes the overload below, in x's precision
    return math.tanh(x)


@numba.extending.overload(_tanh, jit_options={"error_model": "numpy", "fastmath": {"contract"}})
def _tanh_typed(x):
    return _tanh32 if x == numba.types.float32 else _tanh64
""",
        requires=("exp",),
    ),
    "exp": Form(
        call="_exp({0})",
        # exp(x) = 2**k * exp(r), |r| <= ln(2)/2, with exp(r) by a polynomial and 2**k built
        # from its bits: pure arithmetic, so a compiled loop over lanes vectorizes (math.exp
        # is a library call per element). float64: the degree-13 Taylor polynomial (error
        # below 1e-17) by Estrin's scheme, as 2 + 2r + r*r*q(r): a loop of sigmoids and
        # tanhs waits on the chain of dependent operations (the out-of-order core holds too
        # few iterations to hide it), and that chain is 6 long where Horner's rule makes it
        # 13. The polynomial is doubled (its coefficients times 2, exactly) and 2**k built
        # as 2 * 2**(k - 1), so that k = 1024 has bits, with no multiply after the
        # polynomial. Measured on one core, sigmoid and tanh over 8192 float64 values in
        # the cache: 1.53-1.68 ns a value by Estrin's scheme against 1.72-1.96 by Horner's
        # rule, then 1.53-1.55 against 1.57-1.63 with the polynomial doubled (the same
        # results but for 1 ulp near the smallest normal, where one rounding replaces two);
        # largest relative error 0.71 eps against 0.61 by Horner's rule (3 million values,
        # against long double). float32 gained nothing from Estrin's scheme (bound by
        # throughput, 16 lanes to a vector): Horner's rule there.
        # float32: Cephes' degree-7 form, in float32 (about 1 ulp), 16 lanes
        # to a vector where float64 has 8; 2**k as two factors, so results in float32's
        # subnormal range are kept.
        helper="""
@numba.extending.intrinsic
def _float_from_bits(typingctx, bits):  # the float32 or float64 whose bits are an int32's or int64's
    width = numba.types.float32 if bits == numba.types.int32 else numba.types.float64

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(width))

    return width(numba.types.int32 if width == numba.types.float32 else numba.types.int64), codegen


def _exp64(x):
    y = min(max(x, -708.0), 709.78)
    k = math.floor(y * 1.4426950408889634 + 0.5)
    r = (y - k * 0.6931471803691238) - k * 1.9082149292705877e-10
    r2 = r * r
    r4 = r2 * r2
    a0 = 1.0 + 0.3333333333333333 * r
    a1 = 0.08333333333333333 + 0.016666666666666666 * r
    a2 = 0.002777777777777778 + 0.0003968253968253968 * r
    a3 = 4.96031746031746e-05 + 5.5114638447971785e-06 * r
    a4 = 5.511463844797178e-07 + 5.010421677088344e-08 * r
    a5 = 4.17535139757362e-09 + 3.2118087673643227e-10 * r
    q = (a0 + a1 * r2 + (a2 + a3 * r2) * r4) + (a4 + a5 * r2) * (r4 * r4)
    p = 2.0 + ((r + r) + r2 * q)  # 2 * e^r: 2**k as 2 * 2**(k - 1), so k = 1024 is built
    e = p * _float_from_bits((numba.int64(k) + 1022) << 52)
    e = 0.0 if x <= -708.0 else e
    e = math.inf if x >= 709.78 else e
    return e if x == x else x  # NaN stays NaN


def _exp32(x):
    y = min(max(x, np.float32(-103.972)), np.float32(88.7228))
    k = np.floor(y * np.float32(1.44269504) + np.float32(0.5))
    r = y - k * np.float32(0.693359375)
    r = r - k * np.float32(-2.12194440e-4)
    p = np.float32(1.9875691500e-4)
    p = p * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    p = p * (r * r) + r + np.float32(1.0)
    n = numba.int32(k)
    half = n >> 1
    e = p * _float_from_bits(numba.int32((half + 127) << 23))
    e = e * _float_from_bits(numba.int32((n - half + 127) << 23))
    e = np.float32(0.0) if x < np.float32(-103.972) else e
    e = np.float32(math.inf) if x > np.float32(88.7228) else e
    return e if x == x else x  # NaN stays NaN


def _exp(x):  # compiled code takes the overload below, in x's precision
    return math.exp(x)


@numba.extending.overload(_exp, jit_options={"error_model": "numpy", "fastmath": {"contract"}})
def _exp_typed(x):
    return _exp32 if x == numba.types.float32 else _exp64
""",
    ),
    "log": Form(
        call="_log({0})",
        # log(x) = k*ln(2) + log(1 + f), x = 2**k * (1 + f) with sqrt(2)/2 < 1 + f < sqrt(2)
        # read from x's bits, and log(1 + f) = f - f*f/2 + s*(f*f/2 + R(s*s)), s = f/(2 + f),
        # R the polynomial of fdlibm's log (float64) and logf (float32): within 1 ulp,
        # subnormals scaled first. Pure arithmetic, so a loop vectorizes: on 3.3 million
        # values, one core, 4.0 ms float64 and 2.2 float32 against 12-14 and 8.7 for
        # math.log (a C call per element; NumPy's SIMD log: 2.9 and 1.3).
        helper="""
@numba.extending.intrinsic
def _bits_of_float(typingctx, value):  # the int32 or int64 with a float32's or float64's bits
    width = numba.types.int32 if value == numba.types.float32 else numba.types.int64

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(width))

    return width(value), codegen


def _log64(x):
    tiny = x < 2.2250738585072014e-308
    bits = _bits_of_float(x * 18014398509481984.0 if tiny else x)
    k = ((bits >> 52) & 0x7FF) - (1077 if tiny else 1023)
    m = _float_from_bits((bits & 0x000FFFFFFFFFFFFF) | 0x3FF0000000000000)
    big = m > 1.4142135623730951
    m = m * 0.5 if big else m
    k = k + 1 if big else k
    f = m - 1.0
    s = f / (2.0 + f)
    z = s * s
    w = z * z
    t1 = w * (3.999999999940941908e-01 + w * (2.222219843214978396e-01 + w * 1.531383769920937332e-01))
    t2 = w * (2.857142874366239149e-01 + w * (1.818357216161805012e-01 + w * 1.479819860511658591e-01))
    r = z * (6.666666666666735130e-01 + t2) + t1
    h = 0.5 * f * f
    dk = np.float64(k)
    out = dk * 6.93147180369123816490e-01 - ((h - (s * (h + r) + dk * 1.90821492927058770002e-10)) - f)
    out = -math.inf if x == 0.0 else out
    out = math.inf if x == math.inf else out
    out = math.nan if x < 0.0 else out
    return out if x == x else x  # NaN stays NaN


def _log32(x):
    tiny = x < np.float32(1.17549435e-38)
    bits = _bits_of_float(x * np.float32(33554432.0) if tiny else x)
    k = ((bits >> 23) & 0xFF) - (152 if tiny else 127)
    m = _float_from_bits(numba.int32((bits & 0x007FFFFF) | 0x3F800000))
    big = m > np.float32(1.41421356)
    m = m * np.float32(0.5) if big else m
    k = k + 1 if big else k
    f = m - np.float32(1.0)
    s = f / (np.float32(2.0) + f)
    z = s * s
    w = z * z
    t1 = w * (np.float32(0.40000972152) + w * np.float32(0.24279078841))
    r = z * (np.float32(0.66666662693) + w * np.float32(0.28498786688)) + t1
    h = np.float32(0.5) * f * f
    dk = np.float32(k)
    out = dk * np.float32(6.9313812256e-01) - ((h - (s * (h + r) + dk * np.float32(9.0580006145e-06))) - f)
    out = np.float32(-math.inf) if x == np.float32(0.0) else out
    out = np.float32(math.inf) if x == np.float32(math.inf) else out
    out = np.float32(math.nan) if x < np.float32(0.0) else out
    return out if x == x else x  # NaN stays NaN


def _log(x):  # compiled code takes the overload below, in x's precision
    return math.log(x)


@numba.extending.overload(_log, jit_options={"error_model": "numpy", "fastmath": {"contract"}})
def _log_typed(x):
    return _log32 if x == numba.types.float32 else _log64
""",
        requires=("exp",),  # _float_from_bits
    ),
    "softplus": Form(
        call="_softplus({0})",
        # max(x, 0) + log1p(e^-|x|), log1p(e) as log(u)*e/(u - 1) with u = 1 + e (exact
        # where u rounds to 1: e itself), from the vectorizable exp and log above
        # (inlined in Numba's IR: as a plain compiled helper, one that calls both exp and log
        # stayed a call in the loop, where either alone was inlined, and the loop did not
        # vectorize: 26 ms on a million values against 3.1)
        helper="""
@_jit(error_model="numpy", fastmath={"contract"}, inline="always")
def _softplus(x):
    e = _exp(-abs(x))
    u = np.float32(1.0) + e
    d = u - np.float32(1.0)
    tail = _log(u) * (e / (d if d != 0 else np.float32(1.0)))  # both sides: no branch
    tail = e if d == 0 else tail
    return max(x, np.float32(0.0)) + tail
""",
        requires=("exp", "log"),
    ),
    "step": Form(
        call="_step({0})",
        helper="""
@_jit(error_model="numpy")
def _step(x):
    return 1.0 if x > 0 else (0.0 if x <= 0 else x)
""",
    ),
    "relu": Form(
        call="max({0}, 0.0)",
    ),
    "sign": Form(
        call="_sign({0})",
        helper="""
@_jit(error_model="numpy")
def _sign(x):
    return 1.0 if x > 0 else (-1.0 if x < 0 else x * 0.0)
""",
    ),
    "abs": Form(
        call="abs({0})",
    ),
    "sqrt": Form(
        call="math.sqrt({0})",
    ),
    "erf": Form(
        call="math.erf({0})",
        vectorizes=False,
    ),
}


#: The functions of :mod:`symbolic.reductions`. maximum and minimum in scalar code
#: (``{0}``, ``{1}`` their arguments; NaN propagates from either, as in np.maximum). The
#: reductions over the units are whole-array NumPy code (their helpers are the NumPy
#: module's): the layout runs them between compiled kernels, never inside one.
REDUCTIONS: dict[str, Form] = {
    **{
        name: Form(call=numpy_primitives.REDUCTIONS[name].call)
        for name in ("unit_sum", "unit_mean", "unit_max", "max_share", "unit_count")
    },
    "maximum": Form(
        call="_maximum({0}, {1})",
        helper="""
@_jit(error_model="numpy")
def _maximum(a, b):
    return a if a > b or a != a else b
""",
    ),
    "minimum": Form(
        call="_minimum({0}, {1})",
        helper="""
@_jit(error_model="numpy")
def _minimum(a, b):
    return a if a < b or a != a else b
""",
    ),
}


def helpers(names) -> list[str]:
    """The helper sources the Numba code of ``names`` needs, dependencies first."""
    ordered: list[str] = []

    def visit(name: str) -> None:
        form = FORMS[name] if name in FORMS else REDUCTIONS[name]
        for dep in form.requires:
            visit(dep)
        if form.helper and form.helper.strip() not in ordered:
            ordered.append(form.helper.strip())

    for name in sorted(names):
        visit(name)
    return ordered


def namespace() -> dict:
    """What printed Numba code needs to run outside a generated module (tests): the NumPy
    namespace and every primitive's compiled helper (without an on-disk cache: exec'd
    code has no file for one)."""
    import numba
    import numba.extending  # noqa: F401 - helpers use numba.extending.intrinsic

    out = numpy_primitives.namespace()
    out["numba"] = numba
    out["_jit"] = lambda **options: numba.njit(**options)
    for source in helpers(primitives.PRIMITIVES):
        exec(source, out)  # noqa: S102 - our own table, not spec text
    return out
