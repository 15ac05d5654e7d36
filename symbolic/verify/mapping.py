"""Parsed formulas mapped through a notation onto the unrolled models.

Input: an :class:`~symbolic.verify.latex.Equation` (one parse of a formula) and the
:class:`~symbolic.verify.notation.Section` it belongs to. Output, for the engine
(:mod:`symbolic.verify.engine`): the key of its left side, its readings as functions
``(c, **indices) -> value`` on a context of :mod:`symbolic.verify.unrolled`, the index
values to check on a model, its free indices and their ranges, and the notes on how a
name was read (a misspelling, a value printed without its time step).

A sum's bound can itself be read two ways, and each way is a reading: ``n^l`` is the
number of neurons of layer l, or its last index; a bound ``l`` that is the layer's
letter where the sum runs over units is the layer index as printed, or stands for the
last neuron of layer l.
"""

from __future__ import annotations

import inspect
import itertools
from dataclasses import dataclass, field

from symbolic.parse import SpecError
from symbolic.verify.latex import (
    Add,
    Call,
    Deriv,
    Equation,
    Frac,
    Index,
    Iverson,
    LatexError,
    Mul,
    Num,
    Pow,
    Sum,
    Sym,
    free_letters,
)
from symbolic.verify.latex import _index_of as index_of
from symbolic.verify.notation import Notation, Section, Variable
from symbolic.verify.unrolled import Key, NoSuchNeuron

_COMPARE = {
    "<": lambda a, b: a < b,
    ">": lambda a, b: a > b,
    "=": lambda a, b: a == b,
    "<=": lambda a, b: a <= b,
    ">=": lambda a, b: a >= b,
    "!=": lambda a, b: a != b,
}


@dataclass
class Reader:
    """Reads one formula's names through the notation of its section.

    Attributes:
        notation: The document's notation.
        section: The section the formula is in.
        file: The document (for errors).
        line: The formula's first line (for errors).
        notes: How names were read (misspellings, implied time steps), in order.
    """

    notation: Notation
    section: Section
    file: str
    line: int
    notes: list[str] = field(default_factory=list)

    def fail(self, symbol: str | None, message: str) -> SpecError:
        """The error for a name or form this notation cannot read (exit status 2)."""
        return SpecError(self.file, self.line, symbol, message)

    # ---------------------------------------------------------------- names

    def variable(self, sym: Sym) -> Variable:
        """The variable ``sym`` names; an unknown name is an error naming the line."""
        found = self.section.variable(sym.name)
        if found is None:
            known = ", ".join(sorted(self.section.variables))
            raise self.fail(
                sym.name,
                f"a name the notation of section '{self.section.name}' does not know "
                f"(it knows {known}, their aliases and misspellings)",
            )
        var, note = found
        if note and note not in self.notes:
            self.notes.append(note)
        return var

    def check(self, node) -> None:
        """Every name and function of ``node`` known, every value's indices complete."""
        for sym in _syms(node):
            self._check_sym(sym)
        for call in _calls(node):
            if call.func not in self.notation.functions:
                raise self.fail(call.func, "a function the notation does not know")
            if call.primes != 1:
                raise self.fail(call.func, "only a function's first derivative can be checked")

    def _check_sym(self, sym: Sym) -> None:
        var = self.variable(sym)
        kinds = var.indices
        units = [k for k in kinds if k.startswith("unit")]
        if len(sym.units) != len(units):
            raise self.fail(
                sym.name, f"takes {len(units)} unit index(es), printed with {len(sym.units)}"
            )
        if (sym.layer is not None) != ("layer" in kinds):
            raise self.fail(
                sym.name, "takes a layer superscript" if "layer" in kinds else "takes no layer"
            )
        if sym.time is not None and "time" not in kinds:
            raise self.fail(sym.name, "takes no time step")
        if sym.time is None and "time" in kinds:
            if var.untimed is None:
                raise self.fail(sym.name, "is printed without its time step")
            printed = sym.name + "".join(f"_{u}" for u in sym.units)
            note = f"{printed} is read as {var.untimed} of step t, {{}}^t {printed}."
            if note not in self.notes:
                self.notes.append(note)

    # ------------------------------------------------------------- values

    def value(self, index: Index, env: dict, shape) -> int:
        """An index or bound's value at the index values ``env`` on ``shape``."""
        if index.size is not None:
            layer = self.value(index.size, env, shape)
            return _size(shape, layer) + index.offset
        if index.letter is None:
            return index.offset
        if index.letter in env:
            return env[index.letter] + index.offset
        if index.letter == self.notation.steps:
            return shape.T + index.offset
        if index.letter == self.notation.top:
            return shape.L + index.offset
        raise NoSuchNeuron(f"a value for the index {index.letter}")

    def key(self, sym: Sym, env: dict, shape) -> Key:
        """The model's key of the value ``sym`` names."""
        var = self.variable(sym)
        units = list(sym.units)
        out: list = [var.key]
        for kind in var.indices:
            if kind == "time":
                out.append(self.value(sym.time or Index(self.notation.time), env, shape))
            elif kind == "layer":
                out.append(self.value(sym.layer, env, shape))
            else:
                out.append(self.value(units.pop(0), env, shape))
        return tuple(out)

    def evaluate(self, node, c, env: dict):
        """The value of ``node`` on the context ``c`` (exact or numeric)."""
        shape = c.shape
        if isinstance(node, Num):
            return node.value
        if isinstance(node, Sym):
            return c.v(self.key(node, env, shape))
        if isinstance(node, Deriv):
            if self.is_cost(node.of):
                return c.dC(self.key(node.wrt, env, shape))
            return c.d(self.key(node.of, env, shape), self.key(node.wrt, env, shape))
        if isinstance(node, Call):
            arg = self.evaluate(node.arg, c, env)
            if node.primes == 0:
                return c.apply(self.notation.functions[node.func], arg)
            return c.prime(self.notation.functions[node.func], arg)
        if isinstance(node, Pow):
            base, out = self.evaluate(node.base, c, env), 1
            for _ in range(node.exp):
                out = out * base
            return out
        if isinstance(node, Add):
            return sum(sign * self.evaluate(t, c, env) for sign, t in node.terms)
        if isinstance(node, Mul):
            return self._product(node, c, env)
        if isinstance(node, Sum):
            return self._sum(node, c, env)
        if isinstance(node, Iverson):
            return int(self.holds(node, env, shape))
        raise self.fail(None, f"cannot evaluate {type(node).__name__} (e.g. a fraction)")

    def _product(self, node: Mul, c, env: dict):
        # [cond] first: a term whose condition fails is 0 and reads nothing.
        guards = [f for f in node.factors if isinstance(f, Iverson)]
        if not all(self.holds(g, env, c.shape) for g in guards):
            return 0
        out = 1
        for f in node.factors:
            if not isinstance(f, Iverson):
                out = out * self.evaluate(f, c, env)
        return out

    def _sum(self, node: Sum, c, env: dict):
        lo = self.value(node.lo, env, c.shape)
        if node.hi is None:
            hi = _size(c.shape, self.unit_layer(node.var, node.body, env, c.shape)) - 1
        else:
            hi = self.value(node.hi, env, c.shape)
        return sum(self.evaluate(node.body, c, {**env, node.var: v}) for v in range(lo, hi + 1))

    def holds(self, node: Iverson, env: dict, shape) -> bool:
        """Whether every relation of ``[cond]`` holds at ``env`` on ``shape``."""
        for left, op, right in node.relations:
            a = self.value(index_of(left), env, shape)
            if op == "text":
                meaning = self.section.predicates.get(right)
                if meaning is None:
                    raise self.fail(right, "a condition the notation does not define")
                if not getattr(shape, "is_grn", lambda _l: False)(a):
                    return False
            elif not _COMPARE[op](a, self.value(index_of(right), env, shape)):
                return False
        return True

    def is_cost(self, sym: Sym) -> bool:
        """Whether ``sym`` is the cost (``C``, no indices)."""
        return sym.name == self.notation.cost and sym == Sym(sym.name)

    def unit_layer(self, letter: str, node, env: dict, shape) -> int:
        """The layer whose units ``letter`` runs over: from the first value it indexes."""
        for sym in _syms(node):
            var = self.variable(sym)
            kinds = [k for k in var.indices if k.startswith("unit")]
            for kind, unit in zip(kinds, sym.units, strict=True):
                if unit.letter == letter:
                    if kind == "unit@top":
                        return shape.L
                    base = self.value(sym.layer, env, shape)
                    return base + (1 if kind == "unit+1" else 0)
        raise NoSuchNeuron(f"a layer for the index {letter}")


def _size(shape, layer: int) -> int:
    lowest = getattr(shape, "input_layer", 0)
    if not lowest <= layer <= shape.L:
        raise NoSuchNeuron(f"layer {layer}, which {shape.name} does not have")
    return shape.n(layer)


def _syms(node):
    # Every value named in node (the cost of a derivative excluded), in printed order.
    if isinstance(node, Sym):
        yield node
    elif isinstance(node, Deriv):
        yield from ([node.of] if node.of.time or node.of.layer or node.of.units else [])
        yield node.wrt
    elif isinstance(node, (Call, Pow)):
        yield from _syms(node.arg if isinstance(node, Call) else node.base)
    elif isinstance(node, Add):
        for _, t in node.terms:
            yield from _syms(t)
    elif isinstance(node, Mul):
        for f in node.factors:
            yield from _syms(f)
    elif isinstance(node, Sum):
        yield from _syms(node.body)
    elif isinstance(node, Frac):
        yield from _syms(node.num)
        yield from _syms(node.den)


def syms_of(node) -> list[Sym]:
    """Every value ``node`` names, in printed order (the cost of a derivative excluded)."""
    return list(_syms(node))


def _calls(node):
    if isinstance(node, Call):
        yield node
        yield from _calls(node.arg)
    elif isinstance(node, Add):
        for _, t in node.terms:
            yield from _calls(t)
    elif isinstance(node, Mul):
        for f in node.factors:
            yield from _calls(f)
    elif isinstance(node, Sum):
        yield from _calls(node.body)
    elif isinstance(node, Pow):
        yield from _calls(node.base)


# ------------------------------------------------------------- bounds as readings


def bound_readings(reader: Reader, node) -> list[tuple[tuple[str, ...], object]]:
    """Every reading of the sums' bounds in ``node``: (names of the choices, tree)."""
    if isinstance(node, Sum):
        out = []
        for name, hi, _ in _bounds(reader, node):
            for names, body in bound_readings(reader, node.body):
                out.append(((*((name,) if name else ()), *names), Sum(node.var, node.lo, hi, body)))
        return out
    if isinstance(node, Add):
        signs = [s for s, _ in node.terms]
        options = [bound_readings(reader, t) for _, t in node.terms]
        return [
            (
                sum((n for n, _ in combo), ()),
                Add(tuple(zip(signs, (t for _, t in combo), strict=True))),
            )
            for combo in itertools.product(*options)
        ]
    if isinstance(node, Mul):
        options = [bound_readings(reader, f) for f in node.factors]
        return [
            (sum((n for n, _ in combo), ()), Mul(tuple(f for _, f in combo)))
            for combo in itertools.product(*options)
        ]
    return [((), node)]


def repairs_in(reader: Reader, node) -> set[str]:
    """The names of the bound choices in ``node`` that repair a symbol used against its
    defined meaning (a layer letter as the bound of a sum over units), rather than
    choose among conventional readings."""
    out: set[str] = set()
    if isinstance(node, Sum):
        out |= {name for name, _, repair in _bounds(reader, node) if repair}
        out |= repairs_in(reader, node.body)
    elif isinstance(node, Add):
        for _, t in node.terms:
            out |= repairs_in(reader, t)
    elif isinstance(node, Mul):
        for f in node.factors:
            out |= repairs_in(reader, f)
    return out


def _bounds(reader: Reader, node: Sum) -> list[tuple[str | None, Index | None, bool]]:
    # (name, bound, whether the choice repairs the bound rather than reads it)
    hi = node.hi
    if hi is not None and hi.size is not None and hi.offset == 0:
        layer = hi.size
        return [
            (f"{hi} is the last index of layer {layer}", Index(size=layer, offset=-1), False),
            (f"{hi} is the number of neurons of layer {layer}", hi, False),
        ]
    units = reader.notation.units
    if hi is not None and hi.letter in reader.notation.layers and node.var in units:
        return [
            (f"bound {hi} is the layer index, as printed", hi, False),
            (
                f"bound {hi} stands for the last neuron of layer {hi}",
                Index(size=hi, offset=-1),
                True,
            ),
        ]
    return [(None, hi, False)]


# ---------------------------------------------------------------- readings


class Reading:
    """One reading of a formula, callable as the engine calls transcriptions:
    ``reading(c, **indices)`` (its signature names the indices, free ones included)."""

    def __init__(self, reader: Reader, rhs, names: list[str]):
        self.reader = reader
        self.rhs = rhs
        params = [inspect.Parameter("c", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        params += [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY) for n in names]
        self.__signature__ = inspect.Signature(params)

    def __call__(self, c, **idx):
        return self.reader.evaluate(self.rhs, c, idx)


def lhs_letters(reader: Reader, equation: Equation) -> list[str]:
    """The formula's index letters: the time step (when used), then the left side's
    letters in printed order (layer, then units)."""
    wrt = equation.lhs.wrt
    order = [x.letter for x in (wrt.time, wrt.layer, *wrt.units) if x is not None and x.letter]
    time = reader.notation.time
    if time not in order and time in free_letters(equation.rhs):
        order.insert(0, time)
    if time in order:
        order.remove(time)
        order.insert(0, time)
    return list(dict.fromkeys(order))


def free_of(reader: Reader, rhs, indices: list[str]) -> list[str]:
    """Letters of ``rhs`` outside every sum and not on the left side: free indices."""
    named = {reader.notation.steps, reader.notation.top}
    return sorted(free_letters(rhs) - set(indices) - named)


def guarded_syms(node, guarded: bool = False):
    """The values ``node`` reads unconditionally (not behind a ``[cond]``), with the sum
    each bound letter belongs to (for :func:`index_domain`)."""
    if isinstance(node, Mul):
        if any(isinstance(f, Iverson) for f in node.factors):
            return
        for f in node.factors:
            yield from guarded_syms(f)
    elif isinstance(node, Add):
        for _, t in node.terms:
            yield from guarded_syms(t)
    elif isinstance(node, Sum):
        yield from guarded_syms(node.body)
    elif isinstance(node, Call):
        yield from guarded_syms(node.arg)
    elif isinstance(node, Pow):
        yield from guarded_syms(node.base)
    elif isinstance(node, Deriv):
        yield from ([node.of] if node.of.time or node.of.layer or node.of.units else [])
        yield node.wrt
    elif isinstance(node, Sym):
        yield node


def _sum_starts(node, out: dict) -> dict:
    if isinstance(node, Sum):
        out.setdefault(node.var, node.lo)
        _sum_starts(node.body, out)
    elif isinstance(node, Add):
        for _, t in node.terms:
            _sum_starts(t, out)
    elif isinstance(node, Mul):
        for f in node.factors:
            _sum_starts(f, out)
    return out


def index_domain(reader: Reader, equation: Equation, letters: list[str]):
    """``shape -> [indices]``: every value of the formula's letters at which its left
    side and every value its right side reads unconditionally exist (summation and
    free letters at their first value)."""
    starts = _sum_starts(equation.rhs, {})
    reads = list(guarded_syms(equation.rhs))
    wrt = equation.lhs.wrt
    named = {reader.notation.steps, reader.notation.top}

    def fits(shape, env: dict) -> bool:
        full = dict(env)
        for var, lo in starts.items():
            full.setdefault(var, reader.value(lo, env, shape) if lo.letter is None else 0)
        try:
            if not shape.has(reader.key(wrt, env, shape)):
                return False
            for sym in reads:
                letters = sym.letters() - named
                scope = {**{ch: 0 for ch in letters if ch not in full}, **full}
                if not shape.has(reader.key(sym, scope, shape)):
                    return False
        except (NoSuchNeuron, IndexError):
            return False
        return True

    def domain(shape) -> list[dict]:
        ranges = []
        for letter in letters:
            if letter == reader.notation.top:  # L on the left side: the last layer
                ranges.append(range(shape.L, shape.L + 1))
            elif letter == reader.notation.steps:
                ranges.append(range(shape.T, shape.T + 1))
            elif letter == reader.notation.time:
                ranges.append(range(1, shape.T + 1))
            elif letter in reader.notation.layers:
                ranges.append(range(-1, shape.L + 2))
            else:
                ranges.append(range(max(shape.sizes)))
        combos = (dict(zip(letters, values, strict=True)) for values in itertools.product(*ranges))
        return [env for env in combos if fits(shape, env)]

    return domain


def free_domain(reader: Reader, letter: str, rhs):
    """``(shape, indices) -> range``: the units of the layer the free letter indexes."""

    def domain(shape, idx: dict) -> range:
        return range(_size(shape, reader.unit_layer(letter, rhs, idx, shape)))

    return domain


def is_general(equation: Equation) -> bool:
    """Whether a value's layer is a letter (the general models) or every one a number."""
    return any(
        s.layer is not None and (s.layer.letter or s.layer.size is not None)
        for s in (*_syms(equation.lhs), *_syms(equation.rhs))
    )


def as_error(reader: Reader, exc: LatexError) -> SpecError:
    """A grammar error as the command reports it (exit status 2)."""
    return reader.fail(exc.symbol, str(exc))
