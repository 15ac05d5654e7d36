"""The primitives table: every elementwise function a spec may call, defined once.

Each primitive carries, in one place:

- its SymPy function (an opaque ``sympy.Function`` whose ``fdiff`` is the derivative
  below, so ``sympy.diff`` of any equation already speaks in primitive outputs);
- its derivative, written in terms of its output where that is possible
  (sigmoid' = s*(1-s), tanh' = 1-t**2, exp' = e), so the backward pass reuses cached
  forward values instead of recomputing transcendentals;
- its definition in SymPy's elementary functions (for exact verification);
- a NumPy reference used by numeric checks.

Its code lives with each backend (``symbolic/backends/<name>/primitives.py``, one entry
per primitive). A test walks :data:`PRIMITIVES` and every backend's table, so that a
primitive missing any entry fails.
"""

from __future__ import annotations

import math
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
        reference: A NumPy implementation used by numeric checks (independent of SymPy).
        note: What a reader should know (e.g. the value chosen at a kink).
    """

    name: str
    func: type[sp.Function]
    derivative: Callable[[sp.Expr, sp.Expr], sp.Expr]
    elementary: Callable[[sp.Expr], sp.Expr]
    reference: Callable[[np.ndarray], np.ndarray]
    note: str = ""


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
    reference: Callable[[np.ndarray], np.ndarray],
    note: str = "",
) -> Primitive:
    """Add a primitive to the table (one call per primitive; each backend's table then
    needs its code)."""
    if name in PRIMITIVES:
        raise ValueError(f"primitive {name!r} is already registered")
    prim = Primitive(name, _make_function(name), derivative, elementary, reference, note)
    PRIMITIVES[name] = prim
    return prim


def _sigmoid_ref(x):
    # accurate to the last bit in relative terms, also for x << 0 (no cancellation)
    x = np.asarray(x, dtype=float)
    with np.errstate(under="ignore"):  # exp(-1000) = 0 is the right answer
        e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


# One entry per primitive: name, derivative (out, arg), elementary definition, reference.
register(
    "sigmoid",
    lambda out, x: out * (1 - out),
    lambda x: 1 / (1 + sp.exp(-x)),
    reference=_sigmoid_ref,
)
register(
    "tanh",
    lambda out, x: 1 - out**2,
    sp.tanh,
    reference=np.tanh,
)
register(
    "exp",
    lambda out, x: out,
    sp.exp,
    reference=np.exp,
)
register(
    "log",
    lambda out, x: 1 / x,
    sp.log,
    reference=np.log,
)
register(
    "softplus",
    # softplus'(x) = sigmoid(x) = 1 - exp(-softplus(x)): written with the output.
    lambda out, x: 1 - PRIMITIVES["exp"].func(-out),
    lambda x: sp.log(1 + sp.exp(x)),
    reference=lambda x: np.logaddexp(0, x),
)
register(
    "step",
    lambda out, x: sp.Integer(0),
    lambda x: sp.Heaviside(x, 0),
    reference=lambda x: np.where(x > 0, 1.0, np.where(x <= 0, 0.0, np.nan)),
    note="step(0) = 0, step(NaN) = NaN; its derivative is taken as 0 everywhere (almost "
    "everywhere true)",
)
register(
    "relu",
    # relu(x) > 0 exactly when x > 0, so the derivative is written with the output.
    lambda out, x: PRIMITIVES["step"].func(out),
    lambda x: sp.Max(x, 0),
    reference=lambda x: np.maximum(x, 0),
    note="relu'(0) = 0 (the subgradient chosen at the kink, as PyTorch and JAX do)",
)


register(
    "sign",
    lambda out, x: sp.Integer(0),
    sp.sign,
    reference=np.sign,
    note="sign(0) = 0, sign(NaN) = NaN; its derivative is taken as 0 everywhere (almost "
    "everywhere true)",
)
register(
    "abs",
    lambda out, x: PRIMITIVES["sign"].func(x),
    sp.Abs,
    reference=np.abs,
    note="abs'(0) = 0 (the subgradient chosen at the kink, as PyTorch and JAX do)",
)
register(
    "sqrt",
    # written with the output: sqrt'(x) = 1/(2 sqrt(x)), infinite at 0
    lambda out, x: 1 / (2 * out),
    sp.sqrt,
    reference=np.sqrt,
    note="sqrt'(0) = inf; sqrt of a negative number is NaN",
)


def _erf_ref(x):
    # the C library's erf, element by element (NumPy has no erf)
    return np.vectorize(math.erf, otypes=[float])(np.asarray(x, dtype=float))


register(
    "erf",
    lambda out, x: 2 / sp.sqrt(sp.pi) * PRIMITIVES["exp"].func(-(x**2)),
    sp.erf,
    reference=_erf_ref,
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
