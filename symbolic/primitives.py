"""The primitives table: every elementwise function a spec may call, defined once.

Each primitive carries, in one place:

- its SymPy function (an opaque ``sympy.Function`` whose ``fdiff`` is the derivative
  below, so ``sympy.diff`` of any equation already speaks in primitive outputs);
- its derivative, written in terms of its output where that is possible
  (sigmoid' = s*(1-s), tanh' = 1-t**2, exp' = e), so the backward pass reuses cached
  forward values instead of recomputing transcendentals;
- its definition in SymPy's elementary functions (for exact verification);
- its code for each backend (NumPy arrays, Numba scalars) and a NumPy reference used by
  numeric checks.

A test walks :data:`PRIMITIVES` so that a primitive missing any entry fails.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import sympy as sp


@dataclass(frozen=True)
class Primitive:
    """One elementwise primitive.

    Attributes:
        name: The name used in spec equations and in generated code comments.
        func: The SymPy function class (opaque; differentiates through ``derivative``).
        derivative: ``(out, arg) -> expr``: the derivative at ``arg``, where ``out`` is the
            primitive applied to ``arg`` (write it with ``out`` wherever possible).
        elementary: ``arg -> expr``: the definition in SymPy's elementary functions.
        numpy: Code template for the NumPy backend, ``{0}`` is the printed argument.
        numba: Code template for the Numba backend (scalar code).
        reference: A NumPy implementation used by numeric checks (independent of SymPy).
        note: What a reader should know (e.g. the value chosen at a kink).
        numba_helper: Source of a compiled helper the Numba code calls, if any (emitted
            once into each module that uses the primitive).
        numpy_helper: Source of a helper function the NumPy code calls, if any (emitted
            once into each NumPy module that uses the primitive).
        numba_requires: Primitives whose helpers this helper calls.
        numpy_out: The NumPy call writing the result into a buffer: ``{i}`` the input,
            ``{o}`` the output (they may be the same array). Empty when the primitive is
            rewritten instead.
        numpy_rewrite: ``(z, scale) -> expr``: the primitive in other primitives, as the
            NumPy code computes it; ``scale(c, z)`` builds c*z (the caller decides
            whether to distribute c over a sum).
    """

    name: str
    func: type[sp.Function]
    derivative: Callable[[sp.Expr, sp.Expr], sp.Expr]
    elementary: Callable[[sp.Expr], sp.Expr]
    numpy: str
    numba: str
    reference: Callable[[np.ndarray], np.ndarray]
    note: str = ""
    numba_helper: str = ""
    numba_requires: tuple[str, ...] = ()
    numpy_out: str = ""
    numpy_rewrite: Callable[[sp.Expr, Callable], sp.Expr] | None = None
    numpy_helper: str = ""


PRIMITIVES: dict[str, Primitive] = {}


def _make_function(name: str) -> type[sp.Function]:
    def fdiff(self, argindex=1):
        if argindex != 1:
            raise sp.ArgumentIndexError(self, argindex)
        return PRIMITIVES[name].derivative(self, self.args[0])

    def _eval_rewrite_as_elementary(self, arg, **kwargs):
        return PRIMITIVES[name].elementary(arg)

    def _eval_evalf(self, prec):
        arg = self.args[0]
        if arg.is_number:
            return PRIMITIVES[name].elementary(arg)._eval_evalf(prec)
        return None

    return type(
        name,
        (sp.Function,),
        {
            "nargs": 1,
            "fdiff": fdiff,
            "_eval_rewrite_as_elementary": _eval_rewrite_as_elementary,
            "_eval_evalf": _eval_evalf,
            "is_real": True,
            "__module__": __name__,
        },
    )


def register(
    name: str,
    derivative: Callable[[sp.Expr, sp.Expr], sp.Expr],
    elementary: Callable[[sp.Expr], sp.Expr],
    numpy: str,
    numba: str,
    reference: Callable[[np.ndarray], np.ndarray],
    note: str = "",
    numba_helper: str = "",
    numba_requires: tuple[str, ...] = (),
    numpy_out: str = "",
    numpy_rewrite: Callable[[sp.Expr, Callable], sp.Expr] | None = None,
    numpy_helper: str = "",
) -> Primitive:
    """Add a primitive to the table (one call per primitive, nothing else to edit)."""
    if name in PRIMITIVES:
        raise ValueError(f"primitive {name!r} is already registered")
    prim = Primitive(
        name,
        _make_function(name),
        derivative,
        elementary,
        numpy,
        numba,
        reference,
        note,
        numba_helper,
        numba_requires,
        numpy_out,
        numpy_rewrite,
        numpy_helper,
    )
    PRIMITIVES[name] = prim
    return prim


def _sigmoid_ref(x):
    # accurate to the last bit in relative terms, also for x << 0 (no cancellation)
    x = np.asarray(x, dtype=float)
    with np.errstate(under="ignore"):  # exp(-1000) = 0 is the right answer
        e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


# One line per primitive: name, derivative (out, arg), elementary definition, backends.
register(
    "sigmoid",
    lambda out, x: out * (1 - out),
    lambda x: 1 / (1 + sp.exp(-x)),
    # Accurate to a few ulp for every z: e^-|z| cannot overflow, and for z < 0 the value
    # is e^z/(1 + e^z), free of the cancellation of (1 + tanh(z/2))/2 (which is 0 for
    # z <= -38 in float64). Seven ufunc calls where the tanh form took four.
    numpy="_np_sigmoid({0})",
    numpy_out="_np_sigmoid({i}, out={o})",
    numpy_helper="""
def _np_sigmoid(z, out=None):
    \"\"\"1/(1 + e^-z), accurate to a few ulp for every z (no overflow, no cancellation).\"\"\"
    z = np.asarray(z)
    if z.ndim == 0:  # a constant
        e = np.exp(-np.abs(z))
        return np.where(z >= 0, 1.0, e) / (1.0 + e)
    positive = np.greater_equal(z, 0)
    e = np.abs(z)
    np.negative(e, out=e)
    np.exp(e, out=e)
    out = np.empty_like(e) if out is None else out
    np.add(e, 1.0, out=out)
    np.copyto(e, 1.0, where=positive)
    return np.divide(e, out, out=out)
""",
    numba="_sigmoid({0})",
    reference=_sigmoid_ref,
    # Scalar code for a compiled loop: with the polynomial _exp below, LLVM vectorizes it.
    numba_helper="""
@_jit(error_model="numpy")
def _sigmoid(x):
    return 1.0 / (1.0 + _exp(-x))
""",
    numba_requires=("exp",),
)
register(
    "tanh",
    lambda out, x: 1 - out**2,
    sp.tanh,
    numpy="np.tanh({0})",
    numpy_out="np.tanh({i}, out={o})",
    numba="_tanh({0})",
    reference=np.tanh,
    # Cephes' rational form near 0 (exact to 1 ulp, no cancellation), 1 - 2/(e^2|x| + 1)
    # beyond; both branches are computed and one selected, so the loop vectorizes.
    numba_helper="""
@_jit(error_model="numpy")
def _tanh(x):
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
""",
    numba_requires=("exp",),
)
register(
    "exp",
    lambda out, x: out,
    sp.exp,
    numpy="np.exp({0})",
    numpy_out="np.exp({i}, out={o})",
    numba="_exp({0})",
    reference=np.exp,
    # exp(x) = 2**k * exp(r), |r| <= ln(2)/2, exp(r) by its degree-13 Taylor polynomial
    # (error below 1e-17), 2**k built from its bits: pure arithmetic, so a compiled loop
    # over lanes vectorizes (math.exp is a library call per element).
    numba_helper="""
@numba.extending.intrinsic
def _float_from_bits(typingctx, bits):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(numba.types.float64))

    return numba.types.float64(numba.types.int64), codegen


@_jit(error_model="numpy")
def _exp(x):
    y = min(max(x, -708.0), 709.78)
    k = math.floor(y * 1.4426950408889634 + 0.5)
    r = (y - k * 0.6931471803691238) - k * 1.9082149292705877e-10
    p = 1.6059043836821613e-10
    p = p * r + 2.08767569878681e-09
    p = p * r + 2.505210838544172e-08
    p = p * r + 2.755731922398589e-07
    p = p * r + 2.7557319223985893e-06
    p = p * r + 2.48015873015873e-05
    p = p * r + 0.0001984126984126984
    p = p * r + 0.001388888888888889
    p = p * r + 0.008333333333333333
    p = p * r + 0.041666666666666664
    p = p * r + 0.16666666666666666
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    e = p * _float_from_bits((numba.int64(k) + 1022) << 52) * 2.0
    e = 0.0 if x <= -708.0 else e
    e = math.inf if x >= 709.78 else e
    return e if x == x else x  # NaN stays NaN
""",
)
register(
    "log",
    lambda out, x: 1 / x,
    sp.log,
    numpy="np.log({0})",
    numpy_out="np.log({i}, out={o})",
    numba="math.log({0})",
    reference=np.log,
)
register(
    "softplus",
    # softplus'(x) = sigmoid(x) = 1 - exp(-softplus(x)): written with the output.
    lambda out, x: 1 - PRIMITIVES["exp"].func(-out),
    lambda x: sp.log(1 + sp.exp(x)),
    numpy="np.logaddexp(0, {0})",
    numpy_out="np.logaddexp(0, {i}, out={o})",
    numba="(max({0}, 0.0) + math.log1p(math.exp(-abs({0}))))",
    reference=lambda x: np.logaddexp(0, x),
)
register(
    "step",
    lambda out, x: sp.Integer(0),
    lambda x: sp.Heaviside(x, 0),
    # in the argument's dtype (a comparison's bool would make tanh(step(z)) float16),
    # and NaN stays NaN
    numpy="np.heaviside({0}, 0.0)",
    numpy_out="np.heaviside({i}, 0.0, out={o})",
    numba="_step({0})",
    reference=lambda x: np.where(x > 0, 1.0, np.where(x <= 0, 0.0, np.nan)),
    note="step(0) = 0, step(NaN) = NaN; its derivative is taken as 0 everywhere (almost "
    "everywhere true)",
    numba_helper="""
@_jit(error_model="numpy")
def _step(x):
    return 1.0 if x > 0 else (0.0 if x <= 0 else x)
""",
)
register(
    "relu",
    # relu(x) > 0 exactly when x > 0, so the derivative is written with the output.
    lambda out, x: PRIMITIVES["step"].func(out),
    lambda x: sp.Max(x, 0),
    numpy="np.maximum({0}, 0)",
    numpy_out="np.maximum({i}, 0, out={o})",
    numba="max({0}, 0.0)",
    reference=lambda x: np.maximum(x, 0),
    note="relu'(0) = 0 (the subgradient chosen at the kink, as PyTorch and JAX do)",
)


def function(name: str) -> type[sp.Function]:
    """The SymPy function class of primitive ``name``."""
    return PRIMITIVES[name].func


def prime(name: str, arg: sp.Expr) -> sp.Expr:
    """The derivative of primitive ``name`` at ``arg``, as ``<name>_prime(arg)`` means."""
    prim = PRIMITIVES[name]
    return prim.derivative(prim.func(arg), arg)


def is_primitive_call(expr: sp.Basic) -> bool:
    """True when ``expr`` is an application of a registered primitive."""
    return (
        isinstance(expr, sp.Function)
        and type(expr).__name__ in PRIMITIVES
        and (PRIMITIVES[type(expr).__name__].func is type(expr))
    )


def stabilize(expr: sp.Expr) -> sp.Expr:
    """``expr`` with compositions of primitives that lose precision written in stable
    forms, by exact identities: log(sigmoid(u)) = -softplus(-u) and log(1 - sigmoid(u))
    = -softplus(u) (a sigmoid that rounds to 0 or 1 would give log(0) = -inf, and its
    gradient inf or NaN, for finite u)."""
    sigmoid, softplus, log = (PRIMITIVES[n].func for n in ("sigmoid", "softplus", "log"))

    def stable(call: sp.Basic) -> sp.Expr | None:
        arg = call.args[0]
        if isinstance(arg, sigmoid):
            return -softplus(-arg.args[0])
        if arg.is_Add and len(arg.args) == 2 and sp.S.One in arg.args:
            other = arg.args[0] if arg.args[1] == sp.S.One else arg.args[1]
            coeff, rest = other.as_coeff_Mul()
            if coeff == -1 and isinstance(rest, sigmoid):
                return -softplus(rest.args[0])
        return None

    return expr.replace(lambda e: isinstance(e, log) and stable(e) is not None, lambda e: stable(e))


def to_elementary(expr: sp.Expr) -> sp.Expr:
    """Rewrite every primitive call in ``expr`` in SymPy's elementary functions."""
    return expr.replace(
        is_primitive_call,
        lambda call: PRIMITIVES[type(call).__name__].elementary(to_elementary(call.args[0])),
    )


def numeric_namespace() -> dict[str, Callable]:
    """Name -> NumPy reference, for evaluating expressions numerically."""
    return {name: prim.reference for name, prim in PRIMITIVES.items()}


def name_of(expr: sp.Basic) -> str | None:
    """The primitive ``expr`` applies, or None. SymPy's own exp, log and tanh (from diff
    of a power) count as the primitive of that name: they print as it."""
    if isinstance(expr, sp.Function) and type(expr).__name__ in PRIMITIVES:
        return type(expr).__name__
    return None


def used(expr: sp.Expr) -> set[str]:
    """The names of the primitives ``expr`` calls."""
    return {name for c in sp.preorder_traversal(expr) if (name := name_of(c))}


def numba_helpers(names) -> list[str]:
    """The helper sources the Numba code of ``names`` needs, dependencies first."""
    ordered: list[str] = []

    def visit(name: str) -> None:
        prim = PRIMITIVES[name]
        for dep in prim.numba_requires:
            visit(dep)
        if prim.numba_helper and prim.numba_helper.strip() not in ordered:
            ordered.append(prim.numba_helper.strip())

    for name in sorted(names):
        visit(name)
    return ordered


def code_namespace(backend: str) -> dict:
    """What printed code of ``backend`` needs to run outside a generated module (tests,
    the report): NumPy, math, and every primitive's helper (Numba's compiled without an
    on-disk cache: exec'd code has no file for one)."""
    import math

    namespace: dict = {"np": np, "math": math}
    for prim in PRIMITIVES.values():
        if prim.numpy_helper:
            exec(prim.numpy_helper, namespace)  # noqa: S102 - our own table, not spec text
    if backend == "numba":
        import numba
        import numba.extending  # noqa: F401 - helpers use numba.extending.intrinsic

        namespace["numba"] = numba
        namespace["_jit"] = lambda **options: numba.njit(**options)
        for source in numba_helpers(PRIMITIVES):
            exec(source, namespace)  # noqa: S102
    return namespace


def numpy_helpers(names) -> list[str]:
    """The helper sources the NumPy code of ``names`` needs."""
    return [PRIMITIVES[n].numpy_helper.strip() for n in sorted(names) if PRIMITIVES[n].numpy_helper]
