"""Claims written in a paper's LaTeX notation (a spec's ``[latex_claims]``), read as claims.

A spec may state a derivative as the paper prints it::

    [latex_claims]
    dC_dWTc = '\\frac{\\partial C}{\\partial WTc_j^l} = \\frac{\\partial C}{\\partial^t a_j^l}
               \\cdot {}^t\\Gamma_j^l \\cdot \\tanh'({}^tZc_j^l) \\cdot {}^{t-1}a_j^l'

The key is a claim's key (``dC_d<name>``) and the claim means what every claim means
(DESIGN.md, "Spec format"): the single-step gradient at one neuron. The LaTeX is parsed
by the grammar (:mod:`symbolic.verify.latex`) and its names read through a notation file
(``notation = "<file>"`` in the table, relative to the spec; by default the built-in
paper's) and one of its sections (``section = "<name>"``; by default the first whose
names the claim uses). Its left side fixes the neuron, the layer and the step; each value
of the right side is then a name of the cell (the notation's variable keys are the
cell's names): the output at that step and layer, the state (the output one step
before), the input (the output of the layer below), a parameter or an intermediate;
``\\frac{\\partial C}{\\partial X}`` is the claim's adjoint ``dC_d<X>``, ``\\sigma'(u)``
is ``sigmoid_prime(u)``, and a sum over a layer's neurons of a matrix entry times a value
is ``M.T @ (value)``. The claim so read is built and decided by
:mod:`symbolic.verify.claims` like any other, and its finding shows the LaTeX as written.
"""

from __future__ import annotations

import tomllib
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import sympy as sp

from symbolic.model import Cell, Claim
from symbolic.parse import SpecError, claim_from_text
from symbolic.verify import latex
from symbolic.verify.latex import Add, Call, Deriv, Index, Mul, Num, Pow, Sum, Sym
from symbolic.verify.mapping import Reader, syms_of
from symbolic.verify.notation import Notation, Section, builtin_paper, default_path, load
from symbolic.verify.printer import Printer, spellings

_ENTRY = "__entry_"  # a matrix entry inside a sum, before it becomes M.T @ (...)


@dataclass(frozen=True)
class _Frame:
    """Where the claim stands: its step, the cell's layer, the neuron (row) and, for a
    matrix entry or the input, the column."""

    time: Index | None
    layer: Index
    row: Index | None
    column: Index | None


def _shift(idx: Index | None, by: int) -> Index | None:
    return None if idx is None else replace(idx, offset=idx.offset + by)


class _Translator:
    """One LaTeX claim of ``cell`` read into the claim language."""

    def __init__(self, cell: Cell, reader: Reader, key: str):
        self.cell, self.reader, self.key = cell, reader, key
        self.notation = reader.notation
        self.state_of = {t: s for s, t in cell.states.items()}
        self.matrices: dict[str, sp.Symbol] = {}
        self.step = Index(self.notation.time) if cell.states else None

    def fail(self, symbol: str | None, message: str) -> SpecError:
        return self.reader.fail(symbol, message)

    # ------------------------------------------------------------------ the frame

    def frame(self, wrt: Sym) -> _Frame:
        """The claim's step, layer and neuron, from its left side and key."""
        name, var = self.key[4:], self.reader.variable(wrt)
        # a parameter's claim is the gradient through one step: step t
        time = wrt.time if wrt.time is not None else self.step
        if name in self.cell.params:
            self._expect(var.key, name, wrt)
            if self.cell.params[name] == "matrix":
                return _Frame(time, _shift(wrt.layer, 1), wrt.units[0], wrt.units[1])
            return _Frame(time, wrt.layer, wrt.units[0], None)
        if name in self.cell.states:
            self._expect(var.key, self.cell.states[name], wrt)
            return _Frame(_shift(wrt.time, 1), wrt.layer, wrt.units[0], None)
        if name == self.cell.input:
            self._expect(var.key, self.cell.output, wrt)
            return _Frame(wrt.time, _shift(wrt.layer, 1), None, wrt.units[0])
        raise self.fail(self.key, "a claim's key names a parameter, the input or a state")

    def _time(self, var) -> Index | None:
        return self.step if "time" in var.indices else None

    def _expect(self, key: str, name: str, wrt: Sym) -> None:
        if key != name:
            raise self.fail(wrt.name, f"the left side is the gradient by {key}, the key {self.key}")

    # ------------------------------------------------------------------ values

    def name(self, sym: Sym, frame: _Frame, row: Index | None) -> str:
        """The cell's name of a value of the right side, its indices checked."""
        var = self.reader.variable(sym)
        key, units = var.key, sym.units
        time = sym.time if sym.time is not None else self._time(var)
        if key in self.cell.params:
            if self.cell.params[key] == "matrix":
                raise self.fail(sym.name, "a matrix entry is read in a sum over the layer")
            where = (sym.layer == frame.layer, units == (row,))
        elif key == self.cell.output and sym.layer == _shift(frame.layer, -1):
            key = self.cell.input
            where = (time == frame.time, units == (frame.column,))
        elif key == self.cell.output and time == _shift(frame.time, -1) and key in self.state_of:
            key = self.state_of[key]
            where = (sym.layer == frame.layer, units == (row,))
        elif key in self.cell.roles and self.cell.roles[key] not in ("input", "projection"):
            where = (time == frame.time, sym.layer == frame.layer, units == (row,))
        else:
            raise self.fail(sym.name, f"names nothing of the cell {self.cell.name}")
        if not all(where):
            raise self.fail(
                sym.name,
                "indices that are not the claim's neuron, step and layer (a claim is the "
                "gradient through one step, at one neuron)",
            )
        return key

    def value(self, node, frame: _Frame, row: Index | None) -> sp.Expr:
        """The right side as a SymPy expression in the claim language's names."""
        if isinstance(node, Num):
            return sp.Integer(node.value)
        if isinstance(node, Sym):
            if node.name.startswith(_ENTRY):
                return self.matrices[node.name[len(_ENTRY) :]]
            return sp.Symbol(self.name(node, frame, row))
        if isinstance(node, Deriv):
            if node.of != Sym(self.notation.cost):
                raise self.fail(None, "a claim names derivatives of the cost only (dC/dX)")
            return sp.Symbol("dC_d" + self.name(node.wrt, frame, row))
        if isinstance(node, Call):
            prim = self.notation.functions[node.func]
            arg = self.value(node.arg, frame, row)
            return sp.Function(prim + ("_prime" if node.primes else ""))(arg)
        if isinstance(node, Pow):
            return self.value(node.base, frame, row) ** node.exp
        if isinstance(node, Add):
            return sp.Add(*(s * self.value(t, frame, row) for s, t in node.terms))
        if isinstance(node, Mul):
            return sp.Mul(*(self.value(f, frame, row) for f in node.factors))
        if isinstance(node, Sum):
            return self.layer_sum(node, frame)
        raise self.fail(None, f"a claim cannot state {type(node).__name__}")

    def layer_sum(self, node: Sum, frame: _Frame) -> sp.Expr:
        """``\\sum_j M_{jc} v_j`` over the layer's neurons as ``M.T @ (v)``."""
        if node.var not in self.notation.units:
            raise self.fail(node.var, "a claim is the gradient through one step: no sum over t")
        row = Index(node.var)
        body = sp.expand(self.value(self._entries(node.body, frame, row), frame, row))
        out = sp.S.Zero
        for matrix, sym in self.matrices.items():
            coeff = body.coeff(sym)
            if coeff != 0:
                out += sp.Symbol(f"{matrix}.T @ ({sp.sstr(sp.factor_terms(coeff))})")
        if body.xreplace({s: 0 for s in self.matrices.values()}) != 0:
            raise self.fail(node.var, "each term of a sum over the layer holds a matrix entry")
        return out

    def _entries(self, node, frame: _Frame, row: Index):
        # the matrix entries M_{row, column} of a sum's body, as placeholder values
        if isinstance(node, Sym):
            var = self.reader.variable(node)
            kind = self.cell.params.get(var.key)
            if kind == "matrix":
                if node.units != (row, frame.column) or node.layer != _shift(frame.layer, -1):
                    raise self.fail(
                        node.name, "a matrix entry's indices are the sum's and the claim's"
                    )
                self.matrices.setdefault(var.key, sp.Symbol(f"{_ENTRY}{var.key}"))
                return Sym(f"{_ENTRY}{var.key}")
            return node
        if isinstance(node, Add):
            return Add(tuple((s, self._entries(t, frame, row)) for s, t in node.terms))
        if isinstance(node, Mul):
            return Mul(tuple(self._entries(f, frame, row) for f in node.factors))
        return node


def _settings(cell: Cell) -> dict:
    return tomllib.loads(cell.text).get("latex_claims", {})


def _notation(cell: Cell, settings: dict) -> Notation:
    given = settings.get("notation")
    if given is None:
        return load(default_path(builtin_paper()))
    return load(Path(cell.path).parent / given)


def _section(notation: Notation, settings: dict, eq: latex.Equation, cell: Cell, line) -> Section:
    # the section named, else the first that knows every name of the claim, else the
    # first that knows its left side (whose reader then names the unknown symbol)
    wanted = settings.get("section")
    if wanted is not None:
        for section in notation.sections:
            if section.name == wanted:
                return section
        raise SpecError(cell.path, line, wanted, f"no section of that name in {notation.path}")
    names = [s.name for s in syms_of(eq.lhs)] + [s.name for s in syms_of(eq.rhs)]
    for needed in (names, names[:1]):
        for section in notation.sections:
            if all(section.variable(n) is not None for n in needed):
                return section
    raise SpecError(cell.path, line, names[0], f"a name no section of {notation.path} knows")


def _parse(cell: Cell, notation: Notation, key: str, source: str, line) -> latex.Equation:
    try:
        parses = latex.parse(source, frozenset(notation.functions))
    except latex.LatexError as exc:
        raise SpecError(cell.path, line, exc.symbol or key, str(exc)) from exc
    scopes = latex.readings(parses[0][1])
    if len(parses) > 1 or len(scopes) > 1:
        raise SpecError(
            cell.path, line, key, "a LaTeX claim must read one way: balance and bracket it"
        )
    eq = scopes[0]
    lhs = eq.lhs.factors[0] if isinstance(eq.lhs, Mul) and len(eq.lhs.factors) == 1 else eq.lhs
    if not isinstance(lhs, Deriv) or lhs.of != Sym(notation.cost):
        raise SpecError(cell.path, line, key, "a LaTeX claim's left side is dC/dX")
    return latex.Equation(lhs, eq.rhs)


@dataclass
class LatexClaim:
    """A LaTeX claim, read: the claim, its text in the claim language, and what the
    reading knows to print a claim-language value back in the paper's notation."""

    claim: Claim
    text: str
    lhs: Deriv
    frame: _Frame
    translator: _Translator
    counts: Counter

    def latex(self, text: str) -> str | None:
        """A value in the claim language (a corrected form), printed as the paper would
        write it; None when it names something the notation cannot print."""
        t = self.translator
        try:
            claim = claim_from_text(t.cell, self.claim.key, text, self.claim.line, text)
            rhs = _Printing(self).value(claim.expr, self.frame.row, claim.transposed)
        except (SpecError, _NotPrintable):
            return None
        printer = Printer(t.notation, t.reader.section, self.counts)
        return printer.equation(self.lhs, rhs)


class _NotPrintable(Exception):
    """A claim-language value with no counterpart in the notation."""


class _Printing:
    """Claim-language values (SymPy, in the cell's names) as formula ASTs at the frame."""

    def __init__(self, read: LatexClaim):
        self.t, self.frame = read.translator, read.frame
        self.functions = {prim: name for name, prim in self.t.notation.functions.items()}
        used = read.lhs.wrt.letters()
        self.row = next(u for u in self.t.notation.units if u not in used)

    def sym(self, name: str, row: Index | None) -> Sym:
        cell, frame = self.t.cell, self.frame
        time, layer, units = frame.time, frame.layer, (row,)
        if name == cell.input:
            name, layer, units = cell.output, _shift(layer, -1), (frame.column,)
        elif name in cell.states:
            name, time = cell.states[name], _shift(time, -1)
        elif cell.params.get(name) == "matrix":
            raise _NotPrintable(name)
        printed = [p for p, v in self.t.reader.section.variables.items() if v.key == name]
        if not printed:
            raise _NotPrintable(name)
        var = self.t.reader.section.variables[printed[0]]
        if "time" not in var.indices:
            time = None
        return Sym(printed[0], time, layer if "layer" in var.indices else None, units)

    def value(self, expr: sp.Expr, row: Index | None, transposed: dict):
        if expr.is_Integer:
            n = int(expr)
            return Num(n) if n >= 0 else Add(((-1, Num(-n)),))
        if expr.is_Symbol:
            return self._symbol(expr.name, row, transposed)
        if isinstance(expr, sp.Add):
            terms = sorted(expr.args, key=lambda a: bool(a.as_coeff_Mul()[0] < 0))
            return Add(tuple(self._signed(a, row, transposed) for a in terms))
        if isinstance(expr, sp.Mul):
            sign, node = self._signed(expr, row, transposed)
            return node if sign > 0 else Add(((-1, node),))
        if isinstance(expr, sp.Pow) and expr.exp.is_Integer and expr.exp > 0:
            return Pow(self.value(expr.base, row, transposed), int(expr.exp))
        name = type(expr).__name__
        if isinstance(expr, sp.Function) and name in self.functions:
            return Call(self.functions[name], 0, self.value(expr.args[0], row, transposed))
        raise _NotPrintable(str(expr))

    def _signed(self, expr: sp.Expr, row, transposed) -> tuple[int, object]:
        coeff, rest = expr.as_coeff_Mul()
        if not coeff.is_Integer:
            raise _NotPrintable(str(coeff))
        factors = [] if abs(coeff) == 1 else [Num(abs(int(coeff)))]
        factors += [self.value(f, row, transposed) for f in sp.Mul.make_args(rest) if f != 1]
        return (-1 if coeff < 0 else 1), (factors[0] if len(factors) == 1 else Mul(tuple(factors)))

    def _symbol(self, name: str, row, transposed):
        if name in transposed:  # M.T @ (v): the sum over the layer's neurons
            matrix, vector = transposed[name]
            j = Index(self.row)
            layer = _shift(self.frame.layer, -1)
            entry = Sym(matrix, None, layer, (j, self.frame.column))
            body = Mul((self.value(vector, j, transposed), entry))
            return Sum(self.row, Index(None, 0), Index(size=self.frame.layer, offset=-1), body)
        if name.startswith("dC_d"):
            return Deriv(Sym(self.t.notation.cost), self.sym(name[4:], row))
        return self.sym(name, row)


def read_claim(cell: Cell, key: str, source: str, line: int | None) -> LatexClaim:
    """One LaTeX claim of ``cell``, read into the claim language.

    Raises:
        SpecError: A name the notation or the cell does not know, indices that are not
            the claim's neuron, or LaTeX the grammar cannot read (naming the spec line).
    """
    settings = _settings(cell)
    notation = _notation(cell, settings)
    eq = _parse(cell, notation, key, source, line)
    section = _section(notation, settings, eq, cell, line)
    reader = Reader(notation, section, str(cell.path), line or 0)
    reader.check(eq.lhs)
    for sym in syms_of(eq.rhs):
        reader.variable(sym)  # an unknown name: the error names it
    translator = _Translator(cell, reader, key)
    frame = translator.frame(eq.lhs.wrt)
    text = sp.sstr(translator.value(eq.rhs, frame, frame.row))
    claim = claim_from_text(cell, key, text, line, source)
    return LatexClaim(claim, text, eq.lhs, frame, translator, _spellings(eq, notation, section))


def _spellings(eq: latex.Equation, notation: Notation, section: Section) -> Counter:
    # the names as the claim spells them, else as the notation's definitions do
    counts = Counter()
    for text in section.definitions:
        try:
            counts.update(spellings(syms_of(latex.parse_expression(text, frozenset()).rhs)))
        except latex.LatexError:
            continue
    for name, n in spellings(syms_of(eq.rhs)).items():
        counts[name] += 100 * n
    return counts


def latex_claims(cell: Cell) -> list[LatexClaim]:
    """Every ``[latex_claims]`` entry of ``cell``, read (see :func:`read_claim`)."""
    return [read_claim(cell, key, source, line) for key, source, line in cell.latex_claims]
