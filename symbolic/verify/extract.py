"""The derivative formulas of a document, found in its LaTeX and decided (pipeline: verify).

Input: a Markdown document with ``$$`` displays and its notation file
(:mod:`symbolic.verify.notation`). Output: an engine :class:`~symbolic.verify.engine.Paper`
whose formulas were found, not listed, and :func:`verify_document`'s findings.

Every display is split into rows (``\\\\``); a row ``lhs = rhs`` whose left side is a
derivative of the cost (``\\frac{\\partial C}{\\partial X}``) or a function's derivative
(``\\sigma'(x)``) starts a formula; a row ``&= rhs`` starts another with the same left
side; a row (or a whole display) that starts with ``+`` or ``-`` continues the formula
before it. Each formula is parsed (:mod:`symbolic.verify.latex`: its bracket and scope
readings), read through the notation (:mod:`symbolic.verify.mapping`: its bound
readings, its models and index values) and handed to the engine. Its correction is
derived from the section's definitions and printed in the document's notation
(:mod:`symbolic.verify.corrections`); either way it is checked like the others.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import sympy as sp

from symbolic.parse import SpecError
from symbolic.primitives import PRIMITIVES
from symbolic.verify import latex
from symbolic.verify.engine import (
    DIFFERENT,
    FD_TOLERANCE,
    Formula,
    relative_difference,
)
from symbolic.verify.mapping import (
    Reader,
    Reading,
    bound_readings,
    free_domain,
    free_of,
    index_domain,
    is_general,
    lhs_letters,
    repairs_in,
)
from symbolic.verify.notation import Notation, Section
from symbolic.verify.unrolled import check_primitive_rules
from symbolic.verify.verdict import FAILS, HOLDS, UNDECIDED, Finding

BUILTIN_FILE = "symbolic/papers/neural-networks-derivatives.md"
"""How findings name the built-in paper (DESIGN.md, CLI: ``file``)."""

_DISPLAY = re.compile(r"\$\$(.*?)\$\$", re.DOTALL)
_ROW_BREAK = re.compile(r"\\\\(?![A-Za-z])")
_ENVIRONMENT = re.compile(r"\\(begin|end)\{aligned\}")


@dataclass
class Row:
    """One printed row of a display: its text and the lines it spans."""

    text: str
    line: int
    last: int
    starts_display: bool = False


@dataclass
class Found:
    """A formula found in the document, before it is parsed."""

    line: int
    last: int
    lhs: str
    parts: list[str] = field(default_factory=list)

    def text(self) -> tuple[str, tuple[int, ...]]:
        """``lhs = rhs`` with its rows joined, and where each row ends in it."""
        out, ends = self.lhs + " =", []
        for part in self.parts:
            out += " " + part
            ends.append(len(out))
        return out, tuple(ends)


# --------------------------------------------------------------------- finding


def rows(text: str) -> list[Row]:
    """Every row of every display of ``text``, with its lines."""
    found = []
    for match in _DISPLAY.finditer(text):
        body, offset = match.group(1), match.start(1)
        start = 0
        pieces = [*_ROW_BREAK.finditer(body), None]
        for k, brk in enumerate(pieces):
            end = brk.start() if brk is not None else len(body)
            # the environment's words blanked, so that offsets still point at lines
            chunk = _ENVIRONMENT.sub(lambda m: " " * len(m.group(0)), body[start:end])
            if chunk.strip():
                lead = len(chunk) - len(chunk.lstrip())
                first = text.count("\n", 0, offset + start + lead) + 1
                last = text.count("\n", 0, offset + start + len(chunk.rstrip())) + 1
                found.append(Row(chunk.strip(), first, last, k == 0))
            start = brk.end() if brk is not None else end
    return found


def _split_equals(text: str) -> tuple[str, str] | None:
    depth = 0
    for k, ch in enumerate(text):
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if ch == "=" and depth == 0:
            return text[:k], text[k + 1 :]
    return None


def _bare(text: str) -> str:
    return re.sub(r"^(\s|&|\\q?quad(?![A-Za-z]))*", "", text)


def find_formulas(text: str, notation: Notation) -> list[Found]:
    """The formulas of ``text``: rows whose left side is a derivative of the cost or of a
    function, ``&=`` rows after them, and their ``+``/``-`` continuations."""
    cost = re.compile(r"^\\frac\{\s*\\partial\s*" + re.escape(notation.cost) + r"\s*\}")
    functions = "|".join(re.escape(f) for f in notation.functions) or "(?!)"
    rule = re.compile(rf"^({functions})'+\s*\(")
    formulas: list[Found] = []
    current: Found | None = None
    for row in rows(text):
        bare = _bare(row.text)
        if bare[:1] in "+-" and current is not None:
            current.parts.append(bare)
            current.last = row.last
            continue
        if bare.startswith("=") and current is not None and not row.starts_display:
            current = Found(row.line, row.last, current.lhs, [bare[1:].strip()])
            formulas.append(current)
            continue
        split = _split_equals(bare)
        lhs = split[0].strip() if split else ""
        if split and (cost.match(lhs) or rule.match(lhs)):
            current = Found(row.line, row.last, lhs, [split[1].strip()])
            formulas.append(current)
        else:
            current = None  # a definition, or text that speaks of no derivative
    return formulas


# --------------------------------------------------------------------- reading


@dataclass
class Parsed:
    """A found formula, parsed and read: what :class:`Formula` is built from."""

    found: Found
    id: str
    section: Section
    reader: Reader
    readings: dict[str, latex.Equation]
    rule: bool = False
    repairs: frozenset[str] = frozenset()

    @property
    def first(self) -> latex.Equation:
        """The first reading (every reading has the same left side)."""
        return next(iter(self.readings.values()))


def _readings(
    reader: Reader, text: str, ends: tuple[int, ...]
) -> tuple[dict[str, latex.Equation], frozenset[str]]:
    # Bracket repairs x sum scopes x bound readings, each named by its choices; and the
    # names of those that repair a symbol used against its meaning.
    functions = frozenset(reader.notation.functions)
    try:
        parses = latex.parse(text, functions, ends)
    except latex.LatexError as exc:
        raise reader.fail(exc.symbol, str(exc)) from exc
    out: dict[str, latex.Equation] = {}
    repaired: set[str] = set()
    for repair, parsed in parses:
        scopes = latex.readings(parsed)
        for k, scoped in enumerate(scopes):
            against = repairs_in(reader, scoped.rhs)
            for names, rhs in bound_readings(reader, scoped.rhs):
                words = [] if repair.name == "as printed" else [repair.name]
                words += [f"scope {k + 1} of {len(scopes)}"] if len(scopes) > 1 else []
                name = "; ".join([*words, *names]) or "as printed"
                out.setdefault(name, latex.Equation(scoped.lhs, rhs))
                if against & set(names):
                    repaired.add(name)
    return out, frozenset(repaired)


def parse_found(found: Found, notation: Notation, lines: list[str], file: str) -> Parsed:
    """Parse and read one found formula (errors name its line)."""
    section = notation.section_at(lines, found.line)
    ident = notation.ids.get(found.line)
    if section is None:
        raise SpecError(file, found.line, None, "a formula before any section of the notation")
    reader = Reader(notation, section, file, found.line)
    text, ends = found.text()
    readings, repairs = _readings(reader, text, ends)
    first = next(iter(readings.values()))
    rule = isinstance(first.lhs, latex.Mul) and isinstance(first.lhs.factors[0], latex.Call)
    if not rule:
        if not isinstance(first.lhs, latex.Mul) or not isinstance(
            first.lhs.factors[0], latex.Deriv
        ):
            raise reader.fail(None, "the left side is not a derivative of the cost")
        first = latex.Equation(first.lhs.factors[0], first.rhs)
        readings = {n: latex.Equation(first.lhs, eq.rhs) for n, eq in readings.items()}
        for eq in readings.values():
            reader.check(eq.lhs)
            reader.check(eq.rhs)
    fid = ident or f"{section.name}.line{found.line}"
    return Parsed(found, fid, section, reader, readings, rule, repairs)


# ------------------------------------------------------------ engine formulas


def _lhs_signature(parsed: Parsed) -> tuple:
    wrt = parsed.first.lhs.wrt
    var = parsed.reader.variable(wrt)
    return (parsed.section.name, var.key, wrt.time, wrt.layer, wrt.units)


def formula_of(
    parsed: Parsed,
    fix: Formula | None = None,
    fid: str | None = None,
    latex_text: str | None = None,
) -> Formula:
    """The engine's :class:`Formula` for a parsed formula (``fid`` and ``latex_text``
    for a corrected form: its id, and its LaTeX as the finding prints it)."""
    if parsed.rule:
        return Formula(parsed.id, parsed.found.line, parsed.found.last, custom=_rule_check(parsed))
    reader = parsed.reader
    eq = parsed.first
    letters = lhs_letters(reader, eq)
    readings, free = {}, {}
    for name, reading in parsed.readings.items():
        extra = free_of(reader, reading.rhs, letters)
        for letter in extra:
            free.setdefault(letter, free_domain(reader, letter, reading.rhs))
        readings[name] = Reading(reader, reading.rhs, [*letters, *extra])
    section = parsed.section
    general = is_general(eq)
    return Formula(
        id=fid or parsed.id,
        line=parsed.found.line,
        last=parsed.found.last,
        models=lambda: section.models(general),
        indices=index_domain(reader, eq, letters),
        wrt=_KeyOf(reader, eq.lhs.wrt, section, general),
        readings=readings,
        free=free,
        corrected=fix.latex if fix is not None else None,
        fix=fix,
        note=" ".join(reader.notes),
        latex=latex_text,
        against=parsed.repairs,
    )


class _KeyOf:
    """``wrt(**indices) -> key`` of a formula's left side (its values need a shape only
    for sizes and T, which a left side does not use; the section's first model serves)."""

    def __init__(self, reader: Reader, wrt: latex.Sym, section: Section, general: bool):
        self.reader, self.wrt = reader, wrt
        self.shape = section.models(general)[0].shape

    def __call__(self, **idx):
        return self.reader.key(self.wrt, idx, self.shape)


def _rule_check(parsed: Parsed):
    """The check of ``f'(x) = ...`` (a function's derivative, e.g. paper line 19)."""
    eq = parsed.first
    call = eq.lhs.factors[0]
    name = parsed.reader.notation.functions[call.func]
    x = sp.Symbol("x", real=True)
    prim = PRIMITIVES[name]

    def to_sympy(node):
        if isinstance(node, latex.Num):
            return sp.Integer(node.value)
        if isinstance(node, latex.Sym):
            return x
        if isinstance(node, latex.Call):
            f = PRIMITIVES[parsed.reader.notation.functions[node.func]].elementary
            return f(to_sympy(node.arg)) if node.primes == 0 else sp.diff(f(x), x)
        if isinstance(node, latex.Add):
            return sp.Add(*(s * to_sympy(t) for s, t in node.terms))
        if isinstance(node, latex.Mul):
            return sp.Mul(*(to_sympy(f) for f in node.factors))
        raise parsed.reader.fail(None, f"cannot read {type(node).__name__} in a derivative rule")

    def check(formula: Formula) -> Finding:
        rhs = to_sympy(eq.rhs)
        truth = sp.diff(prim.elementary(x), x)
        exact = sp.cancel((truth - rhs).rewrite(sp.exp)) == 0
        ref = prim.reference
        f = sp.lambdify(x, rhs, modules="numpy")
        xs = np.linspace(-6.0, 6.0, 17)
        h = 1e-6
        errors = [relative_difference((ref(v + h) - ref(v - h)) / (2 * h), float(f(v))) for v in xs]
        checks = [
            f"exact: d/dx of the definition of {call.func} minus the right side cancels "
            f"to {'0' if exact else 'a nonzero expression'} (sympy.cancel in e^x)",
            f"FD of the NumPy {name} at {len(xs)} points in [-6, 6]: max rel err {max(errors):.1e}",
            *(f"primitives: {line}" for line in check_primitive_rules((name,))),
        ]
        worst = max(errors)
        finding = Finding(formula.id, formula.line, formula.source, UNDECIDED, checks=checks)
        finding.file = parsed.reader.file
        if exact and worst < FD_TOLERANCE:
            finding.verdict = HOLDS
        elif not exact and worst > DIFFERENT:
            rule = prim.derivative(sp.Symbol("out"), x)
            printed = sp.latex(rule).replace("out", f"{call.func}(x)")
            finding.verdict = FAILS
            finding.corrected = f"{call.func}'(x) = {printed}"
            finding.detail = (
                f"No reading holds: the derivative of the definition of {call.func} differs "
                f"from the right side (finite differences: max rel err {worst:.1e})."
            )
        return finding

    return check
