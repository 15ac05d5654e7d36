"""Tests of the verdict rule (symbolic.verify.verdict) on a user's own document.

A formula proved wrong is ``fails`` with or without a corrected form (never
``undecided``); with the model's definitions in the notation file its correction is
derived, printed in the document's names and verified. Each verdict is also shown
against the oracle's finite differences, independently of the engine.
"""

from __future__ import annotations

import pytest

from symbolic.verify.document import verify_document
from symbolic.verify.unrolled import COST, mlp
from symbolic.verify.verdict import FAILS, HOLDS

NOTATION = r"""
cost = "C"
[functions]
"\\sigma" = "sigmoid"
[[sections]]
name = "mlp"
heading = "Multilayer perceptron"
model = "mlp"
concrete = [[2, 2, 2]]
general = [[2, 2, 2], [3, 4, 2], [2, 3, 3, 2]]
{definitions}
[sections.variables]
h = {{ key = "a", indices = ["layer", "unit"] }}
s = {{ key = "z", indices = ["layer", "unit"] }}
W = {{ key = "W", indices = ["layer", "unit+1", "unit"], kind = "parameter" }}
b = {{ key = "B", indices = ["layer", "unit"], kind = "parameter" }}
y = {{ key = "y", indices = ["unit@top"] }}
"""

DEFINITIONS = r"""definitions = [
  "C = \\sum_{i=0} (h_i^L - y_i)^2",
  "h_i^l = \\sigma(s_i^l)",
  "s_i^l = \\sum_{j=0} W_{ij}^{l-1} h_j^{l-1} + b_i^l",
]"""


def _document(tmp_path, formula: str, definitions: bool):
    paper = tmp_path / "mine.md"
    paper.write_text(f"# My derivation\n\nMultilayer perceptron\n\n$${formula}$$\n")
    text = NOTATION.format(definitions=DEFINITIONS if definitions else "")
    (tmp_path / "mine.notation.toml").write_text(text)
    (finding,) = verify_document(paper)
    return finding


def _fd_check(formula_value, sizes=(2, 2, 2)):
    # dC/db_0^L by central differences on the oracle's NumPy model, against the
    # right side evaluated at the same random point
    model = mlp(sizes)
    point = model.numeric.random_point(17)
    values = model.numeric.run(point)
    truth = model.numeric.fd(point, COST, ("B", 2, 0))
    return formula_value(values), truth


def test_the_top_letter_is_the_last_layer_not_an_index(tmp_path):
    found = _document(
        tmp_path, r"\frac{\partial C}{\partial b_i^L} = 2(h_i^L - y_i) \sigma'(s_i^L)", False
    )
    assert found.verdict == HOLDS, found.detail
    value, truth = _fd_check(
        lambda v: 2 * (v[("a", 2, 0)] - v[("y", 0)]) * v[("a", 2, 0)] * (1 - v[("a", 2, 0)])
    )
    assert value == pytest.approx(truth, rel=1e-6)


WRONG = r"\frac{\partial C}{\partial b_i^L} = (h_i^L - y_i) \sigma'(s_i^L)"


def test_a_formula_wrong_on_every_reading_fails_without_a_correction(tmp_path):
    found = _document(tmp_path, WRONG, definitions=False)
    assert found.verdict == FAILS
    assert found.corrected is None
    assert "No corrected form could be derived" in found.detail
    value, truth = _fd_check(
        lambda v: (v[("a", 2, 0)] - v[("y", 0)]) * v[("a", 2, 0)] * (1 - v[("a", 2, 0)])
    )
    assert abs(value - truth) > 1e-3 * abs(truth)


def test_with_definitions_the_correction_is_derived_in_the_documents_names(tmp_path):
    found = _document(tmp_path, WRONG, definitions=True)
    assert found.verdict == FAILS
    assert found.corrected == (
        r"\frac{\partial C}{\partial b_i^L} = 2 \cdot \left( h_i^L - y_i \right)"
        r" \cdot \sigma'(s_i^L)"
    )
    assert any(c.startswith("corrected form holds: ") for c in found.checks)
    # the correction as its own document holds
    fixed = _document(tmp_path, found.corrected, definitions=True)
    assert fixed.verdict == HOLDS


def test_the_readmes_own_derivation_gives_the_output_it_shows(tmp_path):
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    part = readme.split("## Verify your own derivation")[1].split("\n## ")[0]
    document = part.split("```markdown\n")[1].split("```")[0]
    notation = part.split("```toml\n")[1].split("```")[0]
    shown = part.split("$ derivgen verify --paper notes.md\n")[1].split("```")[0]
    (tmp_path / "notes.md").write_text(document)
    (tmp_path / "notes.notation.toml").write_text(notation)
    findings = verify_document(tmp_path / "notes.md")
    for f in findings:
        assert f"{f.id}  {f.line}     {f.verdict}" in shown, f.id
        if f.corrected:
            assert f"corrected:  {f.corrected}\n" in shown, f.id
    assert [f.verdict for f in findings] == [FAILS, HOLDS, "ambiguous"]
