"""The LaTeX of derivation papers, parsed: a Lark grammar and the formula AST it builds.

The notation is that of papers that derive a network's gradients by hand:
``\\frac{\\partial C}{\\partial X}`` and ``\\partial^t X``, left superscripts ``{}^t X``
for the time step, subscripts for unit indices (``W_{ji}``: one index per character, or
comma-separated), superscripts for the layer (``a_i^{l-1}``), ``\\sum_{j=0}^{n}`` with
its bounds, ``\\cdot`` and implicit products, ``\\left( \\right)``, primes on functions
(``\\sigma'``, ``\\tanh'``), aligned rows (``&=``, ``&+``, ``\\quad``; :mod:`extract`
joins the rows of one formula) and Greek names. Whether a name is a function or a
variable is the notation file's business (:mod:`symbolic.verify.notation`): the grammar
reads ``f(x)`` as a product, and :func:`parse` turns it into a call when ``f`` is one of
the ``functions`` it is given.

What cannot be read as printed comes out of the parse, never as an exception:

- an unbalanced bracket: a ``)`` that closes nothing is a :class:`Repair` choice (drop
  it, or let it close the bracket that the end of an earlier row closed), an unclosed
  ``(`` is closed at the end; each choice is one reading;
- the scope of a sum without brackets: the rest of its product, or only the first few
  factors (:func:`readings` keeps the scopes that leave no summation index outside);
- a free index: :func:`free_letters` (an index neither on the left side nor bound).

:func:`parse` returns the raw parse (:class:`Equation`, with :class:`SumOp` markers in
products); :func:`readings` resolves it into :class:`Sum` nodes, one tree per reading.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import LarkError

GRAMMAR = r"""
?start: equation
equation: expr "=" expr

?expr: term
     | expr PLUS term      -> add
     | expr MINUS term     -> sub
     | MINUS term          -> neg
     | PLUS term           -> pos

term: factor (_TIMES? factor)*

?factor: symbol
       | number
       | group
       | group SUP script          -> power
       | frac
       | partial
       | sum_op
       | iverson
       | UNDERBRACE "{" expr "}"   -> underbrace

number: INT
group: LPAR expr RPAR
iverson: LSQB condition RSQB
condition: relation ("," relation)*
relation: expr REL expr
        | expr "=" expr             -> same
        | expr TEXT                 -> predicate

frac: FRAC "{" expr "}" "{" expr "}"
partial: PARTIAL ("^" script)? symbol

symbol: left? base scripts
left: "{" "}" "^" script
base: NAME | GREEK | FUNC | TILDE "{" NAME "}"
scripts: (SUB script | SUP script | PRIME)*
script: CHAR | "{" index_list "}"
index_list: expr ("," expr)*

sum_op: SUM "_" "{" NAME "=" expr "}" ("^" script)?

SUB: "_"
SUP: "^"
PLUS: "+"
MINUS: "-"
LPAR: "(" | "\\left(" | "\\left["
RPAR: ")" | "\\right)" | "\\right]"
LSQB: "["
RSQB: "]"
REL: "<" | ">" | "\\ge" | "\\le" | "\\ne" | "\\geq" | "\\leq" | "\\neq"
_TIMES: "\\cdot" | "\\times"
FRAC: "\\frac"
PARTIAL: "\\partial"
SUM: "\\sum"
TILDE: "\\tilde"
UNDERBRACE: "\\underbrace"
TEXT: /\\text\{[^}]*\}/
GREEK: /\\(alpha|beta|gamma|delta|epsilon|varepsilon|zeta|eta|theta|iota|kappa|lambda|mu|nu|xi|pi|rho|tau|upsilon|phi|varphi|chi|psi|omega|Gamma|Delta|Theta|Lambda|Xi|Pi|Sigma|Upsilon|Phi|Psi|Omega)(?![A-Za-z])/
FUNC: /\\(sigma|tanh|exp|log|ln|sinh|cosh|relu|softplus)(?![A-Za-z])/
NAME: /[A-Za-z]+/
CHAR: /[A-Za-z0-9]/
INT: /[0-9]+/
PRIME: "'"

%ignore /\s+/
%ignore "&"
%ignore /\\\\/
%ignore /\\q?quad(?![A-Za-z])/
%ignore /\\[,;!]/
"""


class LatexError(ValueError):
    """Text the grammar cannot read; ``column`` is where, in the text parsed."""

    def __init__(self, message: str, column: int | None = None, symbol: str | None = None):
        super().__init__(message)
        self.column = column
        self.symbol = symbol


# --------------------------------------------------------------------------- the AST


@dataclass(frozen=True)
class Index:
    """An index or a bound: ``letter + offset`` (``l-1``), a number (``letter`` None),
    or the size of a layer plus an offset (``n^{l+1}-1``: ``size`` is ``l+1``)."""

    letter: str | None = None
    offset: int = 0
    size: Index | None = None

    def __str__(self) -> str:
        size = str(self.size)
        base = (f"n^{size}" if len(size) == 1 else f"n^{{{size}}}") if self.size else ""
        base = base or self.letter or ""
        if not base:
            return str(self.offset)
        return base + (f"{self.offset:+d}" if self.offset else "")


@dataclass(frozen=True)
class Sym:
    """A printed name with its indices: ``{}^t a_i^l`` is ``Sym("a", t, l, (i,))``."""

    name: str
    time: Index | None = None
    layer: Index | None = None
    units: tuple[Index, ...] = ()
    primes: int = 0

    def letters(self) -> set[str]:
        """The index letters it uses."""
        found = [self.time, self.layer, *self.units]
        return {x.letter for x in found if x is not None and x.letter}


@dataclass(frozen=True)
class Num:
    """An integer (``text`` as printed: a subscript ``00`` is two indices)."""

    value: int
    text: str = field(default="", compare=False)


@dataclass(frozen=True)
class Deriv:
    """``\\frac{\\partial of}{\\partial wrt}`` (``of`` is the cost or a value)."""

    of: Sym
    wrt: Sym


@dataclass(frozen=True)
class Call:
    """A function (or one of its derivatives, ``primes``) applied to ``arg``."""

    func: str
    primes: int
    arg: object


@dataclass(frozen=True)
class Add:
    """A sum of signed terms: ``terms`` is ``((+1|-1, node), ...)``."""

    terms: tuple[tuple[int, object], ...]


@dataclass(frozen=True)
class Mul:
    """A product of factors (a raw product may hold :class:`SumOp` markers)."""

    factors: tuple


@dataclass(frozen=True)
class SumOp:
    """``\\sum_{var=lo}^{hi}`` as printed, before its scope is decided."""

    var: str
    lo: Index
    hi: Index | None


@dataclass(frozen=True)
class Sum:
    """A sum whose scope is decided: ``var`` from ``lo`` to ``hi`` of ``body``."""

    var: str
    lo: Index
    hi: Index | None
    body: object


@dataclass(frozen=True)
class Pow:
    """A bracketed expression to an integer power: ``(a - y)^2``."""

    base: object
    exp: int


@dataclass(frozen=True)
class Frac:
    """A fraction that is not a derivative."""

    num: object
    den: object


@dataclass(frozen=True)
class Iverson:
    """``[cond]``: 1 where every relation holds, else 0 (``relations`` are
    ``(left, op, right)``, op one of < > = <= >= !=, or ``(left, "text", phrase)``)."""

    relations: tuple[tuple[object, str, object], ...]


@dataclass(frozen=True)
class Equation:
    """``lhs = rhs`` as parsed (one reading: see :func:`readings`)."""

    lhs: object
    rhs: object


@dataclass
class Repair:
    """How one reading repairs the brackets of the text (empty: read as printed)."""

    name: str = "as printed"
    dropped: list[int] = field(default_factory=list)


# ----------------------------------------------------------------- the transformer


def _index_of(node) -> Index:
    # An index expression (l-1, 2, n^{l+1}-1, T) from the expression AST.
    if isinstance(node, Num):
        return Index(None, node.value)
    if isinstance(node, Sym) and not node.units and node.time is None:
        if node.name == "n" and node.layer is not None:
            return Index(size=node.layer)
        if node.layer is None and node.primes == 0:
            return Index(node.name)
    if isinstance(node, Mul) and len(node.factors) == 1:
        return _index_of(node.factors[0])
    if isinstance(node, Add) and len(node.terms) == 2:
        (s0, first), (s1, second) = node.terms
        if s0 == 1 and isinstance(_flat(second), Num):
            base = _index_of(first)
            return replace(base, offset=base.offset + s1 * _flat(second).value)
    raise LatexError(f"not an index: {node}")


def _flat(node):
    return node.factors[0] if isinstance(node, Mul) and len(node.factors) == 1 else node


def _split_units(node) -> list[Index]:
    # A subscript: W_{ji} is two indices, W_{00} too; W_{10,2} with commas.
    node = _flat(node)
    if isinstance(node, Num):
        return [Index(None, int(ch)) for ch in (node.text or str(node.value))]
    if isinstance(node, Sym) and node.layer is None and not node.units and node.time is None:
        return [Index(ch) for ch in node.name]
    if isinstance(node, Mul):
        return [i for f in node.factors for i in _split_units(f)]
    return [_index_of(node)]


@v_args(inline=True)
class _ToAST(Transformer):
    """Parse tree -> the raw AST (products keep their :class:`SumOp` markers)."""

    def equation(self, lhs, rhs):
        return Equation(lhs, rhs)

    def add(self, left, _op, right):
        return Add(self._terms(left) + ((1, right),))

    def sub(self, left, _op, right):
        return Add(self._terms(left) + ((-1, right),))

    def neg(self, _op, term):
        return Add(((-1, term),))

    def pos(self, _op, term):
        return term

    @staticmethod
    def _terms(node):
        return node.terms if isinstance(node, Add) else ((1, node),)

    def term(self, *factors):
        return Mul(factors)

    def number(self, token):
        return Num(int(token), str(token))

    def group(self, _open, expr, _close):
        return Group(expr)

    def power(self, group, _sup, script):
        exp = _flat(script[0])
        if not isinstance(exp, Num):
            raise LatexError("a power is an integer")
        return Pow(group, exp.value)

    def underbrace(self, _cmd, expr):
        return Group(expr)

    def iverson(self, _open, condition, _close):
        return Iverson(condition)

    def condition(self, *relations):
        return tuple(relations)

    def relation(self, left, op, right):
        ops = {"\\ge": ">=", "\\geq": ">=", "\\le": "<=", "\\leq": "<=", "\\ne": "!="}
        return (left, ops.get(str(op), str(op)), right)

    def same(self, left, right):
        return (left, "=", right)

    def predicate(self, left, text):
        return (left, "text", str(text)[6:-1].strip())

    def frac(self, _cmd, num, den):
        num, den = _flat(num), _flat(den)
        if isinstance(den, Partial) and isinstance(num, Partial):
            return Deriv(num.sym, den.sym)
        return Frac(num, den)

    def partial(self, _cmd, *rest):
        *time, sym = rest
        if time:
            if sym.time is not None:
                raise LatexError(f"two time steps on {sym.name}")
            sym = replace(sym, time=_index_of(time[0][0]))
        return Partial(sym)

    def symbol(self, *parts):
        left = None
        if len(parts) == 3:
            left, base, scripts = parts
        else:
            base, scripts = parts
        layer, units, primes = None, (), 0
        for kind, value in scripts:
            if kind == "_":
                units += tuple(value)
            elif kind == "^":
                layer = value[0] if len(value) == 1 else None
            else:
                primes += 1
        return Sym(base, left, layer, units, primes)

    def left(self, script):
        return _index_of(script[0])

    def base(self, *tokens):
        if len(tokens) == 2:  # \tilde{a}
            return f"\\tilde{{{tokens[1]}}}"
        return str(tokens[0])

    def scripts(self, *items):
        out, items = [], list(items)
        while items:
            mark = items.pop(0)
            if mark.type == "PRIME":
                out.append(("'", None))
            elif mark.type == "SUB":
                script = items.pop(0)
                if len(script) > 1:  # W_{10,2}: comma-separated indices
                    out.append(("_", [_index_of(node) for node in script]))
                else:  # W_{ji}, W_{00}: one index per character
                    out.append(("_", _split_units(script[0])))
            else:
                out.append(("^", [_index_of(node) for node in items.pop(0)]))
        return out

    def script(self, content):
        if isinstance(content, Token):
            ch = str(content)
            return [Num(int(ch))] if ch.isdigit() else [Sym(ch)]
        return content

    def index_list(self, *exprs):
        return list(exprs)

    def sum_op(self, _cmd, var, lo, *hi):
        upper = _index_of(hi[0][0]) if hi else None
        return SumOp(str(var), _index_of(lo), upper)


@dataclass(frozen=True)
class Group:
    """A bracketed expression (kept apart so that ``f(x)`` can become a call)."""

    expr: object


@dataclass(frozen=True)
class Partial:
    """``\\partial X`` inside a fraction."""

    sym: Sym


@functools.cache
def _parser() -> Lark:
    return Lark(GRAMMAR, parser="lalr", lexer="contextual", maybe_placeholders=False)


# ------------------------------------------------------------------ brackets


_OPEN = {"(", "\\left(", "\\left["}
_CLOSE = {")", "\\right)", "\\right]"}


def _tokens(text: str) -> list[Token]:
    try:
        return list(_parser().lex(text, dont_ignore=False))
    except LarkError as exc:
        raise LatexError(f"cannot read the LaTeX: {_first_line(exc)}") from exc


def _first_line(exc: Exception) -> str:
    return str(exc).strip().split("\n")[0]


def _bracket_repairs(text: str, row_ends: tuple[int, ...]) -> list[Repair]:
    """The readings of the text's brackets: as printed when they balance; else, for a
    ``)`` that closes nothing, drop it (the bracket closed where printed) or move to it
    the ``)`` that ended an earlier row (the bracket closed at the stray one)."""
    stack: list[int] = []
    closes_at_row_end: list[int] = []
    stray: list[int] = []
    for tok in _raw_brackets(text):
        if tok.value in _OPEN:
            stack.append(tok.start_pos)
        elif stack:
            stack.pop()
            rest = text[tok.end_pos :]
            if any(rest[: e - tok.end_pos].strip() == "" for e in row_ends if e >= tok.end_pos):
                closes_at_row_end.append(tok.start_pos)
        else:
            stray.append(tok.start_pos)
    if not stray:
        return [Repair()]
    where = stray[0]
    repairs = [Repair("the first display's last ')' closes the bracket, as printed", [where])]
    earlier = [p for p in closes_at_row_end if p < where]
    if earlier:
        repairs.append(Repair("the second display's stray ')' closes the bracket", [earlier[-1]]))
    return repairs


def _raw_brackets(text: str) -> Iterator[Token]:
    for tok in _tokens(text):
        if tok.type in ("LPAR", "RPAR"):
            yield tok


def _apply(text: str, repair: Repair) -> str:
    # Drop the dropped brackets; an unclosed '(' is closed at the end.
    out = text
    for pos in sorted(repair.dropped, reverse=True):
        end = pos + (len("\\right)") if out.startswith("\\right", pos) else 1)
        out = out[:pos] + " " * (end - pos) + out[end:]
    depth = 0
    for tok in _raw_brackets(out):
        depth += 1 if tok.value in _OPEN else -1
    return out + " )" * max(depth, 0)


# ---------------------------------------------------------------------- parsing


def parse_expression(text: str, functions: frozenset[str] = frozenset()) -> Equation:
    """Parse ``lhs = rhs`` exactly as printed (brackets must balance).

    Raises:
        LatexError: The text is not in the grammar's notation.
    """
    try:
        tree = _parser().parse(text)
    except LarkError as exc:
        column = getattr(exc, "column", None)
        raise LatexError(f"cannot parse: {_first_line(exc)}", column) from exc
    try:
        raw = _ToAST().transform(tree)
    except LarkError as exc:
        cause = exc.__context__ if isinstance(exc.__context__, LatexError) else None
        if cause is not None:
            raise cause from exc
        raise LatexError(f"cannot read: {_first_line(exc)}") from exc
    return _calls(raw, functions)


def parse(
    text: str, functions: frozenset[str] = frozenset(), row_ends: tuple[int, ...] = ()
) -> list[tuple[Repair, Equation]]:
    """Every bracket reading of ``text`` (see :func:`_bracket_repairs`), parsed.

    Args:
        text: One formula: ``lhs = rhs``, its rows joined (``&``, ``\\\\`` allowed).
        functions: The names that are functions (``\\sigma``, ``\\tanh``).
        row_ends: Offsets in ``text`` where a printed row or display ends.
    """
    return [
        (repair, parse_expression(_apply(text, repair), functions))
        for repair in _bracket_repairs(text, row_ends)
    ]


def _calls(node, functions: frozenset[str]):
    # f followed by a bracket, where f is a function: a call (its primes kept).
    if isinstance(node, Equation):
        return Equation(_calls(node.lhs, functions), _calls(node.rhs, functions))
    if isinstance(node, Add):
        return Add(tuple((s, _calls(t, functions)) for s, t in node.terms))
    if isinstance(node, Group):
        return _calls(node.expr, functions)
    if isinstance(node, Frac):
        return Frac(_calls(node.num, functions), _calls(node.den, functions))
    if isinstance(node, Pow):
        return Pow(_calls(node.base, functions), node.exp)
    if isinstance(node, Iverson):
        return Iverson(
            tuple((_calls(a, functions), op, _calls(b, functions)) for a, op, b in node.relations)
        )
    if not isinstance(node, Mul):
        return node
    out, factors = [], list(node.factors)
    while factors:
        f = factors.pop(0)
        if isinstance(f, Sym) and f.name in functions:
            if not factors or not isinstance(factors[0], Group):
                raise LatexError(f"{f.name} without its argument in brackets", symbol=f.name)
            f = Call(f.name, f.primes, _calls(factors.pop(0).expr, functions))
        out.append(_calls(f, functions))
    return Mul(tuple(out))


# --------------------------------------------------------- scopes of sums


def letters(node) -> set[str]:
    """Every index letter used in ``node`` (bound ones included)."""
    if isinstance(node, Sym):
        return node.letters()
    if isinstance(node, Deriv):
        return node.of.letters() | node.wrt.letters()
    if isinstance(node, Call):
        return letters(node.arg)
    if isinstance(node, Pow):
        return letters(node.base)
    if isinstance(node, Add):
        return set().union(*(letters(t) for _, t in node.terms))
    if isinstance(node, Mul):
        return set().union(set(), *(letters(f) for f in node.factors))
    if isinstance(node, Sum):
        return letters(node.body) | _index_letters(node.hi)
    if isinstance(node, Frac):
        return letters(node.num) | letters(node.den)
    if isinstance(node, Iverson):
        return set().union(set(), *(letters(a) | letters(b) for a, _, b in node.relations))
    return set()


def _index_letters(index: Index | None) -> set[str]:
    if index is None:
        return set()
    if index.size is not None:
        return _index_letters(index.size)
    return {index.letter} if index.letter else set()


def free_letters(node, bound: frozenset[str] = frozenset()) -> set[str]:
    """Index letters of ``node`` not bound by a sum around them."""
    if isinstance(node, Sum):
        return free_letters(node.body, bound | {node.var}) | (_index_letters(node.hi) - bound)
    if isinstance(node, Add):
        return set().union(*(free_letters(t, bound) for _, t in node.terms))
    if isinstance(node, Mul):
        return set().union(set(), *(free_letters(f, bound) for f in node.factors))
    if isinstance(node, Call):
        return free_letters(node.arg, bound)
    if isinstance(node, Pow):
        return free_letters(node.base, bound)
    if isinstance(node, Iverson):
        return set().union(
            set(), *(free_letters(a, bound) | free_letters(b, bound) for a, _, b in node.relations)
        )
    return letters(node) - bound


def _scopes(node) -> list[object]:
    # Every way to resolve the SumOp markers: a sum's scope is the rest of its product,
    # or a prefix of it when no use of its index is left outside.
    if isinstance(node, Add):
        options = [_scopes(t) for _, t in node.terms]
        signs = [s for s, _ in node.terms]
        return [Add(tuple(zip(signs, combo, strict=True))) for combo in itertools.product(*options)]
    if isinstance(node, Call):
        return [Call(node.func, node.primes, arg) for arg in _scopes(node.arg)]
    if isinstance(node, Pow):
        return [Pow(base, node.exp) for base in _scopes(node.base)]
    if isinstance(node, Mul):
        return _product_scopes(list(node.factors))
    return [node]


def _product_scopes(factors: list) -> list[object]:
    if not factors:
        return [Mul(())]
    head, rest = factors[0], factors[1:]
    if isinstance(head, SumOp):
        out = []
        for cut in range(len(rest), 0, -1):
            inside, outside = rest[:cut], rest[cut:]
            if outside and head.var in letters(Mul(tuple(outside))):
                continue
            for body in _product_scopes(inside):
                for after in _product_scopes(outside):
                    out.append(_join(Sum(head.var, head.lo, head.hi, body), after))
        return out
    out = []
    for first in _scopes(head):
        for after in _product_scopes(rest):
            out.append(_join(first, after))
    return out


def _join(first, after: Mul) -> Mul:
    return Mul((first, *after.factors))


def readings(equation: Equation) -> list[Equation]:
    """Every scope reading of the sums of ``equation`` (at least one; the widest first)."""
    return [Equation(equation.lhs, rhs) for rhs in _scopes(equation.rhs)]


__all__ = [
    "Add",
    "Call",
    "Deriv",
    "Equation",
    "Frac",
    "Index",
    "Iverson",
    "LatexError",
    "Mul",
    "Num",
    "Pow",
    "Repair",
    "Sum",
    "SumOp",
    "Sym",
    "free_letters",
    "letters",
    "parse",
    "parse_expression",
    "readings",
]
