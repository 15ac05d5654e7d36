"""A document and its notation file as a paper the engine decides (``derivgen verify``).

:func:`document_paper` finds the document's formulas (:mod:`symbolic.verify.extract`),
gives each its correction and hands them to the engine as a
:class:`~symbolic.verify.engine.Paper`; :func:`verify_document` is the findings, for the
built-in paper by default (its id, line, source and verdict are those the hand
transcription of :mod:`symbolic.verify.moraes2020` gives, which the tests hold it to).
"""

from __future__ import annotations

import functools
from pathlib import Path

from symbolic.parse import SpecError
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


def _corrections(notation: Notation, lines: list[str], file: str, parsed: list[Parsed]):
    # The notation's corrected formulas by left side, parsed at the line of the first
    # formula of the document with that left side.
    first_of: dict[tuple, Parsed] = {}
    for p in parsed:
        if not p.rule:
            first_of.setdefault(_signature(p), p)
    table: dict[tuple, tuple[Parsed, str]] = {}
    for section in notation.sections:
        for correction in section.corrections:
            found = Found(0, 0, *_halves(correction.latex, file))
            probe = parse_found(_at_section(found, lines, section), notation, lines, file)
            user = first_of.get(_signature(probe))
            if user is None:
                continue
            found.line = found.last = user.found.line
            fixed = parse_found(found, notation, lines, file)
            fixed.id = correction.id or f"{user.id}.corrected"
            text = correction.latex + (f" {correction.remark}" if correction.remark else "")
            table[_signature(fixed)] = (fixed, text)
    return table


def _halves(text: str, file: str) -> tuple[str, list[str]]:
    lhs, _, rhs = text.partition("=")
    if not rhs:
        raise SpecError(file, None, None, f"a correction is an equation: {text[:60]}")
    return lhs.strip(), [rhs.strip()]


def _at_section(found: Found, lines: list[str], section) -> Found:
    # A line inside the section (its heading's), so that the probe reads its names.
    for number, text in enumerate(lines, 1):
        if text.strip().lstrip("#").strip() == section.heading:
            return Found(number, number, found.lhs, found.parts)
    return found


def _fallback(parsed: Parsed, everything: list[Parsed]) -> Formula | None:
    # Another formula of the document with the same left side, read one way only.
    for other in everything:
        if other is parsed or other.rule or _signature(other) != _signature(parsed):
            continue
        if len(other.readings) == 1:
            text, _ = other.found.text()
            source = " ".join(text.replace("&", " ").replace("\\\\", " ").split())
            return formula_of(other, fid=f"{parsed.id}.corrected", latex_text=source)
    return None


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
    table = _corrections(rules, lines, file, parsed)
    built: dict[tuple, Formula] = {}
    formulas = []
    for p in parsed:
        fix = None
        if not p.rule:
            signature = _signature(p)
            if signature in table:
                if signature not in built:
                    fixed, latex_text = table[signature]
                    built[signature] = formula_of(fixed, fid=fixed.id, latex_text=latex_text)
                fix = built[signature]
            else:
                fix = _fallback(p, parsed)
        formulas.append(formula_of(p, fix))
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
