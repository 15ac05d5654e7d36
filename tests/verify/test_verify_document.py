"""Tests of the paper read from its LaTeX (symbolic.verify.extract, mapping, document).

Golden: the hand transcription (symbolic.verify.moraes2020) is the reference. Every
formula it lists is found at its lines with its id, and each parsed reading equals a
transcribed one, value for value (exact polynomials) on every model and at every index,
free indices included; the corrected forms too.

Edits: a copy of the paper with one thing changed (a misplaced bracket closed, a sign
flipped, a sum's bound changed, a symbol renamed) and the verdict that follows, each
shown against the oracle's finite differences rather than read back.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from symbolic.cli import main
from symbolic.parse import SpecError
from symbolic.verify.document import document_paper, verify_document
from symbolic.verify.extract import find_formulas
from symbolic.verify.moraes2020 import formulas as transcribed
from symbolic.verify.notation import builtin_paper, default_path, load
from symbolic.verify.unrolled import COST, NumericContext, SymbolicContext
from symbolic.verify.verdict import FAILS, HOLDS, HOLDS_LOCALLY

TRANSCRIBED = {f.id: f for f in transcribed()}
PAPER = document_paper()
EXTRACTED = {f.id: f for f in PAPER.formulas()}
SEED = 13  # a point the verification does not use


def test_every_transcribed_formula_is_found_and_nothing_else():
    assert list(EXTRACTED) == list(TRANSCRIBED)
    for fid, f in EXTRACTED.items():
        assert (f.line, f.last) == (TRANSCRIBED[fid].line, TRANSCRIBED[fid].last), fid
        assert f.source == TRANSCRIBED[fid].source, fid


def _index_sets(f, model):
    return {tuple(sorted(idx.items())) for idx in f.indices(model.shape)}


def _values(reading, f, model):
    # A reading's exact value at every index (and every value of each free index).
    ctx = SymbolicContext(model)
    out = {}
    for idx in f.indices(model.shape):
        frees = [{}]
        for letter, domain in f.free.items():
            frees = [{**x, letter: v} for x in frees for v in domain(model.shape, idx)]
        for extra in frees:
            try:
                value = reading(ctx, **idx, **extra)
            except LookupError as missing:
                value = ("missing", type(missing).__name__)
            out[tuple(sorted({**idx, **extra}.items()))] = value
    return out


def _assert_same(mine, theirs, fid):
    assert [m.name for m in mine.models()] == [m.name for m in theirs.models()], fid
    assert set(mine.free) == set(theirs.free), fid
    assert len(mine.readings) == len(theirs.readings), (fid, list(mine.readings))
    for model in mine.models():
        assert _index_sets(mine, model) == _index_sets(theirs, model), (fid, model.name)
        for idx in mine.indices(model.shape):
            assert mine.wrt(**idx) == theirs.wrt(**idx), fid
        expected = [_values(r, theirs, model) for r in theirs.readings.values()]
        for name, reading in mine.readings.items():
            assert _values(reading, mine, model) in expected, (fid, name, model.name)


@pytest.mark.parametrize("fid", list(TRANSCRIBED))
def test_parsed_readings_equal_the_transcription(fid):
    mine, theirs = EXTRACTED[fid], TRANSCRIBED[fid]
    if theirs.custom is not None:
        assert mine.custom is not None
        return
    _assert_same(mine, theirs, fid)
    assert mine.note == theirs.note, fid
    if theirs.fix is not None and mine.fix is not None and fid.startswith("grn.dC_dW"):
        _assert_same(mine.fix, theirs.fix, fid + " (corrected)")


def test_derived_corrections_equal_the_transcribed_ones():
    for fid, theirs in TRANSCRIBED.items():
        if theirs.fix is None:
            continue
        mine = EXTRACTED[fid].fix
        assert mine is not None, fid
        (truth,) = theirs.fix.readings.values()
        (reading,) = mine.readings.values()
        for model in mine.models()[:4]:
            assert _values(reading, mine, model) == _values(truth, theirs.fix, model), fid


def test_default_output_is_the_transcription_verdicts():
    from symbolic.verify.moraes2020 import verify_paper

    before = {f.id: f for f in verify_paper()}
    after = verify_document()
    assert [f.id for f in after] == list(before)
    for f in after:
        old = before[f.id]
        assert (f.line, f.source, f.verdict, f.file) == (
            old.line,
            old.source,
            old.verdict,
            old.file,
        )
        assert (f.corrected is None) == (old.corrected is None), f.id


def test_the_notation_file_sits_beside_the_paper():
    notation = load(default_path(builtin_paper()))
    assert [s.name for s in notation.sections] == ["mlp", "grn"]
    grn = notation.sections[1]
    assert grn.variable(r"\Gamma")[0].key == "G"
    assert grn.variable(r"\tilde{a}")[0].key == "ac"
    var, note = grn.variable("WXC")
    assert var.key == "WXc" and "WXC is read as WXc" in note


# ------------------------------------------------------------------ edited copies


def _copy(tmp_path: Path, old: str, new: str, line: int) -> Path:
    paper = tmp_path / "paper.md"
    lines = builtin_paper().read_text(encoding="utf-8").split("\n")
    assert old in lines[line - 1], (old, lines[line - 1])
    lines[line - 1] = lines[line - 1].replace(old, new, 1)
    paper.write_text("\n".join(lines), encoding="utf-8")
    shutil.copy(default_path(builtin_paper()), default_path(paper))
    return paper


def _fd_agrees(f, reading) -> bool:
    # The reading against the NumPy model's finite differences at a fresh point.
    for model in f.models():
        ctx = NumericContext(model, model.numeric.random_point(SEED))
        for idx in f.indices(model.shape):
            truth = model.numeric.fd(ctx.point, COST, f.wrt(**idx))
            value = float(reading(ctx, **idx))
            if abs(value - truth) > 1e-6 * max(1.0, abs(truth)):
                return False
    return True


def test_closing_the_misplaced_bracket_of_line_94(tmp_path):
    paper = tmp_path / "paper.md"
    lines = builtin_paper().read_text(encoding="utf-8").split("\n")
    assert lines[93].endswith(r"WTc_j^l) \\")
    lines[93] = lines[93][: -len(r") \\")] + r" \\"
    lines[94] += ")"
    paper.write_text("\n".join(lines), encoding="utf-8")
    shutil.copy(default_path(builtin_paper()), default_path(paper))
    doc = document_paper(paper)
    found = doc.verify_formula("grn.dC_da_prev.value")
    assert found.verdict == HOLDS_LOCALLY  # was fails: now the path through step t
    assert found.verdict == doc.verify_formula("grn.dC_da_prev.chain").verdict


def test_a_flipped_sign_fails_and_the_correction_holds(tmp_path):
    doc = document_paper(_copy(tmp_path, "2(a_0^2 - y_0)", "2(a_0^2 + y_0)", 21))
    found = doc.verify_formula("mlp.dC_dW1_00.value")
    assert found.verdict == FAILS
    f = doc.formula("mlp.dC_dW1_00.value")
    (reading,) = f.readings.values()
    assert not _fd_agrees(f, reading)
    # the correction is line 20's chain rule, itself verified
    assert found.corrected.startswith(r"\frac{\partial C}{\partial W_{00}^1} =")
    assert doc.verify_formula(f.fix.id).verdict == HOLDS


def test_changing_a_sums_bound_settles_line_38(tmp_path):
    doc = document_paper(_copy(tmp_path, r"\sum_{j=0}^{n^{l+1}}", r"\sum_{j=0}^{n^{l+1}-1}", 38))
    f = doc.formula("mlp.dC_da.recursion")
    assert len(f.readings) == 1  # n^{l+1}-1 is read one way only
    assert doc.verify_formula(f.id).verdict == HOLDS
    assert _fd_agrees(f, next(iter(f.readings.values())))


def test_a_bound_past_the_layer_fails(tmp_path):
    doc = document_paper(_copy(tmp_path, r"\sum_{j=0}^1", r"\sum_{j=0}^0", 32))
    f = doc.formula("mlp.dC_da1_1.value")
    assert doc.verify_formula(f.id).verdict == FAILS
    assert not _fd_agrees(f, next(iter(f.readings.values())))


def test_an_unknown_symbol_is_an_error_naming_its_line(tmp_path, capsys):
    paper = _copy(tmp_path, "W_{ji}^l", "V_{ji}^l", 39)
    with pytest.raises(SpecError) as error:
        document_paper(paper)
    assert error.value.line == 39 and error.value.symbol == "V"
    assert main(["verify", "--paper", str(paper), "--json"]) == 2
    out, err = capsys.readouterr()
    assert f"{paper}:39: 'V' a name the notation" in err
    assert json.loads(out)["status"] == 2


def test_cli_paper_and_notation_options(tmp_path, capsys):
    paper = _copy(tmp_path, r"\sum_{j=0}^1", r"\sum_{j=0}^0", 32)
    notation = default_path(paper).rename(tmp_path / "elsewhere.toml")
    assert main(["verify", "--paper", str(paper), "--notation", str(notation), "--json"]) == 0
    found = {f["id"]: f for f in json.loads(capsys.readouterr().out)}
    assert found["mlp.dC_da1_1.value"]["verdict"] == FAILS
    assert found["mlp.dC_da1_1.value"]["file"] == str(paper)
    with pytest.raises(SystemExit):
        main(["verify", "--notation", str(notation)])
    assert main(["verify", "--paper", str(tmp_path / "missing.md")]) == 2


def test_a_display_that_speaks_of_no_derivative_is_not_a_formula():
    text = "$$a_i^l = \\sigma(z_i^l)$$\n\n$$\\frac{\\partial C}{\\partial a_0^1} = 1$$\n"
    found = find_formulas(text, load(default_path(builtin_paper())))
    assert [(f.line, f.lhs) for f in found] == [(3, r"\frac{\partial C}{\partial a_0^1}")]


def test_a_wrong_derivative_rule_fails_with_the_rule_as_correction(tmp_path):
    doc = document_paper(
        _copy(tmp_path, r"\sigma(x)(1 - \sigma(x))", r"\sigma(x)(1 + \sigma(x))", 19)
    )
    found = doc.verify_formula("mlp.sigmoid_prime")
    assert found.verdict == FAILS
    # the correction, parsed back as a rule of the same document, holds
    fixed = tmp_path / "fixed.md"
    lines = builtin_paper().read_text(encoding="utf-8").split("\n")
    lines[18] = found.corrected + r" \\"
    fixed.write_text("\n".join(lines), encoding="utf-8")
    shutil.copy(default_path(builtin_paper()), default_path(fixed))
    assert document_paper(fixed).verify_formula("mlp.sigmoid_prime").verdict == HOLDS
