"""Corrected formulas of a document, derived and printed in its own notation.

Input: the formulas found in a document (:class:`~symbolic.verify.extract.Parsed`) and
their engine records. Output, for each formula, engine :class:`Formula` records of

- its *derived* correction: the true derivative of its left side
  (:mod:`symbolic.verify.adjoints`, from the section's ``definitions``: the notation
  file's, or, for a section whose model is a spec, the spec's cell written in the
  document's notation by :mod:`symbolic.verify.celldefs`), and
- its *repairs*: each of its readings printed on its own (a bound written out, a
  bracket closed, a sum's scope bracketed), one of which the engine may prove.

Every correction is printed by :class:`~symbolic.verify.printer.Printer` in the document's
notation, parsed back with the grammar, read through the notation and checked by the
engine like any formula of the document, at the index values of the formula it corrects:
the engine attaches it only when it ``holds``.
"""

from __future__ import annotations

import operator
from dataclasses import replace

from symbolic.verify.adjoints import Deriver, Model, right_side
from symbolic.verify.celldefs import Untranslatable, cell_definitions
from symbolic.verify.engine import Formula
from symbolic.verify.extract import Found, Parsed, formula_of, parse_found
from symbolic.verify.latex import Deriv, Sym
from symbolic.verify.mapping import lhs_letters, syms_of
from symbolic.verify.notation import Notation, Section
from symbolic.verify.printer import Printer, spellings
from symbolic.verify.unrolled import NoSuchNeuron

_COMPARE = {
    "<": operator.lt,
    ">": operator.gt,
    "=": operator.eq,
    "<=": operator.le,
    ">=": operator.ge,
    "!=": operator.ne,
}


class Corrector:
    """Derives and prints the corrections of one document's formulas.

    Args:
        notation: The document's notation.
        lines: The document's lines.
        file: The document, as findings name it.
        parsed: Every formula found in it (their names choose the spellings).
    """

    def __init__(self, notation: Notation, lines: list[str], file: str, parsed: list[Parsed]):
        self.notation = notation
        self.lines = lines
        self.file = file
        syms = [s for p in parsed for eq in p.readings.values() for s in syms_of(eq.rhs)]
        self.counts = spellings(syms)
        self._derivers: dict[str, Deriver] = {}
        self._shared: dict[tuple[str, str], tuple[Formula, list]] = {}
        self._cell_definitions: dict[str, list[str]] = {}
        self.untranslated: dict[str, str] = {}
        """Section name -> why its spec could not be written in the notation."""

    def printer(self, section: Section) -> Printer:
        """The printer of a section's formulas."""
        return Printer(self.notation, section, self.counts)

    def definitions(self, section: Section) -> list[str]:
        """The section's ``definitions``: the notation file's, else its spec's cell
        written in the notation (:mod:`symbolic.verify.celldefs`; none when the notation
        cannot write it, and :attr:`untranslated` says why)."""
        if section.definitions or section.spec is None:
            return section.definitions
        if section.name not in self._cell_definitions:
            try:
                found = cell_definitions(self.notation, section)
            except Untranslatable as exc:
                found, self.untranslated[section.name] = [], str(exc)
            self._cell_definitions[section.name] = found
        return self._cell_definitions[section.name]

    def _deriver(self, section: Section) -> Deriver:
        if section.name not in self._derivers:
            with_definitions = replace(section, definitions=self.definitions(section))
            model = Model(self.notation, with_definitions, self.printer(section).canonical)
            self._derivers[section.name] = Deriver(model)
        return self._derivers[section.name]

    def _formula(self, p: Parsed, formula: Formula, rhs, fid: str) -> Formula:
        # Print lhs = rhs, parse it back at p's line, and check it where p speaks (one
        # record per text: where every formula it corrects speaks).
        printer = self.printer(p.section)
        lhs = Deriv(Sym(self.notation.cost), p.first.lhs.wrt)
        text = printer.equation(lhs, rhs)
        shared = self._shared.get((p.section.name, text))
        if shared is not None:
            shared[1].append(formula.indices)
            return shared[0]
        found = Found(p.found.line, p.found.last, printer.expr(lhs), [printer.expr(rhs)])
        back = parse_found(found, self.notation, self.lines, self.file)
        back.reader.notes.clear()
        fix = formula_of(back, fid=fid, latex_text=text)
        domains = [formula.indices]
        letters = lhs_letters(back.reader, back.first)
        fix = replace(fix, indices=_restricted(domains, letters))
        self._shared[(p.section.name, text)] = (fix, domains)
        return fix

    def derived(self, p: Parsed, formula: Formula) -> Formula | None:
        """The true derivative of ``p``'s left side, printed (None without definitions)."""
        if p.rule or not self.definitions(p.section):
            return None
        deriver = self._deriver(p.section)
        printer = self.printer(p.section)
        wrt = p.first.lhs.wrt
        x = replace(wrt, name=printer.canonical(wrt.name))
        cases = [(m.shape, idx) for m in formula.models() for idx in formula.indices(m.shape)]
        reader = p.reader

        def holds(relation, case) -> bool:
            shape, env = case
            left, op, right = relation
            try:
                value = reader.value(left, env, shape)
                if op == "text":
                    return bool(getattr(shape, "is_grn", lambda _l: False)(value))
                return _COMPARE[op](value, reader.value(right, env, shape))
            except NoSuchNeuron:
                return False

        used = x.letters()
        rhs = right_side(deriver, x, used, holds, cases)
        if rhs is None:
            return None
        return self._formula(p, formula, rhs, f"{p.id}.corrected")

    def repairs(self, p: Parsed, formula: Formula) -> dict[str, Formula]:
        """Each reading of a formula read several ways, printed on its own."""
        if p.rule or len(p.readings) < 2:
            return {}
        out = {}
        for k, (name, eq) in enumerate(p.readings.items(), 1):
            out[name] = self._formula(p, formula, eq.rhs, f"{p.id}.reading{k}")
        return out


def _restricted(domains: list, letters: list[str]):
    # The index values of the formulas a correction corrects, restricted to its letters
    # (a sum over t replaces the formula's t): each value checked once.
    def domain(shape) -> list[dict]:
        seen, out = set(), []
        for idx in (i for indices in domains for i in indices(shape)):
            kept = {k: v for k, v in idx.items() if k in letters}
            key = tuple(sorted(kept.items()))
            if key not in seen:
                seen.add(key)
                out.append(kept)
        return out

    return domain
