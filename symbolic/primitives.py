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
    )
    PRIMITIVES[name] = prim
    return prim


def _sigmoid_ref(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


# One line per primitive: name, derivative (out, arg), elementary definition, backends.
register(
    "sigmoid",
    lambda out, x: out * (1 - out),
    lambda x: 1 / (1 + sp.exp(-x)),
    # 1/(1+exp(-x)) overflows at x = -1000; the tanh form is exact in floating point
    # terms and costs one transcendental.
    numpy="(0.5 + 0.5*np.tanh(0.5*({0})))",
    numba="_sigmoid({0})",
    reference=_sigmoid_ref,
    # Scalar code: one exp (a cheaper library call than tanh); exp(1000) = inf gives 0.
    numba_helper="""
@numba.njit(cache=True)
def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))
""",
)
register(
    "tanh",
    lambda out, x: 1 - out**2,
    sp.tanh,
    numpy="np.tanh({0})",
    numba="_tanh({0})",
    reference=np.tanh,
    # Scalar code: expm1 is a cheaper library call than tanh, and exact near 0.
    numba_helper="""
@numba.njit(cache=True)
def _tanh(x):
    e = math.expm1(-2.0 * abs(x))
    t = -e / (2.0 + e)
    return t if x >= 0 else -t
""",
)
register(
    "exp",
    lambda out, x: out,
    sp.exp,
    numpy="np.exp({0})",
    numba="math.exp({0})",
    reference=np.exp,
)
register(
    "log",
    lambda out, x: 1 / x,
    sp.log,
    numpy="np.log({0})",
    numba="math.log({0})",
    reference=np.log,
)
register(
    "softplus",
    # softplus'(x) = sigmoid(x) = 1 - exp(-softplus(x)): written with the output.
    lambda out, x: 1 - PRIMITIVES["exp"].func(-out),
    lambda x: sp.log(1 + sp.exp(x)),
    numpy="np.logaddexp(0, {0})",
    numba="(max({0}, 0.0) + math.log1p(math.exp(-abs({0}))))",
    reference=lambda x: np.logaddexp(0, x),
)
register(
    "step",
    lambda out, x: sp.Integer(0),
    lambda x: sp.Heaviside(x, 0),
    numpy="(({0}) > 0)",
    numba="(1.0 if ({0}) > 0 else 0.0)",
    reference=lambda x: (x > 0).astype(float),
    note="step(0) = 0; its derivative is taken as 0 everywhere (almost everywhere true)",
)
register(
    "relu",
    # relu(x) > 0 exactly when x > 0, so the derivative is written with the output.
    lambda out, x: PRIMITIVES["step"].func(out),
    lambda x: sp.Max(x, 0),
    numpy="np.maximum({0}, 0)",
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


def to_elementary(expr: sp.Expr) -> sp.Expr:
    """Rewrite every primitive call in ``expr`` in SymPy's elementary functions."""
    return expr.replace(
        is_primitive_call,
        lambda call: PRIMITIVES[type(call).__name__].elementary(to_elementary(call.args[0])),
    )


def numeric_namespace() -> dict[str, Callable]:
    """Name -> NumPy reference, for evaluating expressions numerically."""
    return {name: prim.reference for name, prim in PRIMITIVES.items()}


def used(expr: sp.Expr) -> set[str]:
    """The names of the primitives ``expr`` calls."""
    return {type(c).__name__ for c in sp.preorder_traversal(expr) if is_primitive_call(c)}
