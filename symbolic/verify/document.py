"""A document and its notation file as a paper the engine decides (``derivgen verify``).

:func:`document_paper` finds the document's formulas (:mod:`symbolic.verify.extract`),
gives each its correction (the true derivative derived from the section's definitions
and printed in the document's notation, :mod:`symbolic.verify.corrections`; without
definitions, the notation's corrected formula or another formula of the document with
that left side) and each reading printed on its own, and hands them to the engine as a
:class:`~symbolic.verify.engine.Paper`; :func:`verify_document` is the findings, for the
built-in paper by default (its id, line, source and verdict are those the hand
transcription of :mod:`symbolic.verify.moraes2020` gives, which the tests hold it to).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from pathlib import Path

from symbolic.parse import SpecError
from symbolic.verify.corrections import Corrector
from symbolic.verify.engine import Formula, Paper, ReadingResult, default_local_detail
from symbolic.verify.extract import (
    BUILTIN_FILE,
    Found,
    Parsed,
    find_formulas,
    formula_of,
    parse_found,
)
from symbolic.verify.notation import Notation, builtin_paper, default_path, load
from symbolic.verify.unrolled import time_of
from symbolic.verify.verdict import Finding


def _signature(parsed: Parsed) -> tuple:
    # A left side as the notation reads it: WXC_{ji}^{l-1} and WXc_{ji}^{l-1} are one.
    wrt = parsed.first.lhs.wrt
    var = parsed.reader.variable(wrt)
    return (parsed.section.name, var.key, wrt.time, wrt.layer, wrt.units)


@dataclass
class _Candidate:
    """A formula that may correct others: the notation's, or the document's own."""

    parsed: Parsed
    latex: str
    from_notation: bool
    built: Formula | None = None


def _corrections(notation: Notation, lines: list[str], file: str, parsed: list[Parsed]):
    # The notation's corrected formulas, each parsed at the line of the first formula of
    # the document with its left side (or at its section's heading).
    first_of: dict[tuple, Parsed] = {}
    for p in parsed:
        if not p.rule:
            first_of.setdefault(_signature(p), p)
    out = []
    for section in notation.sections:
        for k, correction in enumerate(section.corrections, 1):
            lhs, _, rhs = correction.latex.partition("=")
            if not rhs:
                raise SpecError(notation.path, None, None, f"a correction is an equation: {lhs}")
            found = _at_section(Found(0, 0, lhs.strip(), [rhs.strip()]), lines, section)
            probe = parse_found(found, notation, lines, file)
            user = first_of.get(_signature(probe))
            if user is not None:
                found.line = found.last = user.found.line
                probe = parse_found(found, notation, lines, file)
            probe.id = correction.id or f"{user.id if user else section.name}.corrected"
            if user is None and not correction.id:
                probe.id = f"{section.name}.correction{k}"
            text = correction.latex + (f" {correction.remark}" if correction.remark else "")
            out.append(_Candidate(probe, text, True))
    return out


def _at_section(found: Found, lines: list[str], section) -> Found:
    # A line inside the section (its heading's), so that the probe reads its names.
    for number, text in enumerate(lines, 1):
        if text.strip().lstrip("#").strip() == section.heading:
            return Found(number, number, found.lhs, found.parts)
    return found


def _document_candidates(parsed: list[Parsed]) -> list[_Candidate]:
    # The document's own formulas that are read one way only, as printed.
    out = []
    for p in parsed:
        if not p.rule and len(p.readings) == 1:
            text, _ = p.found.text()
            source = " ".join(text.replace("&", " ").replace("\\\\", " ").split())
            out.append(_Candidate(p, source, False))
    return out


def _unify(general: Parsed, special: Parsed) -> dict[str, int] | None:
    """The letter values at which ``general``'s left side is ``special``'s ({} when they
    are the same), or None when it never is."""
    if general.section is not special.section:
        return None
    a, b = general.first.lhs.wrt, special.first.lhs.wrt
    if general.reader.variable(a).key != special.reader.variable(b).key:
        return None
    binding: dict[str, int] = {}
    pairs = [(a.time, b.time), (a.layer, b.layer), *zip(a.units, b.units, strict=False)]
    if len(a.units) != len(b.units):
        return None
    for x, y in pairs:
        if x == y:
            continue
        if x is None or y is None or x.letter is None or y.letter is not None or x.size:
            return None
        value = y.offset - x.offset
        if binding.setdefault(x.letter, value) != value:
            return None
    return binding


def _fix_for(p: Parsed, candidates: list[_Candidate]) -> Formula | None:
    """The correction of ``p``: the notation's for its left side, else a formula of the
    document with that left side, else either of those with letters where ``p`` has
    numbers (checked at those values)."""
    ranked = sorted(candidates, key=lambda c: not c.from_notation)
    for exact in (True, False):
        for cand in ranked:
            if cand.parsed is p:
                continue
            binding = _unify(cand.parsed, p)
            if binding is None or (exact and binding) or (not exact and not binding):
                continue
            if exact and cand.from_notation:
                if cand.built is None:
                    cand.built = formula_of(cand.parsed, fid=cand.parsed.id, latex_text=cand.latex)
                return cand.built
            where = ", ".join(f"{k} = {v}" for k, v in binding.items())
            text = cand.latex + (f" \\quad ({where})" if where else "")
            fix = formula_of(cand.parsed, fid=f"{p.id}.corrected", latex_text=text)
            return replace(fix, indices=_at(fix.indices, binding))
    return None


def _at(indices, binding: dict[str, int]):
    def restricted(shape) -> list[dict]:
        return [i for i in indices(shape) if all(i.get(k) == v for k, v in binding.items())]

    return restricted


def _local_detail(sections: dict[str, object]):
    def detail(formula: Formula, r: ReadingResult) -> str:
        section = sections.get(formula.id)
        words = section.local_detail if section is not None else {}
        model = formula.models()[0]
        idx = formula.indices(model.shape)[0]
        key = formula.wrt(**idx)
        if time_of(key) is None:
            kind = "parameter"
        else:
            kind = "input" if key[1] == idx["t"] else "previous"
        text = words.get(f"{r.notion}.{kind}") or default_local_detail(formula, r)
        if r.last_step and "last_step" in words:
            text += " " + words["last_step"]
        return text

    return detail


def _with_corrections(p: Parsed, candidates: list[_Candidate], corrector: Corrector) -> Formula:
    # The correction derived from the section's definitions where it has some, else
    # the notation's or another formula of the document; and each reading printed.
    formula = formula_of(p)
    if p.rule:
        return formula
    fix = corrector.derived(p, formula) or _fix_for(p, candidates)
    unfixed = ""
    if p.section.name in corrector.untranslated:
        unfixed = (
            f"the spec cannot be written in the notation: {corrector.untranslated[p.section.name]}"
        )
    return replace(formula, fix=fix, repairs=corrector.repairs(p, formula), unfixed=unfixed)


def document_paper(paper: str | Path | None = None, notation: str | Path | None = None) -> Paper:
    """The engine's :class:`Paper` for a document (default: the built-in paper) read with
    its notation file (default: ``<paper>.notation.toml`` beside it).

    Raises:
        SpecError: A name the notation does not know, a formula the grammar cannot read,
            or a bad notation file (each naming its file and line).
    """
    path = Path(paper) if paper is not None else builtin_paper()
    file = BUILTIN_FILE if paper is None else str(path)
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    rules = load(notation if notation is not None else default_path(path))
    parsed = [parse_found(found, rules, lines, file) for found in find_formulas(text, rules)]
    candidates = _corrections(rules, lines, file, parsed) + _document_candidates(parsed)
    corrector = Corrector(rules, lines, file, parsed)
    formulas = [_with_corrections(p, candidates, corrector) for p in parsed]
    sections = {p.id: p.section for p in parsed}
    return Paper(file, lambda: tuple(lines), lambda: formulas, _local_detail(sections))


@functools.cache
def _builtin() -> Paper:
    return document_paper()


def verify_document(
    paper: str | Path | None = None, notation: str | Path | None = None
) -> list[Finding]:
    """Every derivative formula of a document, found in its LaTeX and decided (the
    built-in paper when ``paper`` is None), in the document's order."""
    if paper is None and notation is None:
        return _builtin().verify()
    return document_paper(paper, notation).verify()
