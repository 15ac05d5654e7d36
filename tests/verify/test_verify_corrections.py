"""Tests of the derived corrections (symbolic.verify.adjoints, printer, corrections).

Round trip: every corrected formula of the built-in paper, printed in the paper's
notation, is parsed back by the grammar into a formula the printer prints identically,
and a document made of the corrections alone verifies ``holds`` formula by formula (the
oracle is the unrolled models, exact and by finite differences, not the derivation).
The notation's definitions are checked against the same oracle, value for value.
"""

from __future__ import annotations

import itertools

import pytest

from symbolic.verify import latex
from symbolic.verify.adjoints import simplify
from symbolic.verify.document import verify_document
from symbolic.verify.latex import Index
from symbolic.verify.mapping import Reader, syms_of
from symbolic.verify.notation import builtin_paper, default_path, load
from symbolic.verify.printer import Printer, spellings
from symbolic.verify.unrolled import COST, NumericContext
from symbolic.verify.verdict import HOLDS

NOTATION = load(default_path(builtin_paper()))
FINDINGS = verify_document()
CORRECTED = [f for f in FINDINGS if f.verdict != HOLDS and f.id != "mlp.sigmoid_prime"]
FUNCTIONS = frozenset(NOTATION.functions)


def test_the_notation_file_writes_no_correction_by_hand():
    assert all(not s.corrections for s in NOTATION.sections)
    assert all(s.definitions for s in NOTATION.sections)


def test_every_formula_that_does_not_hold_has_a_correction():
    assert CORRECTED, "the paper has formulas that do not hold"
    for f in CORRECTED:
        assert f.corrected, f.id
        assert any(c.startswith("corrected form holds: ") for c in f.checks), f.id


def _section(finding):
    lines = builtin_paper().read_text(encoding="utf-8").split("\n")
    return NOTATION.section_at(lines, finding.line)


def _parsed(finding) -> latex.Equation:
    return latex.parse(finding.corrected, FUNCTIONS)[0][1]


@pytest.mark.parametrize("finding", CORRECTED, ids=lambda f: f.id)
def test_a_correction_parses_back_and_prints_the_same(finding):
    (repair, eq), *others = latex.parse(finding.corrected, FUNCTIONS)
    assert not others and repair.name == "as printed"
    (scoped,) = latex.readings(eq)  # one scope: the printer brackets what is ambiguous
    # the spellings the corrections use (the document's: \Gamma, not G)
    counts = spellings(s for f in CORRECTED for s in syms_of(_parsed(f).rhs))
    printer = Printer(NOTATION, _section(finding), counts)
    lhs = scoped.lhs.factors[0]
    assert printer.equation(lhs, scoped.rhs) == finding.corrected


def _document_of_corrections(tmp_path):
    # The paper's section headings, each followed by its corrections as displays.
    by_section: dict[str, list[str]] = {}
    for f in CORRECTED:
        by_section.setdefault(_section(f).heading, [])
        if f.corrected not in by_section[_section(f).heading]:
            by_section[_section(f).heading].append(f.corrected)
    lines = ["# Corrections", ""]
    for heading, displays in by_section.items():
        lines += [heading, ""]
        for text in displays:
            lines += [f"$${text}$$", ""]
    paper = tmp_path / "corrections.md"
    paper.write_text("\n".join(lines), encoding="utf-8")
    notation = default_path(builtin_paper()).read_text(encoding="utf-8")
    (tmp_path / "corrections.notation.toml").write_text(notation, encoding="utf-8")
    return paper, len([d for ds in by_section.values() for d in ds])


def test_every_correction_verifies_as_a_formula_of_its_own(tmp_path):
    paper, count = _document_of_corrections(tmp_path)
    findings = verify_document(paper)
    assert len(findings) == count
    assert [f.verdict for f in findings] == [HOLDS] * count, [
        (f.line, f.verdict, f.detail) for f in findings if f.verdict != HOLDS
    ]


def _keys(model, lhs, reader):
    # every value of the definition's letters at which the model computes its left side
    letters = sorted(lhs.letters())
    for values in itertools.product(range(-1, 5), repeat=len(letters)):
        env = dict(zip(letters, values, strict=True))
        try:
            key = reader.key(lhs, env, model.shape)
        except LookupError:
            continue
        if key in model.symbolic.parents:
            yield env, key


@pytest.mark.parametrize("section", NOTATION.sections, ids=lambda s: s.name)
def test_the_definitions_compute_what_the_oracle_computes(section):
    reader = Reader(NOTATION, section, "notation", 0)
    checked = 0
    for text in section.definitions:
        eq = latex.parse_expression(text, FUNCTIONS)
        (scoped,) = latex.readings(latex.Equation(eq.lhs.factors[0], eq.rhs))[:1]
        for model in section.models(True):
            ctx = NumericContext(model, model.numeric.random_point(7))
            if scoped.lhs == latex.Sym(NOTATION.cost):
                cases = [({}, COST)]
            else:
                cases = list(_keys(model, scoped.lhs, reader))
            assert cases, (text, model.name)
            for env, key in cases:
                value = reader.evaluate(scoped.rhs, ctx, env)
                assert value == pytest.approx(ctx.v(key), rel=1e-12, abs=1e-12), (text, env)
                checked += 1
    assert checked > 20


def test_conditions_are_decided_on_the_formulas_index_values():
    t, big_t = Index("t"), Index("T")
    cases = [{"t": 1}, {"t": 2}, {"t": 3}]

    def holds(relation, env):
        left, op, right = relation
        a = env[left.letter] + left.offset
        b = 3 + right.offset if right.letter == "T" else right.offset
        return {"<": a < b, "<=": a <= b, ">=": a >= b, "=": a == b}[op]

    # t+1 <= T is printed t < T; t >= 1 always holds there and goes
    assert simplify([(Index("t", 1), "<=", big_t), (t, ">=", Index(None, 1))], holds, cases) == [
        (t, "<", big_t)
    ]
    # a term that never applies is dropped
    assert simplify([(t, ">=", Index(None, 4))], holds, cases) is None
