"""Unrolled models built from a spec: a document's section may speak of any cell.

A notation section (:mod:`symbolic.verify.notation`) names its model: the paper's
``mlp`` or ``grn`` (written by hand in :mod:`symbolic.verify.unrolled`), or a spec,
``model = "spec:elman"`` (a shipped spec) or ``model = "spec:my_cell.toml"`` (a path
relative to the notation file). :class:`CellSpec` is that spec with its cost, checked for
what the oracle can read; :meth:`CellSpec.unrolled` builds the same pair of models the
engine uses for the MLP and the GRN (:class:`~symbolic.verify.unrolled.Unrolled`) from
the spec's parsed cell equations (:mod:`symbolic.parse`), with no code for the cell:

- layers ``input_layer + 1 .. L`` are the cell, each reading the layer below at the same
  step (the plain input, or the output of the cell layer below) and its own states of
  the step before (``^0`` of each state is a free symbol, the initial state), unrolled
  over ``T`` steps;
- the cost is the paper's convention (the GRN section's): the cost spec's ``per_unit``
  (default ``squared_error``, (a - y)^2) summed over the top layer's units at every
  step, ``^t C``, and C the sum of the steps' costs.

**Keys.** As in the GRN: a matrix that multiplies the input, ``("W", l-1, i, j)``, feeds
neuron i of layer l from neuron j of layer l-1 (the paper's W^{l-1}_{ij}); a matrix that
multiplies a state or an intermediate, ``("U", l, i, j)``, reads neuron j of layer l; a
vector ``("b", l, i)``; every equation's value ``(name, t, l, i)``, the plain input
``(output, t, l0, j)``, a state's initial value ``(target, 0, l, i)`` (the name of the
equation that gives its next value: the GRN's ``^0 a``), the target ``("y", t, i)``,
the step's cost ``("Ct", t)`` and ``("C",)``. Values of a step are
:class:`~symbolic.verify.unrolled.StepKey` keys, so that the engine knows their step.

**What the oracle reads.** Exact totals are polynomials in the model's atoms
(:class:`~symbolic.verify.unrolled.AtomPoly`): every equation must be a polynomial with
integer coefficients in its symbols once each primitive call is a node of its own (a
call inside an expression, the LSTM's ``og*tanh(cn)``, is lifted into a node), and
every primitive's derivative, written with its output, a polynomial of that output
(sigmoid, tanh, exp; not log, softplus, relu). A spec outside that is refused with an
error naming its file, line and symbol, never read approximately.
"""

# ruff: noqa: E741 (l is the paper's layer index throughout)

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import sympy as sp

from symbolic import parse
from symbolic.model import COST as COST_KIND
from symbolic.model import Cell, Cost
from symbolic.parse import SpecError
from symbolic.primitives import PRIMITIVES, is_primitive_call, numeric_namespace
from symbolic.verify.unrolled import (
    COST,
    Key,
    NumericModel,
    RecurrentLayers,
    StepKey,
    SymbolicModel,
    Unrolled,
    label,
    symbol_of,
)

PREFIX = "spec:"
"""How a notation section names a spec as its model."""

DEFAULT_COST = "squared_error"
"""The paper's cost: C = sum over t and i of (^t a^L_i - ^t y_i)^2."""


# --------------------------------------------------------------------------- finding


def is_spec_model(model: object) -> bool:
    """Whether a section's ``model`` names a spec (``spec:<name or path>``)."""
    return isinstance(model, str) and model.startswith(PREFIX)


def spec_path(reference: str, base: Path) -> Path:
    """The spec file a reference names: a shipped spec by name, or a ``.toml`` path
    relative to ``base`` (the notation file's folder)."""
    name = reference.removeprefix(PREFIX).strip()
    if name.endswith(".toml") or "/" in name:
        return (base / name).resolve()
    return Path(str(resources.files("symbolic").joinpath("specs", f"{name}.toml")))


def load_cell_spec(notation: Path, model: str, cost: str | None = None) -> CellSpec:
    """The cell and cost a notation section names, checked for the oracle.

    Args:
        notation: The notation file (errors name it; relative paths start beside it).
        model: ``spec:<name>`` or ``spec:<path>.toml``.
        cost: The cost spec, by name or path (default ``squared_error``).

    Raises:
        SpecError: No such spec, a spec of the wrong kind, or one the oracle cannot read.
    """
    cell = _load(notation, model, "model")
    if cell.kind == COST_KIND:
        raise SpecError(notation, None, model, "a section's model is a cell spec, not a cost")
    loss = _load(notation, cost or DEFAULT_COST, "cost")
    if loss.kind != COST_KIND:
        raise SpecError(notation, None, cost, "a section's cost is a cost spec")
    spec = CellSpec(cell, loss)
    spec.check()
    return spec


def _load(notation: Path, reference: str, what: str) -> Cell | Cost:
    path = spec_path(reference, notation.parent)
    if not path.is_file():
        shipped = sorted(
            p.name.removesuffix(".toml")
            for p in resources.files("symbolic").joinpath("specs").iterdir()
            if p.name.endswith(".toml")
        )
        raise SpecError(
            notation,
            None,
            reference,
            f"the section's {what} names no spec (shipped: {', '.join(shipped)}; or a "
            ".toml path relative to the notation file)",
        )
    return parse.load(path)


# ------------------------------------------------------------------------ shapes


@dataclass(frozen=True)
class CellShape(RecurrentLayers):
    """Layers of a spec's cell unrolled over T steps (the GRN's shape, for any cell).

    Attributes:
        cell: The spec's name.
        sizes: Neurons per layer, from the plain input up.
        T: Number of time steps.
        input_layer: The paper's index of the input layer.
    """

    cell: str
    sizes: tuple[int, ...]
    T: int
    input_layer: int = 0
    keys: tuple[Key, ...] = field(default=(), compare=False, repr=False)
    n_leaves: int = field(default=0, compare=False, repr=False)

    @property
    def label(self) -> str:
        """The cell's name, as :attr:`name` prints it."""
        return self.cell

    def leaves(self) -> list[Key]:
        """Every parameter, input, initial state and target, in a fixed order."""
        return list(self.keys[: self.n_leaves])

    @functools.cached_property
    def _known(self) -> frozenset:
        return frozenset(self.keys)

    def has(self, key: Key) -> bool:
        """True when the model has the value ``key``."""
        return key in self._known


# ---------------------------------------------------------------------- the spec


@dataclass(frozen=True)
class _Read:
    """What one symbol of a cell equation reads at a neuron: a value or a projection."""

    symbol: sp.Symbol
    role: str  # "param", "state", "node" or "projection"
    name: str  # the parameter, the state's target, the node, or the projection's matrix
    arg: str = ""  # a projection's vector: the input, a state or a node
    arg_role: str = ""


@dataclass
class CellSpec:
    """A cell spec and its cost, as the unrolled oracle reads them.

    Attributes:
        cell: The parsed cell (:mod:`symbolic.parse`).
        cost: The parsed cost.
    """

    cell: Cell
    cost: Cost
    _cache: dict = field(default_factory=dict, repr=False)

    @functools.cached_property
    def equations(self) -> list[tuple[str, sp.Expr, int]]:
        """The cell's equations, each primitive call inside an expression lifted into a
        node of its own: ``(name, expression, spec line)`` in evaluation order."""
        return _lift_calls(self.cell)

    @functools.cached_property
    def reads(self) -> dict[str, list[_Read]]:
        """For each equation, what its symbols read."""
        nodes = {name for name, _, _ in self.equations}
        return {name: _reads(self.cell, nodes, expr, line) for name, expr, line in self.equations}

    def check(self) -> None:
        """Refuse what the exact oracle cannot read (see the module docstring).

        Raises:
            SpecError: Naming the spec file, the line and the symbol.
        """
        cell, cost = self.cell, self.cost
        shared = [
            s for s, target in cell.states.items() if list(cell.states.values()).count(target) > 1
        ]
        if shared:
            target = cell.states[shared[0]]
            raise SpecError(
                cell.path,
                None,
                shared[0],
                f"states {', '.join(shared)} all take the value of {target}: the unrolled "
                f"oracle names a state's initial value by its equation (^0 {target}), so "
                "each state needs an equation of its own",
            )
        for name, expr, line in self.equations:
            _check_node(cell.path, line, name, expr)
        a, y = sp.Symbol(cost.prediction), sp.Symbol(cost.target)
        _check_polynomial(cost.path, cost.line, "per_unit", cost.per_unit, {a, y})
        self.reads  # noqa: B018 (every symbol classified, or an error)

    def unrolled(self, sizes: tuple[int, ...], T: int, input_layer: int = 0) -> Unrolled:
        """The cell's layers ``sizes`` unrolled over ``T`` steps, in both forms (cached)."""
        memo = (tuple(sizes), T, input_layer)
        if memo not in self._cache:
            self._cache[memo] = _build(self, *memo)
        return self._cache[memo]


def _lift_calls(cell: Cell) -> list[tuple[str, sp.Expr, int]]:
    # A primitive call that is not a whole equation becomes a node (innermost first),
    # named _call<k>, so that the exact models can write it as an atom; one call, one
    # node (an equation that is a call made earlier is that node's value).
    lifter = _Lifter(cell)
    for eq in cell.equations:
        if is_primitive_call(eq.expr):
            call = eq.expr.func(lifter.lift(eq.expr.args[0], eq.line))
            body = lifter.nodes.get(call, call)
            lifter.nodes.setdefault(call, sp.Symbol(eq.name))
        else:
            body = lifter.lift(eq.expr, eq.line)
        lifter.out.append((eq.name, body, eq.line))
    return lifter.out


class _Lifter:
    """The calls of a cell's equations, each a node (see :func:`_lift_calls`)."""

    def __init__(self, cell: Cell):
        self.taken = set(cell.equation_names) | set(cell.params) | set(cell.states)
        self.taken |= {cell.input} | {p.name for p in cell.projections}
        self.fresh = (f"_call{k}" for k in itertools.count())
        self.nodes: dict[sp.Expr, sp.Symbol] = {}
        self.out: list[tuple[str, sp.Expr, int]] = []

    def lift(self, expr: sp.Expr, line: int) -> sp.Expr:
        """``expr`` with every primitive call written as the symbol of its node."""
        if not expr.args:
            return expr
        args = [self.lift(arg, line) for arg in expr.args]
        rebuilt = expr.func(*args) if args != list(expr.args) else expr
        if not is_primitive_call(rebuilt):
            return rebuilt
        if rebuilt not in self.nodes:
            name = next(n for n in self.fresh if n not in self.taken)
            self.nodes[rebuilt] = sp.Symbol(name)
            self.out.append((name, rebuilt, line))
        return self.nodes[rebuilt]


def _reads(cell: Cell, nodes: set[str], expr: sp.Expr, line: int) -> list[_Read]:
    projections = {p.name: p for p in cell.projections}
    out = []
    for sym in sorted(expr.free_symbols, key=lambda s: s.name):
        name = sym.name
        if name in projections:
            proj = projections[name]
            out.append(_Read(sym, "projection", proj.matrix, proj.arg, _role(cell, proj.arg)))
        elif name in cell.params and cell.params[name] == "vector":
            out.append(_Read(sym, "param", name))
        elif name in cell.states:
            out.append(_Read(sym, "state", cell.states[name]))
        elif name in nodes:
            out.append(_Read(sym, "node", name))
        else:
            raise SpecError(
                cell.path,
                line,
                name,
                "the unrolled oracle reads the input and matrices only through projections (W@x)",
            )
    return out


def _role(cell: Cell, name: str) -> str:
    if name == cell.input:
        return "input"
    return "state" if name in cell.states else "node"


# --------------------------------------------------------------------- checks


@functools.cache
def _polynomial_primitives() -> frozenset[str]:
    """The primitives whose derivative, written with their output, is a polynomial of
    it with integer coefficients (the exact models write it in the node's atom)."""
    out, x = sp.Symbol("out"), sp.Symbol("x")
    names = set()
    for name, prim in PRIMITIVES.items():
        derivative = sp.sympify(prim.derivative(out, x))
        if derivative.free_symbols <= {out} and _integer_polynomial(derivative, [out]):
            names.add(name)
    return frozenset(names)


def _integer_polynomial(expr: sp.Expr, symbols: list[sp.Symbol]) -> bool:
    if not symbols:
        return expr.is_Integer
    if not expr.is_polynomial(*symbols):
        return False
    return all(c.is_Integer for c in sp.Poly(expr, *symbols).coeffs())


def _check_node(path: Path, line: int, name: str, expr: sp.Expr) -> None:
    if is_primitive_call(expr):
        prim = type(expr).__name__
        if prim not in _polynomial_primitives():
            supported = ", ".join(sorted(_polynomial_primitives()))
            raise SpecError(
                path,
                line,
                name,
                f"the unrolled oracle of verify --paper reads primitives "
                f"whose derivative is a polynomial of their output ({supported}), not {prim}",
            )
        expr = expr.args[0]
    _check_polynomial(path, line, name, expr, expr.free_symbols)


def _check_polynomial(path: Path, line: int, name: str, expr: sp.Expr, symbols) -> None:
    if is_primitive_call(expr) or any(is_primitive_call(a) for a in sp.preorder_traversal(expr)):
        raise SpecError(path, line, name, "the unrolled oracle reads a cost without primitives")
    if not expr.free_symbols <= set(symbols) or not _integer_polynomial(
        expr, sorted(symbols, key=lambda s: s.name)
    ):
        raise SpecError(
            path,
            line,
            name,
            "the unrolled oracle of verify --paper reads equations that "
            f"are polynomials with integer coefficients, not {expr}",
        )


# ------------------------------------------------------------------- building


@dataclass
class _Node:
    """One value of the unrolled model: its equation, and how to compute it in NumPy."""

    key: Key
    expr: sp.Expr  # in the symbols of the values it reads (projections written out)
    function: Callable[..., float]
    args: list  # per argument: a key, or a list of (matrix key, vector key) to contract


class _Builder:
    """Lays one spec's cell out over layers and steps."""

    def __init__(self, spec: CellSpec, shape: CellShape):
        self.spec, self.shape = spec, shape
        self.cell = spec.cell
        self.nodes: list[_Node] = []
        self.leaves: list[Key] = []

    def matrix_key(self, matrix: str, arg_role: str, l: int, i: int, j: int) -> Key:
        # W^{l-1}_{ij} when it multiplies the input (the layer below), U^l_{ij} otherwise.
        return (matrix, l - 1, i, j) if arg_role == "input" else (matrix, l, i, j)

    def value_key(self, read: _Read, t: int, l: int, i: int) -> Key:
        """The key one symbol of an equation reads at neuron ``i`` of layer ``l``, step t."""
        if read.role == "param":
            return (read.name, l, i)
        if read.role == "state":
            return StepKey((read.name, t - 1, l, i))
        return StepKey((read.name, t, l, i))

    def vector_key(self, read: _Read, t: int, l: int, j: int) -> Key:
        """The key of entry j of a projection's vector."""
        if read.arg_role == "input":
            return StepKey((self.cell.output, t, l - 1, j))
        if read.arg_role == "state":
            return StepKey((self.cell.states[read.arg], t - 1, l, j))
        return StepKey((read.arg, t, l, j))

    def contraction(self, read: _Read, t: int, l: int, i: int) -> list[tuple[Key, Key]]:
        """The pairs (weight, value) of the sum a projection stands for."""
        below = l - 1 if read.arg_role == "input" else l
        return [
            (self.matrix_key(read.name, read.arg_role, l, i, j), self.vector_key(read, t, l, j))
            for j in range(self.shape.n(below))
        ]

    def add_leaves(self) -> None:
        shape, cell = self.shape, self.cell
        l0, n = shape.input_layer, shape.n
        self.leaves += [
            StepKey((cell.output, t, l0, j)) for t in range(1, shape.T + 1) for j in range(n(l0))
        ]
        roles = {p.matrix: _role(cell, p.arg) for p in cell.projections}
        for l in shape.layers:
            for param, kind in cell.params.items():
                if kind == "vector":
                    self.leaves += [(param, l, i) for i in range(n(l))]
                    continue
                below = l - 1 if roles[param] == "input" else l
                self.leaves += [
                    self.matrix_key(param, roles[param], l, i, j)
                    for i in range(n(l))
                    for j in range(n(below))
                ]
            for target in dict.fromkeys(cell.states.values()):
                self.leaves += [StepKey((target, 0, l, i)) for i in range(n(l))]
        self.leaves += [("y", t, i) for t in range(1, shape.T + 1) for i in range(n(shape.L))]

    def add_cell(self, compiled: dict) -> None:
        for t in range(1, self.shape.T + 1):
            for l in self.shape.layers:
                for name, expr, _ in self.spec.equations:
                    reads = self.spec.reads[name]
                    for i in range(self.shape.n(l)):
                        self.nodes.append(self.node(name, expr, reads, compiled[name], t, l, i))
            self.add_step_cost(t)
        costs = [("Ct", t) for t in range(1, self.shape.T + 1)]
        total = sp.Add(*(symbol_of(k) for k in costs))
        self.nodes.append(_Node(COST, total, _add, costs))

    def node(self, name, expr, reads, function, t, l, i) -> _Node:
        subs, args = {}, []
        for read in reads:
            if read.role == "projection":
                pairs = self.contraction(read, t, l, i)
                subs[read.symbol] = sp.Add(*(symbol_of(w) * symbol_of(v) for w, v in pairs))
                args.append(pairs)
            else:
                key = self.value_key(read, t, l, i)
                subs[read.symbol] = symbol_of(key)
                args.append(key)
        return _Node(StepKey((name, t, l, i)), expr.xreplace(subs), function, args)

    def add_step_cost(self, t: int) -> None:
        cost, top = self.spec.cost, self.shape.L
        a, y = sp.Symbol(cost.prediction), sp.Symbol(cost.target)
        keys, expr = [], sp.Integer(0)
        for i in range(self.shape.n(top)):
            pair = [StepKey((self.cell.output, t, top, i)), ("y", t, i)]
            keys += pair
            expr += cost.per_unit.xreplace({a: symbol_of(pair[0]), y: symbol_of(pair[1])})
        per_unit = _numeric([a, y], cost.per_unit)
        pairs = len(keys) // 2

        def step_cost(*values: float) -> float:
            return sum(per_unit(values[2 * k], values[2 * k + 1]) for k in range(pairs))

        self.nodes.append(_Node(("Ct", t), expr, step_cost, keys))


def _add(*values: float) -> float:
    return sum(values)


def _numeric(symbols: list[sp.Symbol], expr: sp.Expr) -> Callable[..., float]:
    # The expression in Python arithmetic and the primitives' NumPy references.
    function = sp.lambdify(symbols, expr, modules=[numeric_namespace(), "math"])
    return lambda *values: float(function(*values))


def _build(spec: CellSpec, sizes: tuple[int, ...], T: int, input_layer: int) -> Unrolled:
    if len(sizes) < 2 or min(sizes) < 1 or T < 1:
        raise ValueError(f"a model of {spec.cell.name} needs two layers or more and T >= 1")
    probe = CellShape(spec.cell.name, sizes, T, input_layer)
    builder = _Builder(spec, probe)
    builder.add_leaves()
    compiled = {
        name: _numeric([r.symbol for r in spec.reads[name]], expr)
        for name, expr, _ in spec.equations
    }
    builder.add_cell(compiled)
    keys = (*builder.leaves, *(node.key for node in builder.nodes))
    _check_names(spec.cell, keys)
    shape = CellShape(spec.cell.name, sizes, T, input_layer, keys, len(builder.leaves))
    symbolic = SymbolicModel(shape, [(node.key, node.expr) for node in builder.nodes])
    return Unrolled(shape, symbolic, NumericCell(shape, builder.nodes))


def _check_names(cell: Cell, keys: tuple[Key, ...]) -> None:
    # Every value is a SymPy symbol named by its label: two values of one name would be
    # one atom (an equation named y or Ct, the target's and the step costs' names).
    seen: dict[str, Key] = {}
    for key in keys:
        other = seen.setdefault(label(key), key)
        if other != key:
            raise SpecError(
                cell.path,
                None,
                key[0],
                f"the unrolled oracle would name two values {label(key)} (y and Ct are "
                "the target's and the step costs' names): rename the equation",
            )


class NumericCell(NumericModel):
    """A spec's cell unrolled in plain Python arithmetic and the primitives' NumPy
    references (no derivative of anything: the engine's finite differences use it)."""

    def __init__(self, shape: CellShape, nodes: list[_Node]):
        """Keep the nodes, then trace the forward pass once (see NumericModel)."""
        self.nodes = nodes
        super().__init__(shape)

    def _forward(self, values: dict, get: Callable[[Key, Key], float]) -> None:
        for node in self.nodes:
            key, args = node.key, []
            for arg in node.args:
                if isinstance(arg, list):
                    args.append(sum(get(w, key) * get(v, key) for w, v in arg))
                else:
                    args.append(get(arg, key))
            values[key] = node.function(*args)
