"""Concrete unrolled models, built straight from the paper's definitions.

These models are the oracle against which the formula engine
(:mod:`symbolic.verify.engine`) checks every derivative a paper states; the MLP and the
GRN here are those of :mod:`symbolic.verify.moraes2020`, and another paper's models are
built from the same parts (a shape, its equations, a :class:`NumericModel` subclass,
:class:`Unrolled`). They know nothing of any derivation engine: each is the paper's
forward equations written out for one concrete size, neuron by neuron (and, for the
gated recurrent neuron, time step by time step), in two independent forms.

- :class:`SymbolicModel` (SymPy). Every parameter, input, target and intermediate has
  a symbol; every intermediate has its equation in the symbols of the values it reads
  (one line of the paper) and its composed expression in the leaves
  (:meth:`SymbolicModel.expr`). A *local* partial is ``sympy.diff`` of one equation. A
  *total* derivative d(of)/d(wrt) adds a perturbation ``eps`` to ``wrt`` (to the value
  its consumers read, optionally only some consumers), carries the perturbation through
  the unrolled model and differentiates at ``eps = 0``.
- :class:`NumericModel` (plain NumPy, no SymPy): the same forward pass written again
  with Python loops and the primitives' NumPy references, with central finite
  differences (step 1e-6, float64) for the same total derivatives.

**Exactness.** Total derivatives are returned as expanded polynomials in the model's
symbols, with every intermediate value (z, a, Zu, Zc, Gamma, ac, ...) an opaque atom:
a primitive call such as ``sigmoid(z)`` is written as the symbol of the node that
holds it (``a``), and ``sigmoid'(z)`` as ``a*(1 - a)`` (the primitive's own
derivative rule, itself re-derived from the elementary definition by
:func:`check_primitive_rules`). Two sides built from the same atoms are equal when
their difference expands to zero. The expansion is :class:`AtomPoly`, a sparse
polynomial with integer coefficients (the canonical form ``sympy.expand`` reaches, two
orders of magnitude faster on these sizes; tests compare the two), and an identity
between polynomials in independent atoms is a fortiori an identity of the model.
:meth:`SymbolicModel.total_expr` keeps the literal definition (compose the whole model
with ``eps``, ``sympy.diff``, ``eps = 0``) so that tests can show that both agree.

**Keys.** Values are named by tuples in the paper's notation:

- MLP (paper lines 11-15): ``("W", l, i, j)`` is W^l_{ij} (into neuron i of layer
  l+1, from neuron j of layer l), ``("B", l, i)``, ``("z", l, i)``, ``("a", l, i)``
  (``a^0`` is the input), ``("y", i)`` and ``("C",)``.
- GRN (paper lines 47-55): ``("WXu", l-1, i, j)`` and ``("WXc", l-1, i, j)`` feed
  neuron i of layer l from neuron j of layer l-1; ``("WTu", l, i)``, ``("WTc", l, i)``,
  ``("Bu", l, i)``, ``("Bc", l, i)``; ``("Zu"|"Zc"|"G"|"ac"|"a", t, l, i)`` is
  ^t Zu^l_i and so on (``G`` is Gamma, ``ac`` is a-tilde); ``("a", 0, l, i)`` is the
  initial state of a GRN layer and ``("a", t, l0, i)`` the plain input at step t;
  ``("y", t, i)`` the target, ``("Ct", t)`` the cost of step t and ``("C",)`` their sum.
"""

# ruff: noqa: E741 (l is the paper's layer index throughout)

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import sympy as sp

from symbolic.primitives import PRIMITIVES, function, is_primitive_call, prime

Key = tuple
"""A value's name in the paper's notation, e.g. ``("W", 1, 0, 0)`` for W^1_{00}."""

Scope = frozenset | None
"""The consumers that see a perturbation (``None``: all of them)."""

COST: Key = ("C",)
FD_STEP = 1e-6

_sigmoid = function("sigmoid")
_tanh = function("tanh")
_EPS = sp.Symbol("eps")


class NoSuchNeuron(LookupError):
    """A formula asked for a neuron, weight or time step that the model does not have."""


# --------------------------------------------------------------------------- shapes


@dataclass(frozen=True)
class MLPShape:
    """Layer sizes of a sigmoid MLP (paper lines 11-15): layers 0..L, layer 0 the input.

    Attributes:
        sizes: Neurons per layer, ``sizes[l] = n^l``.
    """

    sizes: tuple[int, ...]

    @property
    def L(self) -> int:
        """The output layer's index."""
        return len(self.sizes) - 1

    @property
    def name(self) -> str:
        """A short human name, e.g. ``MLP 2-2-2``."""
        return "MLP " + "-".join(map(str, self.sizes))

    def n(self, l: int) -> int:
        """Number of neurons of layer ``l``."""
        return self.sizes[l]

    def leaves(self) -> list[Key]:
        """Every parameter, input and target, in a fixed order."""
        L, n = self.L, self.n
        keys: list[Key] = [("a", 0, j) for j in range(n(0))]
        for l in range(L):
            keys += [("W", l, i, j) for i in range(n(l + 1)) for j in range(n(l))]
        for l in range(1, L + 1):
            keys += [("B", l, i) for i in range(n(l))]
        return keys + [("y", i) for i in range(n(L))]

    def has(self, key: Key) -> bool:
        """True when the model has the value ``key``."""
        kind, *idx = key
        L, sizes = self.L, self.sizes

        def neuron(l: int, i: int) -> bool:
            return 0 <= l <= L and 0 <= i < sizes[l]

        if kind == "W" and len(idx) == 3:
            l, i, j = idx
            return 0 <= l < L and neuron(l + 1, i) and neuron(l, j)
        if kind == "B" and len(idx) == 2:
            return idx[0] >= 1 and neuron(*idx)
        if kind == "z" and len(idx) == 2:
            return idx[0] >= 1 and neuron(*idx)
        if kind == "a" and len(idx) == 2:
            return neuron(*idx)
        if kind == "y" and len(idx) == 1:
            return 0 <= idx[0] < sizes[L]
        return key == COST


class RecurrentLayers:
    """Layers of a recurrent cell unrolled over T steps, from the plain input up: what
    :class:`GRNShape` and a spec's cell shape share (they add their values' keys).

    A subclass has ``sizes`` (neurons per layer, from the input layer up), ``T``,
    ``input_layer`` (the paper's index of the input layer) and ``label`` (the cell's
    name in :attr:`name`).
    """

    sizes: tuple[int, ...]
    T: int
    input_layer: int
    label: str

    @property
    def L(self) -> int:
        """The top (cost) layer's index."""
        return self.input_layer + len(self.sizes) - 1

    @property
    def layers(self) -> range:
        """Indices of the cell's layers (every layer above the plain input)."""
        return range(self.input_layer + 1, self.L + 1)

    @property
    def stacked(self) -> bool:
        """True when some layer of the cell reads another."""
        return len(self.sizes) > 2

    @property
    def name(self) -> str:
        """A short human name, e.g. ``stacked GRN 2-2-2 (layers 0-2), T=3``."""
        kind = f"stacked {self.label}" if self.stacked else self.label
        sizes = "-".join(map(str, self.sizes))
        return f"{kind} {sizes} (layers {self.input_layer}-{self.L}), T={self.T}"

    def n(self, l: int) -> int:
        """Number of neurons of layer ``l``."""
        if not self.input_layer <= l <= self.L:
            raise NoSuchNeuron(f"layer {l}, which {self.name} does not have")
        return self.sizes[l - self.input_layer]

    def is_grn(self, l: int) -> bool:
        """True when layer ``l`` is a layer of the cell (not the plain input): what a
        notation's ``recurrent`` predicate asks (named as the GRN's shape names it)."""
        return l in self.layers


@dataclass(frozen=True)
class GRNShape(RecurrentLayers):
    """Gated recurrent neuron layers (paper lines 47-55), unrolled over T time steps.

    Layer ``input_layer`` is the plain input (a value per time step); every layer above
    it, up to ``L``, is a GRN layer reading the layer below at the same step and its own
    previous output ^{t-1}a (the initial state ^0 a is a free symbol, so that the
    recurrent weights matter even at T = 1). The cost is the project's convention:
    C = sum over t and i of (^t a^L_i - ^t y_i)^2.

    Attributes:
        sizes: Neurons per layer, from the input layer up.
        T: Number of time steps.
        input_layer: The paper's index of the input layer (the paper's worked GRN
            example speaks of layer 2 fed by layer 1).
    """

    sizes: tuple[int, ...]
    T: int
    input_layer: int = 0

    label = "GRN"

    def leaves(self) -> list[Key]:
        """Every parameter, input, initial state and target, in a fixed order."""
        l0, n, T = self.input_layer, self.n, self.T
        keys: list[Key] = [("a", t, l0, j) for t in range(1, T + 1) for j in range(n(l0))]
        for l in self.layers:
            for p in ("WXu", "WXc"):
                keys += [(p, l - 1, i, j) for i in range(n(l)) for j in range(n(l - 1))]
            for p in ("WTu", "WTc", "Bu", "Bc"):
                keys += [(p, l, i) for i in range(n(l))]
            keys += [("a", 0, l, i) for i in range(n(l))]
        return keys + [("y", t, i) for t in range(1, T + 1) for i in range(n(self.L))]

    def has(self, key: Key) -> bool:
        """True when the model has the value ``key``."""
        kind, *idx = key
        T, l0 = self.T, self.input_layer

        def neuron(l: int, i: int) -> bool:
            return l0 <= l <= self.L and 0 <= i < self.n(l)

        if kind in ("WXu", "WXc") and len(idx) == 3:
            l, i, j = idx  # l is the paper's l-1
            return self.is_grn(l + 1) and neuron(l + 1, i) and neuron(l, j)
        if kind in ("WTu", "WTc", "Bu", "Bc") and len(idx) == 2:
            return self.is_grn(idx[0]) and neuron(*idx)
        if kind in ("Zu", "Zc", "G", "ac") and len(idx) == 3:
            t, l, i = idx
            return 1 <= t <= T and self.is_grn(l) and neuron(l, i)
        if kind == "a" and len(idx) == 3:
            t, l, i = idx
            first = 0 if self.is_grn(l) else 1
            return first <= t <= T and neuron(l, i)
        if kind == "y" and len(idx) == 2:
            return 1 <= idx[0] <= T and 0 <= idx[1] < self.n(self.L)
        if kind == "Ct" and len(idx) == 1:
            return 1 <= idx[0] <= T
        return key == COST


Shape = MLPShape | GRNShape


def label(key: Key) -> str:
    """The paper's name of a value, e.g. ``W^1_{00}`` or ``^2a^1_0``.

    Args:
        key: The value's key.

    Returns:
        A readable name, also used as the SymPy symbol's name.
    """
    kind, *idx = key
    if key == COST:
        return "C"
    if kind == "Ct":
        return f"^{idx[0]}C"
    if kind == "y":
        return f"^{idx[0]}y_{idx[1]}" if len(idx) == 2 else f"y_{idx[0]}"
    if kind in ("W", "WXu", "WXc") or (len(idx) == 3 and time_of(key) is None):
        l, i, j = idx
        sub = f"{i}{j}" if max(i, j) < 10 else f"{i},{j}"
        return f"{kind}^{l}_{{{sub}}}"
    if kind in ("B", "WTu", "WTc", "Bu", "Bc") or len(idx) == 2:
        return f"{kind}^{idx[0]}_{idx[1]}"
    t, l, i = idx
    return f"^{t}{kind}^{l}_{i}"


class StepKey(tuple):
    """The key of a value of time step ``key[1]`` (``(kind, t, l, i)``) in a model built
    from a spec (:mod:`symbolic.verify.specmodel`), whose kinds are the spec's names; it
    equals and hashes as the plain tuple."""

    __slots__ = ()


def time_of(key: Key) -> int | None:
    """The time step a recurrent model's value belongs to (None for parameters and the
    total cost)."""
    kind = key[0]
    if isinstance(key, StepKey):
        return key[1]
    if (kind in ("Zu", "Zc", "G", "ac", "a") and len(key) == 4) or (kind == "y" and len(key) == 3):
        return key[1]
    return key[1] if kind == "Ct" else None


# ------------------------------------------------------------- exact polynomials


class AtomSpace:
    """The atoms of one model: the generators of its polynomials.

    Monomials are packed into one Python integer, ``_BITS`` bits of exponent per atom,
    so that multiplying monomials is adding integers. (SymPy's own sparse rings keep a
    tuple per monomial, one entry per atom; with the hundred-odd atoms of a stacked GRN
    that product dominated the whole verification.) Exponents here stay below 20 (a
    polynomial's degree is bounded by its longest path times three), far from the
    2**16 at which two fields would overlap.
    """

    _BITS = 16

    def __init__(self, symbols: list[sp.Symbol]):
        """Index the atoms."""
        self.symbols = list(symbols)
        self._index = {sym: k for k, sym in enumerate(self.symbols)}
        self.one = AtomPoly(self, {0: 1})
        self.zero = AtomPoly(self, {})

    def gen(self, symbol: sp.Symbol) -> AtomPoly:
        """The polynomial of one atom."""
        return AtomPoly(self, {1 << (self._BITS * self._index[symbol]): 1})

    def from_expr(self, expr: sp.Expr) -> AtomPoly:
        """Expand a polynomial expression of the atoms (integer coefficients).

        Raises:
            ValueError: For anything but sums, products, integer powers, integers and
                atoms (e.g. a primitive call no node holds).
        """
        if expr.is_Symbol:
            return self.gen(expr)
        if expr.is_Integer:
            return AtomPoly(self, {0: int(expr)} if expr else {})
        if expr.is_Add:
            return sum((self.from_expr(arg) for arg in expr.args), self.zero)
        if expr.is_Mul:
            result = self.one
            for arg in expr.args:
                result = result * self.from_expr(arg)
            return result
        if expr.is_Pow and expr.exp.is_Integer and expr.exp >= 0:
            base, result = self.from_expr(expr.base), self.one
            for _ in range(int(expr.exp)):
                result = result * base
            return result
        raise ValueError(f"not a polynomial of the model's atoms: {expr}")

    def exponents(self, monomial: int) -> list[tuple[sp.Symbol, int]]:
        """Unpack a monomial into ``(atom, exponent)`` pairs."""
        mask, pairs, k = (1 << self._BITS) - 1, [], 0
        while monomial:
            if monomial & mask:
                pairs.append((self.symbols[k], monomial & mask))
            monomial >>= self._BITS
            k += 1
        return pairs


class AtomPoly:
    """An expanded polynomial with integer coefficients in a model's atoms.

    Supports ``+``, ``-``, ``*`` (with another polynomial of the same space or an
    integer) and ``sum``; it is zero exactly when it is falsy. Two expressions built
    from the same atoms are equal exactly when their difference is the zero polynomial,
    the canonical form ``sympy.expand`` would reach.
    """

    __slots__ = ("space", "terms")

    def __init__(self, space: AtomSpace, terms: dict[int, int]):
        """Wrap ``{packed monomial: coefficient}`` (no zero coefficients)."""
        self.space = space
        self.terms = terms

    def _coerce(self, other: AtomPoly | int) -> AtomPoly:
        if isinstance(other, AtomPoly):
            return other
        if isinstance(other, int):
            return AtomPoly(self.space, {0: other} if other else {})
        return NotImplemented

    def __add__(self, other: AtomPoly | int) -> AtomPoly:
        other = self._coerce(other)
        if other is NotImplemented:
            return other
        big, small = (self, other) if len(self.terms) >= len(other.terms) else (other, self)
        terms = dict(big.terms)
        for mono, coeff in small.terms.items():
            value = terms.get(mono, 0) + coeff
            if value:
                terms[mono] = value
            else:
                terms.pop(mono, None)
        return AtomPoly(self.space, terms)

    __radd__ = __add__

    def __neg__(self) -> AtomPoly:
        return AtomPoly(self.space, {m: -c for m, c in self.terms.items()})

    def __sub__(self, other: AtomPoly | int) -> AtomPoly:
        other = self._coerce(other)
        if other is NotImplemented:
            return other
        return self + (-other)

    def __rsub__(self, other: int) -> AtomPoly:
        return (-self) + other

    def __mul__(self, other: AtomPoly | int) -> AtomPoly:
        other = self._coerce(other)
        if other is NotImplemented:
            return other
        big, small = (self, other) if len(self.terms) >= len(other.terms) else (other, self)
        if not small.terms:
            return AtomPoly(self.space, {})
        (m2, c2), *rest = small.terms.items()
        # Shifting every monomial by one monomial is one-to-one: no terms merge.
        terms = {m1 + m2: c1 * c2 for m1, c1 in big.terms.items()}
        if not rest:
            return AtomPoly(self.space, terms)
        _multiply_add(terms, AtomPoly(self.space, dict(rest)), big)
        return AtomPoly(self.space, {m: c for m, c in terms.items() if c})

    __rmul__ = __mul__

    def __bool__(self) -> bool:
        return bool(self.terms)

    def __eq__(self, other: object) -> bool:
        # Coefficients are never zero, so equal polynomials have equal term tables.
        if isinstance(other, int):
            return self.terms == ({0: other} if other else {})
        if isinstance(other, AtomPoly):
            return self.terms == other.terms
        return NotImplemented

    __hash__ = None

    def __len__(self) -> int:
        return len(self.terms)

    def evaluate(self, values: Mapping[sp.Symbol, float]) -> float:
        """The polynomial's value when each atom takes ``values[atom]``."""
        total = 0.0
        for mono, coeff in self.terms.items():
            term = float(coeff)
            for sym, e in self.space.exponents(mono):
                term *= values[sym] ** e
            total += term
        return total

    def as_expr(self) -> sp.Expr:
        """The polynomial as a SymPy expression."""
        return sp.Add(
            *(
                coeff * sp.Mul(*(sym**e for sym, e in self.space.exponents(mono)))
                for mono, coeff in self.terms.items()
            )
        )

    def __repr__(self) -> str:
        return f"AtomPoly({self.as_expr()})"


def _multiply_add(terms: dict[int, int], a: AtomPoly, b: AtomPoly) -> None:
    # terms += a*b in place: the perturbation sums several such products per node, and
    # copying a ten-thousand-term accumulator for each would double the work.
    get = terms.get
    for m2, c2 in a.terms.items():
        for m1, c1 in b.terms.items():
            mono = m1 + m2
            terms[mono] = get(mono, 0) + c1 * c2


# ------------------------------------------------------------------ symbolic models


class SymbolicModel:
    """The unrolled model in SymPy: one equation per intermediate, in the paper's order.

    Attributes:
        shape: The model's shape.
        order: Intermediate keys in evaluation order.
        parents: For each intermediate, the keys its equation reads.
        children: For each key, the intermediates whose equations read it.
    """

    def __init__(self, shape: Shape, equations: list[tuple[Key, sp.Expr]]):
        """Build a model from its equations.

        Args:
            shape: The model's shape (its ``leaves()`` are the free symbols).
            equations: ``(key, equation)`` in evaluation order; each equation is written
                in the symbols returned by :func:`symbol_of` for the keys it reads.
        """
        self.shape = shape
        self._equations = dict(equations)
        self.order = [key for key, _ in equations]
        keys = shape.leaves() + self.order
        self._symbols = {key: symbol_of(key) for key in keys}
        self._keys = {sym: key for key, sym in self._symbols.items()}
        self.parents: dict[Key, tuple[Key, ...]] = {}
        self.children: dict[Key, list[Key]] = {key: [] for key in keys}
        for key, eq in equations:
            reads = sorted(eq.free_symbols, key=lambda s: s.name)
            self.parents[key] = tuple(self._keys[s] for s in reads)
            for parent in self.parents[key]:
                self.children[parent].append(key)
        # A primitive call of a node's own argument is that node: sigmoid(z) is a.
        self._call_atoms = {
            eq: self._symbols[key] for key, eq in equations if is_primitive_call(eq)
        }
        self.atoms = AtomSpace([self._symbols[key] for key in keys])
        self._gens = {key: self.atoms.gen(self._symbols[key]) for key in keys}

    def symbol(self, key: Key) -> sp.Symbol:
        """The symbol of a value (leaf or intermediate)."""
        return self._symbols[key]

    def key_of(self, symbol: sp.Symbol) -> Key:
        """The key of a symbol of this model."""
        return self._keys[symbol]

    def equation(self, key: Key) -> sp.Expr:
        """An intermediate's equation, in the symbols of the values it reads."""
        return self._equations[key]

    def gen(self, key: Key) -> AtomPoly:
        """A value as a polynomial of one atom."""
        if not self.shape.has(key):
            raise NoSuchNeuron(f"{label(key)}, which {self.shape.name} does not have")
        return self._gens[key]

    @functools.cache  # noqa: B019 (models are cached for the process's lifetime)
    def expr(self, key: Key) -> sp.Expr:
        """A value as an expression of the leaves (the whole model composed)."""
        if key not in self._equations:
            return self._symbols[key]
        eq = self._equations[key]
        return eq.xreplace({self._symbols[p]: self.expr(p) for p in self.parents[key]})

    def fold(self, expr: sp.Expr) -> sp.Expr:
        """Write primitive calls as the nodes that hold them (``sigmoid(z) -> a``).

        Raises:
            ValueError: When a call is not the equation of any node (no atom for it).
        """
        folded = expr.xreplace(self._call_atoms)
        stray = [c for c in folded.atoms(sp.Function) if is_primitive_call(c)]
        if stray:
            raise ValueError(f"no node of {self.shape.name} holds {stray[0]}")
        return folded

    def poly(self, expr: sp.Expr) -> AtomPoly:
        """An expression of the model's symbols as an expanded polynomial in its atoms."""
        return self.atoms.from_expr(self.fold(expr))

    @functools.cache  # noqa: B019
    def local(self, of: Key, wrt: Key) -> AtomPoly:
        """The local partial of ``of``'s one equation with respect to ``wrt``.

        This is ``sympy.diff`` of that single equation (paths through other equations
        are not followed).
        """
        return self.poly(sp.diff(self._equations[of], self._symbols[wrt]))

    @functools.cache  # noqa: B019
    def _perturbation(self, wrt: Key, scope: Scope) -> dict[Key, AtomPoly]:
        # Add eps to wrt where the consumers in scope read it and carry the first-order
        # perturbation forward: node k, reading perturbed values p + eps*dp, becomes
        # eq_k(p + eps*dp), whose derivative at eps = 0 is sum_p diff(eq_k, p)*dp.
        # The result maps every affected node to d(node)/d(eps) at eps = 0.
        deltas: dict[Key, AtomPoly] = {}
        for key in self.order:
            terms: dict[int, int] = {}
            for parent in self.parents[key]:
                if parent == wrt:
                    if scope is None or key in scope:
                        _multiply_add(terms, self.local(key, parent), self.atoms.one)
                elif parent in deltas:
                    _multiply_add(terms, self.local(key, parent), deltas[parent])
            terms = {m: c for m, c in terms.items() if c}
            if terms:
                deltas[key] = AtomPoly(self.atoms, terms)
        return deltas

    def total(self, of: Key, wrt: Key, scope: Scope = None) -> AtomPoly:
        """The total derivative d(of)/d(wrt), by perturbing ``wrt`` with ``eps``.

        Args:
            of: The value differentiated (usually the cost ``("C",)``).
            wrt: The parameter, input or intermediate perturbed.
            scope: When given, only these consumers of ``wrt`` see the perturbation
                (e.g. the equations of one time step: the contribution of that step).

        Returns:
            The derivative at eps = 0, an expanded polynomial in the model's atoms.

        Raises:
            NoSuchNeuron: When ``of`` or ``wrt`` is not in the model.
        """
        for key in (of, wrt):
            if not self.shape.has(key):
                raise NoSuchNeuron(f"{label(key)}, which {self.shape.name} does not have")
        return self._perturbation(wrt, scope).get(of, self.atoms.zero)

    def total_expr(self, of: Key, wrt: Key) -> sp.Expr:
        """The literal definition of :meth:`total`, on the composed model.

        Composes the whole model with ``eps`` added to ``wrt``, differentiates the
        composed ``of`` with ``sympy.diff`` and sets ``eps = 0``. The result is in the
        leaves, with primitive calls nested; it grows fast with depth and T, so it is
        meant for small models (tests compare it with :meth:`total`).
        """
        values: dict[Key, sp.Expr] = {}
        for key in self.order:
            subs = {}
            for parent in self.parents[key]:
                value = values.get(parent, self.expr(parent))
                subs[self._symbols[parent]] = value + _EPS if parent == wrt else value
            values[key] = self._equations[key].xreplace(subs)
        return sp.diff(values[of], _EPS).xreplace({_EPS: 0})

    def unfold(self, value: AtomPoly) -> sp.Expr:
        """A polynomial of the model's atoms as an expression of the leaves."""
        expr = value.as_expr()
        return expr.xreplace({self._symbols[k]: self.expr(k) for k in self.order})


def symbol_of(key: Key) -> sp.Symbol:
    """The SymPy symbol of a value, named by :func:`label`."""
    return sp.Symbol(label(key))


def _mlp_equations(shape: MLPShape) -> list[tuple[Key, sp.Expr]]:
    # Paper line 15: z_i^l = sum_j W_ij^{l-1} a_j^{l-1} + B_i^l; line 13: a = sigma(z);
    # line 11: C = sum_i (a_i^L - y_i)^2.
    s, n, L = symbol_of, shape.n, shape.L
    eqs: list[tuple[Key, sp.Expr]] = []
    for l in range(1, L + 1):
        for i in range(n(l)):
            z = sum(s(("W", l - 1, i, j)) * s(("a", l - 1, j)) for j in range(n(l - 1)))
            eqs.append((("z", l, i), z + s(("B", l, i))))
            eqs.append((("a", l, i), _sigmoid(s(("z", l, i)))))
    cost = sum((s(("a", L, i)) - s(("y", i))) ** 2 for i in range(n(L)))
    return [*eqs, (COST, cost)]


def _grn_equations(shape: GRNShape) -> list[tuple[Key, sp.Expr]]:
    # Paper lines 47-55, for t = 1..T, layer by layer; the cost is the project's
    # convention (squared error summed over units and time steps).
    s, n = symbol_of, shape.n
    eqs: list[tuple[Key, sp.Expr]] = []
    for t in range(1, shape.T + 1):
        for l in shape.layers:
            for i in range(n(l)):
                h = s(("a", t - 1, l, i))
                below = [s(("a", t, l - 1, j)) for j in range(n(l - 1))]
                for gate, p in (("Zu", "u"), ("Zc", "c")):
                    x = sum(s((f"WX{p}", l - 1, i, j)) * below[j] for j in range(len(below)))
                    z = s((f"WT{p}", l, i)) * h + x + s((f"B{p}", l, i))
                    eqs.append(((gate, t, l, i), z))
                eqs.append((("G", t, l, i), _sigmoid(s(("Zu", t, l, i)))))
                eqs.append((("ac", t, l, i), _tanh(s(("Zc", t, l, i)))))
                gamma, ac = s(("G", t, l, i)), s(("ac", t, l, i))
                eqs.append((("a", t, l, i), gamma * ac + (1 - gamma) * h))
        top = [(s(("a", t, shape.L, i)) - s(("y", t, i))) ** 2 for i in range(n(shape.L))]
        eqs.append((("Ct", t), sum(top)))
    eqs.append((COST, sum(s(("Ct", t)) for t in range(1, shape.T + 1))))
    return eqs


# ------------------------------------------------------------------- numeric models


@dataclass(frozen=True)
class Perturbation:
    """``eps`` added to ``key`` where the consumers in ``scope`` read it."""

    key: Key
    eps: float
    scope: Scope = None

    def applies(self, key: Key, consumer: Key) -> bool:
        """True when ``consumer`` reads ``key`` perturbed."""
        return key == self.key and (self.scope is None or consumer in self.scope)


class NumericModel:
    """The unrolled model in plain NumPy, with finite differences.

    Subclasses write the forward pass with ``get(key, consumer)`` for every value an
    equation reads; ``get`` adds the perturbation where it applies and records which
    values each equation reads (its parents).

    Attributes:
        shape: The model's shape.
        parents: For each intermediate, the keys its equation reads (traced).
    """

    def __init__(self, shape: Shape):
        """Trace the forward pass once to learn each equation's inputs."""
        self.shape = shape
        self.parents: dict[Key, set[Key]] = {}
        self._tracing = True
        self.run(self.random_point(0))
        self._tracing = False

    def random_point(self, seed: int) -> dict[Key, float]:
        """Random values for every leaf (uniform in [-1, 1], reproducible)."""
        rng = np.random.default_rng(seed)
        leaves = self.shape.leaves()
        return dict(zip(leaves, rng.uniform(-1.0, 1.0, len(leaves)).tolist(), strict=True))

    def run(self, point: Mapping[Key, float], perturb: Perturbation | None = None) -> dict:
        """The forward pass at ``point``: every value, keyed like the symbolic model."""
        values = dict(point)
        if self._tracing:

            def get(key: Key, consumer: Key) -> float:
                self.parents.setdefault(consumer, set()).add(key)
                return values[key]

        elif perturb is None:

            def get(key: Key, consumer: Key) -> float:
                return values[key]

        else:
            target, eps, scope = perturb.key, perturb.eps, perturb.scope

            def get(key: Key, consumer: Key) -> float:
                if key == target and (scope is None or consumer in scope):
                    return values[key] + eps
                return values[key]

        self._forward(values, get)
        return values

    def _forward(self, values: dict, get: Callable[[Key, Key], float]) -> None:
        raise NotImplementedError

    def value(self, point: Mapping[Key, float], key: Key) -> float:
        """One value of the forward pass."""
        return self.run(point)[key]

    def fd(
        self,
        point: Mapping[Key, float],
        of: Key,
        wrt: Key,
        scope: Scope = None,
        step: float = FD_STEP,
    ) -> float:
        """Central finite difference of ``of`` for a perturbation of ``wrt``.

        Args:
            point: The leaves' values.
            of: The value differentiated (usually the cost).
            wrt: The value perturbed (leaf or intermediate).
            scope: When given, only these consumers of ``wrt`` see the perturbation.
            step: The finite-difference step.
        """
        plus = self.run(point, Perturbation(wrt, step, scope))[of]
        minus = self.run(point, Perturbation(wrt, -step, scope))[of]
        return (plus - minus) / (2.0 * step)


def _ref(name: str) -> Callable[[float], float]:
    reference = PRIMITIVES[name].reference
    return lambda x: float(reference(np.float64(x)))


class NumericMLP(NumericModel):
    """The sigmoid MLP of paper lines 11-15 in NumPy."""

    def _forward(self, values: dict, get: Callable[[Key, Key], float]) -> None:
        sigma, L = _ref("sigmoid"), self.shape.L
        n = self.shape.sizes.__getitem__
        for l in range(1, L + 1):
            for i in range(n(l)):
                z, a = ("z", l, i), ("a", l, i)
                values[z] = sum(
                    get(("W", l - 1, i, j), z) * get(("a", l - 1, j), z) for j in range(n(l - 1))
                ) + get(("B", l, i), z)
                values[a] = sigma(get(z, a))
        values[COST] = sum((get(("a", L, i), COST) - get(("y", i), COST)) ** 2 for i in range(n(L)))


class NumericGRN(NumericModel):
    """The gated recurrent neuron layers of paper lines 47-55 in NumPy."""

    def _forward(self, values: dict, get: Callable[[Key, Key], float]) -> None:
        sigma, tanh = _ref("sigmoid"), _ref("tanh")
        shape = self.shape
        n = {l: shape.n(l) for l in range(shape.input_layer, shape.L + 1)}.__getitem__
        for t in range(1, shape.T + 1):
            for l in shape.layers:
                for i in range(n(l)):
                    h = ("a", t - 1, l, i)
                    for gate, p in (("Zu", "u"), ("Zc", "c")):
                        z = (gate, t, l, i)
                        values[z] = (
                            get((f"WT{p}", l, i), z) * get(h, z)
                            + sum(
                                get((f"WX{p}", l - 1, i, j), z) * get(("a", t, l - 1, j), z)
                                for j in range(n(l - 1))
                            )
                            + get((f"B{p}", l, i), z)
                        )
                    gamma, ac, a = ("G", t, l, i), ("ac", t, l, i), ("a", t, l, i)
                    values[gamma] = sigma(get(("Zu", t, l, i), gamma))
                    values[ac] = tanh(get(("Zc", t, l, i), ac))
                    values[a] = get(gamma, a) * get(ac, a) + (1.0 - get(gamma, a)) * get(h, a)
            ct = ("Ct", t)
            values[ct] = sum(
                (get(("a", t, shape.L, i), ct) - get(("y", t, i), ct)) ** 2
                for i in range(n(shape.L))
            )
        values[COST] = sum(get(("Ct", t), COST) for t in range(1, shape.T + 1))


# ------------------------------------------------------------------ unrolled models


@dataclass(frozen=True)
class Unrolled:
    """One concrete model in both forms.

    Attributes:
        shape: The sizes (and, for the GRN, T and the input layer's index).
        symbolic: The SymPy form.
        numeric: The NumPy form.
    """

    shape: Shape
    symbolic: SymbolicModel = field(repr=False)
    numeric: NumericModel = field(repr=False)

    @property
    def name(self) -> str:
        """The shape's human name."""
        return self.shape.name


@functools.cache
def mlp(sizes: tuple[int, ...]) -> Unrolled:
    """The sigmoid MLP of paper lines 11-15 with layer sizes ``sizes`` (cached).

    Args:
        sizes: ``(n^0, ..., n^L)``, e.g. ``(2, 2, 2)`` for the paper's worked example.
    """
    shape = MLPShape(tuple(sizes))
    return Unrolled(shape, SymbolicModel(shape, _mlp_equations(shape)), NumericMLP(shape))


@functools.cache
def grn(sizes: tuple[int, ...], T: int, input_layer: int = 0) -> Unrolled:
    """GRN layers (paper lines 47-55) unrolled over ``T`` steps (cached).

    Args:
        sizes: Neurons per layer from the plain input up: ``(2, 2)`` is one GRN layer,
            ``(2, 2, 2)`` two stacked GRN layers.
        T: Number of time steps.
        input_layer: The paper's index of the input layer.
    """
    shape = GRNShape(tuple(sizes), T, input_layer)
    return Unrolled(shape, SymbolicModel(shape, _grn_equations(shape)), NumericGRN(shape))


# ------------------------------------------------------------------------ contexts


class SymbolicContext:
    """What a transcribed formula reads, on a symbolic model (exact).

    Values and derivatives are :class:`AtomPoly` polynomials; ``+``, ``-``, ``*`` and
    ``sum`` work on them as on numbers, so one transcription serves both contexts.
    """

    exact = True

    def __init__(self, model: Unrolled):
        """Wrap ``model``'s symbolic form."""
        self.model = model
        self.shape = model.shape
        self._m = model.symbolic

    def v(self, key: Key) -> AtomPoly:
        """A value (parameter, input, target or intermediate)."""
        return self._m.gen(key)

    def dC(self, key: Key) -> AtomPoly:
        """The total derivative of the cost C with respect to ``key``."""
        return self._m.total(COST, key)

    def D(self, of: Key, wrt: Key, scope: Scope = None) -> AtomPoly:
        """The total derivative of ``of`` with respect to ``wrt`` (see SymbolicModel.total)."""
        return self._m.total(of, wrt, scope)

    def d(self, of: Key, wrt: Key) -> AtomPoly:
        """The paper's partial: of one equation when ``wrt`` appears in ``of``'s equation,
        else through the equations between them (e.g. da^1_1/dW^0_{11} through z^1_1)."""
        for key in (of, wrt):
            self._m.gen(key)  # raises NoSuchNeuron for a value the model lacks
        if wrt in self._m.parents.get(of, ()):
            return self._m.local(of, wrt)
        return self._m.total(of, wrt)

    def prime(self, name: str, x: AtomPoly) -> AtomPoly:
        """The derivative of primitive ``name`` at the value ``x`` (an atom)."""
        arg = x.as_expr()
        if not isinstance(arg, sp.Symbol):
            raise ValueError(f"{name}' of a non-atomic argument {arg}")
        return self._m.poly(prime(name, arg))

    def sigma_prime(self, x: AtomPoly) -> AtomPoly:
        """sigma'(x)."""
        return self.prime("sigmoid", x)

    def tanh_prime(self, x: AtomPoly) -> AtomPoly:
        """tanh'(x)."""
        return self.prime("tanh", x)


class NumericContext:
    """What a transcribed formula reads, on a numeric model at one point (floats)."""

    exact = False

    def __init__(self, model: Unrolled, point: Mapping[Key, float]):
        """Wrap ``model``'s NumPy form at ``point``."""
        self.model = model
        self.shape = model.shape
        self.point = dict(point)
        self._m = model.numeric
        self._values = self._m.run(self.point)
        self._fd: dict[tuple, float] = {}

    def _check(self, key: Key) -> None:
        if not self.shape.has(key):
            raise NoSuchNeuron(f"{label(key)}, which {self.shape.name} does not have")

    def v(self, key: Key) -> float:
        """A value of the forward pass."""
        self._check(key)
        return self._values[key]

    def D(self, of: Key, wrt: Key, scope: Scope = None) -> float:
        """d(of)/d(wrt) by central finite differences (cached)."""
        self._check(of)
        self._check(wrt)
        memo = (of, wrt, scope)
        if memo not in self._fd:
            self._fd[memo] = self._m.fd(self.point, of, wrt, scope)
        return self._fd[memo]

    def dC(self, key: Key) -> float:
        """dC/d(key) by central finite differences."""
        return self.D(COST, key)

    def d(self, of: Key, wrt: Key) -> float:
        """The paper's partial (see SymbolicContext.d), by finite differences."""
        self._check(of)
        self._check(wrt)
        if wrt in self._m.parents.get(of, ()):
            return self.D(of, wrt, frozenset({of}))
        return self.D(of, wrt)

    def apply(self, name: str, x: float) -> float:
        """The primitive ``name`` at ``x`` (its NumPy reference)."""
        return float(_ref(name)(x))

    def prime(self, name: str, x: float) -> float:
        """The derivative of primitive ``name`` at ``x``, by finite differences of its
        NumPy reference (independent of the derivative rules being verified)."""
        f = _ref(name)
        return (f(x + FD_STEP) - f(x - FD_STEP)) / (2.0 * FD_STEP)

    def sigma_prime(self, x: float) -> float:
        """sigma'(x)."""
        return self.prime("sigmoid", x)

    def tanh_prime(self, x: float) -> float:
        """tanh'(x)."""
        return self.prime("tanh", x)


Context = SymbolicContext | NumericContext


# --------------------------------------------------------------------- primitives


def check_primitive_rules(names: Iterable[str] = ("sigmoid", "tanh")) -> list[str]:
    """Re-derive the opaque primitives' derivative rules from their definitions.

    The symbolic models differentiate ``sigmoid`` and ``tanh`` by the rules in
    :mod:`symbolic.primitives` (sigma' = s(1 - s), tanh' = 1 - t^2). This checks each rule
    against ``sympy.diff`` of the elementary definition (paper line 18 for sigma), so
    that no exact check rests on an unverified rule.

    Returns:
        One sentence per primitive checked.

    Raises:
        AssertionError: When a rule disagrees with its definition.
    """
    x = sp.Symbol("x", real=True)
    done = []
    for name in names:
        prim = PRIMITIVES[name]
        rule = prim.derivative(prim.elementary(x), x)
        truth = sp.diff(prim.elementary(x), x)
        difference = sp.cancel((truth - rule).rewrite(sp.exp))
        if difference != 0:
            raise AssertionError(f"{name}' rule disagrees with d/dx of its definition")
        done.append(f"{name}' rule {prim.derivative(sp.Symbol('out'), x)} re-derived exactly")
    return done
