"""A LaTeX printer for formulas in a document's own notation (the reverse of latex.py).

Input: a formula's AST (:mod:`symbolic.verify.latex`: parsed from the document, or
derived by :mod:`symbolic.verify.adjoints`) and the section of the notation file it
belongs to. Output: LaTeX that :func:`symbolic.verify.latex.parse` reads back as the same
formula, written as the document writes it:

- names as the document spells them: a variable's own name or the alias the document's
  formulas use most (``\\Gamma`` rather than ``G``, ``ac`` rather than ``\\tilde{a}``),
  never a misspelling;
- the time step as a left superscript ``{}^t a`` (``\\partial^t a`` in a derivative),
  unit indices as a subscript (``W_{ji}``), the layer as a superscript (``a_i^{l-1}``);
- functions and their primes by the notation's LaTeX names (``\\sigma'(z)``);
- sums with their bounds (``\\sum_{j=0}^{n^{l+1}-1}``), conditions in Iverson brackets
  (``[t \\ge 2, l = L]``, ``[l-1 \\text{ is a GRN layer}]``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from symbolic.verify.latex import (
    Add,
    Call,
    Deriv,
    Index,
    Iverson,
    LatexError,
    Mul,
    Num,
    Pow,
    Sum,
    Sym,
    _index_of,
    letters,
)
from symbolic.verify.notation import Notation, Section

_OPS = {"<": "<", ">": ">", "=": "=", "<=": "\\le", ">=": "\\ge", "!=": "\\ne"}


def spellings(syms: Iterable[Sym]) -> Counter:
    """How often each printed name occurs (the printer's choice among aliases)."""
    return Counter(s.name for s in syms)


class Printer:
    """Prints formula ASTs in the notation of one section of a document.

    Args:
        notation: The document's notation file.
        section: The section the formula belongs to.
        counts: How often the document's formulas use each printed name.
    """

    def __init__(self, notation: Notation, section: Section, counts: Counter | None = None):
        self.notation = notation
        self.section = section
        self.counts = counts or Counter()

    # ---------------------------------------------------------------- names

    def canonical(self, printed: str) -> str:
        """The notation's name of the variable a printed name stands for."""
        if printed == self.notation.cost:
            return printed
        name = self.section.aliases.get(printed, printed)
        if name in self.section.variables:
            return name
        return self.section.misspellings.get(printed, printed)

    def name(self, printed: str) -> str:
        """The spelling the document uses most for the variable (its own name on a tie)."""
        name = self.canonical(printed)
        choices = [name, *(a for a, v in self.section.aliases.items() if v == name)]
        return max(choices, key=lambda c: self.counts[c])

    # -------------------------------------------------------------- indices

    def index(self, idx: Index) -> str:
        """An index or bound: ``l-1``, ``2``, ``n^{l+1}-1``, ``T``."""
        if idx.size is not None:
            base = f"n^{self._script(idx.size)}"
        else:
            base = idx.letter or ""
        if not base:
            return str(idx.offset)
        return base + (f"{idx.offset:+d}" if idx.offset else "")

    def _script(self, idx: Index) -> str:
        text = self.index(idx)
        return text if len(text) == 1 else f"{{{text}}}"

    def _units(self, units: tuple[Index, ...]) -> str:
        if not units:
            return ""
        texts = [self.index(u) for u in units]
        if all(len(t) == 1 for t in texts):
            joined = "".join(texts)
            return f"_{joined}" if len(joined) == 1 else f"_{{{joined}}}"
        return "_{" + ",".join(texts) + "}"

    def sym(self, sym: Sym, partial: bool = False) -> str:
        """A value: ``{}^{t-1} a_j^l``, or ``\\partial^{t-1} a_j^l`` in a derivative."""
        body = self.name(sym.name) + self._units(sym.units)
        if sym.layer is not None:
            body += f"^{self._script(sym.layer)}"
        if partial:
            time = f"^{self._script(sym.time)}" if sym.time is not None else ""
            return f"\\partial{time} {body}"
        if sym.time is not None:
            return f"{{}}^{self._script(sym.time)} {body}"
        return body

    # ---------------------------------------------------------- expressions

    def deriv(self, node: Deriv) -> str:
        """``\\frac{\\partial C}{\\partial^t a_j^l}`` (or a partial of a value)."""
        if node.of == Sym(self.notation.cost):
            top = f"\\partial {self.notation.cost}"
        else:
            top = self.sym(node.of, partial=True)
        return f"\\frac{{{top}}}{{{self.sym(node.wrt, partial=True)}}}"

    def expr(self, node) -> str:
        """Any formula AST node (the right side of a formula)."""
        if isinstance(node, Num):
            return str(node.value)
        if isinstance(node, Index):
            return self.index(node)
        if isinstance(node, Sym):
            return self.sym(node)
        if isinstance(node, Deriv):
            return self.deriv(node)
        if isinstance(node, Call):
            primes = "'" * node.primes
            return f"{node.func}{primes}({self.expr(node.arg)})"
        if isinstance(node, Pow):
            return f"({self.expr(node.base)})^{{{node.exp}}}"
        if isinstance(node, Add):
            return self._add(node)
        if isinstance(node, Mul):
            return self._mul(node)
        if isinstance(node, Sum):
            return self._sum(node)
        if isinstance(node, Iverson):
            return "[" + ", ".join(self._relation(*r) for r in node.relations) + "]"
        raise TypeError(f"cannot print {type(node).__name__}")

    def _add(self, node: Add) -> str:
        out = ""
        for k, (sign, term) in enumerate(node.terms):
            text = self.expr(term)
            inner = term.factors[0] if isinstance(term, Mul) and len(term.factors) == 1 else term
            if isinstance(inner, Add) and sign < 0:
                text = f"\\left( {text} \\right)"
            if k == 0:
                out = ("-" if sign < 0 else "") + text
            else:
                out += (" - " if sign < 0 else " + ") + text
        return out

    def _factor(self, node) -> str:
        text = self.expr(node)
        if isinstance(node, Add) and (len(node.terms) > 1 or node.terms[0][0] < 0):
            return f"\\left( {text} \\right)"
        return text

    def _mul(self, node: Mul) -> str:
        if len(node.factors) == 1 and isinstance(node.factors[0], Add):
            return self.expr(node.factors[0])
        out = ""
        previous = None
        for factor in node.factors:
            text = self._factor(factor)
            if previous is None:
                out = text
            elif isinstance(previous, Iverson):
                out += " " + text
            else:
                out += " \\cdot " + text
            previous = factor
        return out or "1"

    def _sum(self, node: Sum) -> str:
        head = f"\\sum_{{{node.var}={self.index(node.lo)}}}"
        if node.hi is not None:
            head += f"^{{{self.index(node.hi)}}}"
        body = node.body
        factors = body.factors if isinstance(body, Mul) else (body,)
        # the scope as printed must be the only one the parser sees: the body ends
        # with a factor that uses the summation index, or it is bracketed
        last = factors[-1] if factors else None
        if last is None or node.var not in letters(last):
            return f"{head} \\left( {self.expr(body)} \\right)"
        return f"{head} {self.expr(body)}"

    def _side(self, node) -> str:
        # a condition's side as an index (l-1), as parsed or as derived
        if not isinstance(node, Index):
            try:
                node = _index_of(node)
            except LatexError:
                return self.expr(node)
        return self.index(node)

    def _relation(self, left, op: str, right) -> str:
        left = self._side(left)
        if op == "text":
            return f"{left} \\text{{ {right}}}"
        return f"{left} {_OPS[op]} {self._side(right)}"

    def equation(self, lhs, rhs) -> str:
        """``lhs = rhs`` in the document's notation."""
        return f"{self.expr(lhs)} = {self.expr(rhs)}"
