"""Functions across a layer's units, and elementwise functions of two arguments.

The primitives (:mod:`symbolic.primitives`) act on one neuron. This table holds what a
spec may call beyond them, with NumPy's names:

- **reductions over the layer's units**: ``sum(e)``, ``mean(e)`` and ``max(e)`` reduce
  ``e`` over the n units of one lane (one sample at one step) and broadcast the value
  back to every unit, so ``e - max(e)`` or ``exp(z)/sum(exp(z))`` read as in NumPy;
- ``maximum(a, b)`` and ``minimum(a, b)``: elementwise.

A reduction is not elementwise, so SymPy cannot differentiate it neuron by neuron. Its
derivative is given here as a Jacobian-vector product (:func:`adjoint`): the adjoint of
the argument from the adjoint ``dR`` of the result, itself written with reductions (a
dense n x n Jacobian is never formed):

- ``S = sum(e)``:  ``de_j = sum_i dS_i``;
- ``M = mean(e)``: ``de_j = mean_i dM_i``;
- ``M = max(e)``:  ``de_j = share_j * sum_i dM_i``, where ``share_j`` is 1/k when ``e_j``
  is one of the k units that reach the maximum, 0 elsewhere: **tied maxima share the
  gradient equally**, as ``torch.amax`` and ``jax.numpy.max`` do. ``share`` is the
  internal reduction :data:`MAX_SHARE` (specs cannot call it).

``maximum`` and ``minimum`` differentiate through ``sign``: d maximum(a, b)/da =
(1 + sign(a - b))/2, so at a tie each argument takes half the gradient (as torch and JAX
do). Each backend prints these functions from its table
(``symbolic/backends/<name>/primitives.py``, :data:`REDUCTIONS` there); a test walks
both tables.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import sympy as sp

from symbolic import primitives

SUM, MEAN, MAX = "unit_sum", "unit_mean", "unit_max"
#: The internal reduction of max's adjoint: 1/k at the k units reaching the maximum.
MAX_SHARE = "max_share"
#: The internal count of the layer's units (the sum of a constant adjoint: c*n).
COUNT = "unit_count"
MAXIMUM, MINIMUM = "maximum", "minimum"

#: Spec name -> function name, for reductions over the layer's units.
SPEC_REDUCTIONS = {"sum": SUM, "mean": MEAN, "max": MAX}
#: Spec names of the elementwise functions of two arguments.
SPEC_BINARY = (MAXIMUM, MINIMUM)


class Reduction(sp.Function):
    """A reduction over the layer's units, broadcast back (one argument, opaque).

    ``fdiff`` refuses: reverse mode uses :func:`adjoint`, never a per-neuron partial."""

    nargs = 1
    is_real = True

    def fdiff(self, argindex=1):
        raise TypeError(
            f"{type(self).__name__} reduces over the layer's units: it has no per-neuron "
            "partial (reverse mode uses symbolic.reductions.adjoint)"
        )


def _same_at_every_unit(expr: sp.Expr) -> bool:
    """True when ``expr`` is the same at every unit: numbers and reductions only (a
    reduction's value is broadcast to every unit)."""
    held = {call: sp.Dummy() for call in expr.atoms(Reduction)}
    return expr.xreplace(held).free_symbols <= set(held.values())


def _linear(cls: type, arg: sp.Expr) -> sp.Expr | None:
    """``sum(k*e) = k*sum(e)`` (and so for ``mean``) where ``k`` is the same at every unit:
    the factors that do not vary over the units move out of the reduction. Adjoints make
    such sums (the softmax cross-entropy's ``sum(y/sum(exp(...)))``); with the factor out,
    SymPy cancels what the max-shift added (``sum(exp(a - m))/sum(exp(a - m))``), and the
    code makes one pass over the units fewer for each."""
    if not isinstance(arg, sp.Mul):
        return None
    outside = [f for f in arg.args if _same_at_every_unit(f)]
    if not outside or len(outside) == len(arg.args):
        return None
    inside = [f for f in arg.args if not _same_at_every_unit(f)]
    return sp.Mul(*outside) * cls(sp.Mul(*inside))


class unit_sum(Reduction):  # noqa: N801 - the name printed in the stages' output
    """``sum(e)``: the sum over the layer's units (``sum(k*e) = k*sum(e)`` for a ``k``
    the same at every unit)."""

    @classmethod
    def eval(cls, arg):
        return _linear(cls, arg)


class unit_mean(Reduction):  # noqa: N801
    """``mean(e)``: the mean over the layer's units (of a constant: the constant;
    ``mean(k*e) = k*mean(e)`` for a ``k`` the same at every unit)."""

    @classmethod
    def eval(cls, arg):
        return arg if arg.is_number else _linear(cls, arg)


class unit_max(Reduction):  # noqa: N801
    """``max(e)``: the largest value over the layer's units (of a constant: the constant)."""

    @classmethod
    def eval(cls, arg):
        return arg if arg.is_number else None


class max_share(Reduction):  # noqa: N801
    """1/k at the k units where ``e`` reaches its maximum, 0 elsewhere (max's adjoint)."""


class unit_count(Reduction):  # noqa: N801
    """The number of the layer's units, at every unit of ``e`` (internal: the sum of a
    constant adjoint, ``sum(c) = c*n``, in a cost such as ``max(a)``)."""


def _sum_of(seed: sp.Expr, arg: sp.Expr) -> sp.Expr:
    """``sum(seed)`` over the units of ``arg``: a constant seed is summed as c*n."""
    return seed * unit_count(arg) if seed.is_number else unit_sum(seed)


class _Extremum(sp.Function):
    """``maximum`` or ``minimum`` of two arguments, elementwise; each argument takes
    half the gradient at a tie. A subclass names the numeric function (``_numeric``)
    and the sign with which ``a - b`` shares the gradient (``_side``)."""

    nargs = 2
    is_real = True
    _numeric = staticmethod(sp.Max)
    _side = 1

    @classmethod
    def eval(cls, a, b):
        if a == b:
            return a
        if a.is_number and b.is_number:
            return cls._numeric(a, b)
        return None

    def fdiff(self, argindex=1):
        a, b = self.args
        half = self._side * primitives.function("sign")(a - b) / 2
        return sp.S.Half + half if argindex == 1 else sp.S.Half - half


class maximum(_Extremum):  # noqa: N801
    """``maximum(a, b)``, elementwise; each argument takes half the gradient at a tie."""


class minimum(_Extremum):  # noqa: N801
    """``minimum(a, b)``, elementwise; each argument takes half the gradient at a tie."""

    _numeric = staticmethod(sp.Min)
    _side = -1


def _broadcast(value: np.ndarray, like: np.ndarray) -> np.ndarray:
    return np.broadcast_to(value, np.shape(like))


def _share_ref(e: np.ndarray) -> np.ndarray:
    e = np.asarray(e, dtype=float)
    top = (e == np.max(e, axis=-1, keepdims=True, initial=-np.inf)).astype(float)
    with np.errstate(invalid="ignore"):  # a NaN row: no unit is the maximum, NaN
        return top / np.sum(top, axis=-1, keepdims=True)


@dataclass(frozen=True)
class Function:
    """One entry of the table.

    Attributes:
        name: The SymPy function's name (what backends' tables are keyed by).
        func: The SymPy function class.
        reference: A NumPy implementation over the last axis (the units), independent of
            SymPy and of every backend: what the reference evaluator calls.
        adjoint: For a reduction, ``(call, dR) -> de``: the Jacobian-vector product.
        note: What a reader should know (the rule at ties).
    """

    name: str
    func: type[sp.Function]
    reference: Callable[..., np.ndarray]
    adjoint: Callable[[sp.Expr, sp.Expr], sp.Expr] | None = None
    note: str = ""


FUNCTIONS: dict[str, Function] = {
    f.name: f
    for f in (
        Function(
            SUM,
            unit_sum,
            lambda e: _broadcast(np.sum(e, axis=-1, keepdims=True), e),
            lambda call, d: _sum_of(d, call.args[0]),
        ),
        Function(
            MEAN,
            unit_mean,
            lambda e: _broadcast(np.sum(e, axis=-1, keepdims=True) / max(np.shape(e)[-1], 1), e),
            lambda call, d: unit_mean(d),
        ),
        Function(
            MAX,
            unit_max,
            lambda e: _broadcast(np.max(e, axis=-1, keepdims=True, initial=-np.inf), e),
            lambda call, d: max_share(call.args[0]) * _sum_of(d, call.args[0]),
            note="tied maxima share the gradient equally (torch.amax, jax.numpy.max)",
        ),
        Function(
            MAX_SHARE,
            max_share,
            _share_ref,
            # a step function of e: its derivative is 0 almost everywhere
            lambda call, d: sp.S.Zero,
            note="internal: the adjoint of max; its own derivative is taken as 0",
        ),
        Function(
            COUNT,
            unit_count,
            lambda e: np.full(np.shape(e), float(np.shape(e)[-1])),
            lambda call, d: sp.S.Zero,
            note="internal: the number of units (the sum of a constant adjoint)",
        ),
        Function(
            MAXIMUM,
            maximum,
            np.maximum,
            note="d/da = (1 + sign(a - b))/2: half the gradient to each argument at a tie",
        ),
        Function(
            MINIMUM,
            minimum,
            np.minimum,
            note="d/da = (1 - sign(a - b))/2: half the gradient to each argument at a tie",
        ),
    )
}


def name_of(expr: sp.Basic) -> str | None:
    """The function of this table ``expr`` applies, or None."""
    entry = FUNCTIONS.get(type(expr).__name__)
    return entry.name if entry is not None and isinstance(expr, entry.func) else None


def is_reduction(expr: sp.Basic) -> bool:
    """True when ``expr`` is a reduction over the layer's units."""
    return isinstance(expr, Reduction)


def has_reduction(expr: sp.Basic) -> bool:
    """True when ``expr`` contains a reduction over the layer's units."""
    return any(isinstance(node, Reduction) for node in sp.preorder_traversal(expr))


def used(expr: sp.Basic) -> set[str]:
    """The names of the functions of this table ``expr`` calls."""
    return {name for node in sp.preorder_traversal(expr) if (name := name_of(node))}


def adjoint(call: sp.Expr, seed: sp.Expr) -> sp.Expr:
    """The adjoint of a reduction's argument (per unit) from the adjoint ``seed`` of its
    result (per unit): a Jacobian-vector product written with reductions."""
    return FUNCTIONS[type(call).__name__].adjoint(call, seed)


def pullback(expr: sp.Expr, seed: sp.Expr, wrt: sp.Symbol) -> sp.Expr:
    """The adjoint of ``wrt`` (per unit) when ``expr`` (per unit) has adjoint ``seed``:
    reverse mode through an expression that may contain reductions.

    Elementwise parts are differentiated by SymPy; each outermost reduction is held as an
    opaque symbol, its adjoint found like any symbol's, then pulled back through its
    argument with :func:`adjoint`.
    """
    calls = [node for node in _outermost_reductions(expr)]
    if not calls:
        return seed * sp.diff(expr, wrt)
    held = {call: sp.Dummy(f"r{index}") for index, call in enumerate(calls)}
    back = {dummy: call for call, dummy in held.items()}
    opaque = expr.xreplace(held)
    total = (seed * sp.diff(opaque, wrt)).xreplace(back)
    for call, dummy in held.items():
        through = (seed * sp.diff(opaque, dummy)).xreplace(back)
        if through != 0:
            total += pullback(call.args[0], adjoint(call, through), wrt)
    return total


def _outermost_reductions(expr: sp.Basic) -> list[sp.Expr]:
    """The reductions of ``expr`` not inside another reduction, in a fixed order."""
    found: list[sp.Expr] = []
    stack = [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, Reduction):
            if node not in found:
                found.append(node)
            continue
        stack.extend(node.args)
    return sorted(found, key=sp.default_sort_key)
