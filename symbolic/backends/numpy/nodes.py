"""The NumPy plan's code as nodes: array expressions and the statements built of them.

The plan (:mod:`.plan`) and the ufunc emitter (:mod:`.ufuncs`) build these nodes; the
backend's printer (:mod:`.printer`) turns them into the lines the templates receive.
Each node knows the names it mentions, so the plan binds exactly the values its code
reads (:func:`mentioned`) without reading its own output back.

Expressions (:class:`Expr`): a :class:`Name`; :class:`Raw` text over the module's own
sizes, dtype and loop counters only (``(_T, _B, _n_out)``, ``_t + 1``, a number); an
:class:`Index`, :class:`Attr`, :class:`Apply` (a call), an :class:`Op` (operands joined by
one operator), a parenthesized :class:`Paren` or :class:`Grouped` one, a :class:`Tuple`,
a :class:`Str` literal, a per-neuron SymPy expression :class:`Sym`, and :class:`Reduce`
(a sum over axes).

Statements: :class:`Comment`, :class:`Let` (``target = value``, ``target += value``),
:class:`Alloc` (a new buffer), :class:`Call` (a function writing into ``out=``),
:class:`Copy` (``np.copyto``), :class:`Fill`, :class:`Primitive` (a primitive of the
NumPy table, in place), :class:`MultiLet` (``a, b = c, d``) and :class:`If`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import sympy as sp

# --- expressions ------------------------------------------------------------------------


class Expr:
    """An expression of the array code."""

    def names(self) -> set[str]:
        """The names the expression reads."""
        raise NotImplementedError


@dataclass(frozen=True)
class Name(Expr):
    """A variable of the generated function."""

    id: str

    def __post_init__(self) -> None:
        if not self.id.isidentifier():
            raise ValueError(f"not a name: {self.id!r}")

    def names(self) -> set[str]:
        return {self.id}


@dataclass(frozen=True)
class Raw(Expr):
    """Text made only of numbers and the module's own names (sizes, dtype, loop
    counters): it reads no value of the cell."""

    text: str

    def names(self) -> set[str]:
        return set()


@dataclass(frozen=True)
class Str(Expr):
    """A string literal (a key of ``grads``, ``cache``, an ``einsum`` signature)."""

    text: str

    def names(self) -> set[str]:
        return set()


@dataclass(frozen=True)
class Index(Expr):
    """``base[index]``."""

    base: Expr
    index: Expr

    def names(self) -> set[str]:
        return self.base.names() | self.index.names()


@dataclass(frozen=True)
class Attr(Expr):
    """``base.attr`` (``.T``, or a method to call)."""

    base: Expr
    attr: str

    def names(self) -> set[str]:
        return self.base.names()


@dataclass(frozen=True)
class Apply(Expr):
    """``func(args, key=value)``: ``func`` a module function (``np.concatenate``) or an
    expression (a method)."""

    func: str | Expr
    args: tuple[Expr, ...] = ()
    kwargs: tuple[tuple[str, Expr], ...] = ()

    def names(self) -> set[str]:
        out = self.func.names() if isinstance(self.func, Expr) else set()
        for arg in self.args:
            out |= arg.names()
        for _, value in self.kwargs:
            out |= value.names()
        return out


@dataclass(frozen=True)
class Op(Expr):
    """Operands joined by one binary operator (``a @ b.T``, ``t1 + t2 + t3``)."""

    op: str
    operands: tuple[Expr, ...]

    def names(self) -> set[str]:
        return _names(self.operands)


@dataclass(frozen=True)
class Paren(Expr):
    """``(inner)``."""

    inner: Expr

    def names(self) -> set[str]:
        return self.inner.names()


@dataclass(frozen=True)
class Grouped(Expr):
    """``inner``, parenthesized unless it prints as a name (ready for a method call)."""

    inner: Expr

    def names(self) -> set[str]:
        return self.inner.names()


@dataclass(frozen=True)
class Tuple(Expr):
    """``(a, b, ...)``."""

    items: tuple[Expr, ...]

    def names(self) -> set[str]:
        return _names(self.items)


@dataclass(frozen=True)
class Sym(Expr):
    """A per-neuron SymPy expression, printed by the NumPy printer; ``rename``:
    ``(symbol, name)`` pairs, each symbol read from the array of that name."""

    expr: sp.Expr
    rename: tuple[tuple[str, str], ...] = ()

    def names(self) -> set[str]:
        rename = dict(self.rename)
        return {rename.get(s.name, s.name) for s in self.expr.free_symbols}


@dataclass(frozen=True)
class Reduce(Expr):
    """``value.sum(axis=axes)``: a gradient summed over lanes (and steps)."""

    value: Expr
    axes: str

    def names(self) -> set[str]:
        return self.value.names()


def _names(exprs: Iterable[Expr]) -> set[str]:
    out: set[str] = set()
    for e in exprs:
        out |= e.names()
    return out


def as_expr(value: str | Expr) -> Expr:
    """A name given as text, as a :class:`Name`; an expression as it is."""
    return Name(value) if isinstance(value, str) else value


def at(base: str | Expr, index: str) -> Index:
    """``base[index]``, the index over the module's own sizes and loop counters."""
    return Index(as_expr(base), Raw(index))


def method(base: str | Expr, name: str, *args: Expr, **kwargs: Expr) -> Apply:
    """``base.name(args, key=value)``."""
    return Apply(Attr(as_expr(base), name), args, tuple(kwargs.items()))


def transposed(base: str | Expr) -> Attr:
    """``base.T``."""
    return Attr(as_expr(base), "T")


# --- statements -------------------------------------------------------------------------


class Node:
    """A statement of the array code."""

    def reads(self) -> set[str]:
        return set()

    def writes(self) -> set[str]:
        return set()


@dataclass(frozen=True)
class Comment(Node):
    """``# text``, one line (the text displayed safely: a newline becomes ``\\n``)."""

    text: str


@dataclass(frozen=True)
class Let(Node):
    """``target = value`` (or ``target += value``): a binding, a view, a result."""

    target: Expr
    value: Expr
    op: str = "="

    def reads(self) -> set[str]:
        return self.value.names() | (self.target.names() if self.op != "=" else set())

    def writes(self) -> set[str]:
        return self.target.names()


@dataclass(frozen=True)
class Alloc(Node):
    """``target = np.empty(shape, _dtype)``, or ``np.empty_like(like)``."""

    target: str
    shape: str = ""
    like: str | None = None

    def reads(self) -> set[str]:
        return {self.like} if self.like else set()

    def writes(self) -> set[str]:
        return {self.target}


@dataclass(frozen=True)
class Call(Node):
    """``func(args, out=out)``: a ufunc writing into a buffer."""

    func: str
    args: tuple[Expr, ...]
    out: Expr

    def reads(self) -> set[str]:
        return _names(self.args)

    def writes(self) -> set[str]:
        return self.out.names()


@dataclass(frozen=True)
class Copy(Node):
    """``np.copyto(out, source)``."""

    out: Expr
    source: Expr

    def reads(self) -> set[str]:
        return self.source.names()

    def writes(self) -> set[str]:
        return self.out.names()


@dataclass(frozen=True)
class Fill(Node):
    """``out.fill(value)``."""

    out: Expr
    value: str

    def writes(self) -> set[str]:
        return self.out.names()


@dataclass(frozen=True)
class Primitive(Node):
    """A primitive of the NumPy table computed into ``out`` (its in-place form)."""

    name: str
    arg: Expr
    out: Expr

    def reads(self) -> set[str]:
        return self.arg.names()

    def writes(self) -> set[str]:
        return self.out.names()


@dataclass(frozen=True)
class MultiLet(Node):
    """``a, b = c, d``: names rebound at once (buffers swapped between steps)."""

    targets: tuple[str, ...]
    values: tuple[Expr, ...]

    def reads(self) -> set[str]:
        return _names(self.values)

    def writes(self) -> set[str]:
        return set(self.targets)


@dataclass(frozen=True)
class If(Node):
    """``if condition:`` and its body, indented."""

    condition: Expr
    body: tuple[Node, ...]

    def reads(self) -> set[str]:
        return self.condition.names() | reads_of(self.body)

    def writes(self) -> set[str]:
        out: set[str] = set()
        for node in self.body:
            out |= node.writes()
        return out


def reads_of(nodes: Iterable[Node]) -> set[str]:
    """Every name some statement of ``nodes`` reads."""
    out: set[str] = set()
    for node in nodes:
        out |= node.reads()
    return out


def mentioned(nodes: Iterable[Node]) -> set[str]:
    """Every name the statements read or write: the values the code must have bound."""
    out: set[str] = set()
    for node in nodes:
        out |= node.reads() | node.writes()
    return out
