"""Tests of symbolic.verify.celldefs: a spec's cell written as a section's definitions.

The oracle of the translation is the unrolled model the engine checks formulas on
(:mod:`symbolic.verify.specmodel`, built from the spec's parsed equations): each
definition, read through the notation, computes at every neuron and step the value the
model computes there. A second cell, written for this test (its pre-activations named),
shows a document about another cell getting derived corrections with no equation written
in its notation file; every correction is verified by the engine on the unrolled models.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import replace
from pathlib import Path

import pytest

import symbolic
from symbolic.verify import latex
from symbolic.verify.celldefs import Untranslatable, cell_definitions
from symbolic.verify.corrections import Corrector
from symbolic.verify.document import verify_document
from symbolic.verify.mapping import Reader
from symbolic.verify.notation import Variable, default_path, load
from symbolic.verify.unrolled import COST, NumericContext
from symbolic.verify.verdict import FAILS, HOLDS

ELMAN = load(default_path(Path(symbolic.__file__).parent / "papers" / "elman-bptt.md"))

GATED_SPEC = """\
name = "gated"
title = "A gated cell (its pre-activations named)"
kind = "recurrent"
input = "x"
output = "a"
state = { h = "a" }

[params]
Wz = "matrix"
bz = "vector"
Wq = "matrix"
Uq = "matrix"
bq = "vector"

[equations]
s = "Wz@x + bz"
z = "sigmoid(s)"
q = "Wq@x + Uq@h + bq"
c = "tanh(q)"
a = "(1 - z)*h + z*c"
"""

GATED_DOC = r"""# BPTT in a gated cell

# Gated Cell

$$\frac{\partial C}{\partial bq_j^l} = \sum_{t=1}^{T} \frac{\partial C}{\partial^t a_j^l} \cdot {}^t z_j^l$$

$$\frac{\partial C}{\partial bz_j^l} = \sum_{t=1}^{T} \frac{\partial C}{\partial^t a_j^l} \cdot ({}^t c_j^l - {}^{t-1} a_j^l) \cdot \sigma'({}^t s_j^l)$$
"""

GATED_NOTATION = """\
cost = "C"

[functions]
"\\\\sigma" = "sigmoid"
"\\\\tanh" = "tanh"

[[sections]]
name = "gated"
heading = "Gated Cell"
model = "spec:gated.toml"
steps = [1, 2]
concrete = [{ sizes = [2, 2] }]
general = [{ sizes = [2, 2] }, { sizes = [2, 3] }, { sizes = [2, 2, 2] }]

[sections.variables]
a = { key = "a", indices = ["time", "layer", "unit"] }
s = { key = "s", indices = ["time", "layer", "unit"] }
z = { key = "z", indices = ["time", "layer", "unit"] }
q = { key = "q", indices = ["time", "layer", "unit"] }
c = { key = "c", indices = ["time", "layer", "unit"] }
y = { key = "y", indices = ["time", "unit@top"] }
Wz = { key = "Wz", indices = ["layer", "unit+1", "unit"], kind = "parameter" }
Wq = { key = "Wq", indices = ["layer", "unit+1", "unit"], kind = "parameter" }
Uq = { key = "Uq", indices = ["layer", "unit", "unit"], kind = "parameter" }
bz = { key = "bz", indices = ["layer", "unit"], kind = "parameter" }
bq = { key = "bq", indices = ["layer", "unit"], kind = "parameter" }

[sections.predicates]
"is a gated layer" = "recurrent"
"""


def _gated(tmp_path: Path) -> Path:
    (tmp_path / "gated.toml").write_text(GATED_SPEC, encoding="utf-8")
    (tmp_path / "gated.notation.toml").write_text(GATED_NOTATION, encoding="utf-8")
    paper = tmp_path / "gated.md"
    paper.write_text(GATED_DOC, encoding="utf-8")
    return paper


def test_the_elman_spec_in_the_documents_notation():
    assert cell_definitions(ELMAN, ELMAN.sections[0]) == [
        r"{}^t z_i^l = \sum_{j=0} W_{ij}^{l-1} \cdot {}^t a_j^{l-1} + \sum_{j=0} U_{ij}^l"
        r" \cdot {}^{t-1} a_j^l + b_i^l",
        r"{}^t a_i^l = \tanh({}^t z_i^l)",
        r"C = \sum_{t=1}^{T} \sum_{i=0} ({}^t a_i^L - {}^t y_i)^{2}",
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


def _check_against_the_models(notation) -> int:
    section = notation.sections[0]
    functions = frozenset(notation.functions)
    reader = Reader(notation, section, "notation", 0)
    checked = 0
    for text in cell_definitions(notation, section):
        eq = latex.parse_expression(text, functions)
        (scoped,) = latex.readings(latex.Equation(eq.lhs.factors[0], eq.rhs))[:1]
        for model in section.models(True):
            ctx = NumericContext(model, model.numeric.random_point(5))
            if scoped.lhs == latex.Sym(notation.cost):
                cases = [({}, COST)]
            else:
                cases = list(_keys(model, scoped.lhs, reader))
            assert cases, (text, model.name)
            for env, key in cases:
                value = reader.evaluate(scoped.rhs, ctx, env)
                assert value == pytest.approx(ctx.v(key), rel=1e-12, abs=1e-12), (text, env)
                checked += 1
    return checked


def test_the_elman_definitions_compute_what_the_unrolled_model_computes():
    assert _check_against_the_models(ELMAN) > 50


def test_a_second_cells_definitions_compute_what_its_model_computes(tmp_path):
    notation = load(default_path(_gated(tmp_path)))
    assert _check_against_the_models(notation) > 50


def test_a_second_cell_gets_derived_corrections_that_hold(tmp_path):
    paper = _gated(tmp_path)
    wrong, right = verify_document(paper)
    assert (wrong.verdict, right.verdict) == (FAILS, HOLDS), wrong.detail
    assert wrong.corrected == (
        r"\frac{\partial C}{\partial bq_j^l} = \sum_{t=1}^{T} \frac{\partial C}"
        r"{\partial^t a_j^l} \cdot {}^t z_j^l \cdot \tanh'({}^t q_j^l)"
    )
    assert any(c.startswith("corrected form holds: ") for c in wrong.checks)
    # the correction, as a document of its own, holds
    paper.write_text(f"# Gated Cell\n\n$${wrong.corrected}$$\n", encoding="utf-8")
    (fixed,) = verify_document(paper)
    assert fixed.verdict == HOLDS, fixed.detail


def test_definitions_in_the_notation_file_win():
    section = replace(ELMAN.sections[0], definitions=[r"{}^t a_i^l = \tanh({}^t z_i^l)"])
    corrector = Corrector(ELMAN, [], "doc", [])
    assert corrector.definitions(section) == [r"{}^t a_i^l = \tanh({}^t z_i^l)"]


def _without(name: str):
    section = ELMAN.sections[0]
    variables = {k: v for k, v in section.variables.items() if k != name}
    return replace(section, variables=variables)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (_without("U"), "no variable of the section is the spec's U"),
        (
            replace(
                ELMAN.sections[0],
                variables={**ELMAN.sections[0].variables, "U": Variable("U", ("layer", "unit"))},
            ),
            "U (U of the spec) has indices ['layer', 'unit'], where the spec's U has",
        ),
    ],
    ids=["unnamed", "indices"],
)
def test_a_cell_the_notation_cannot_write_says_why(section, message):
    with pytest.raises(Untranslatable, match=re.escape(message)):
        cell_definitions(ELMAN, section)
    # the corrector then derives nothing, and keeps the reason
    corrector = Corrector(ELMAN, [], "doc", [])
    assert corrector.definitions(section) == []
    assert message in corrector.untranslated[section.name]


def test_a_formula_left_uncorrected_says_why(tmp_path):
    # the notation names no variable for the spec's Wq: the wrong formula keeps its
    # verdict, and its detail says why no correction was derived
    paper = _gated(tmp_path)
    notation = GATED_NOTATION.replace('Wq = { key = "Wq"', 'Vq = { key = "Vq"')
    (tmp_path / "gated.notation.toml").write_text(notation, encoding="utf-8")
    wrong, right = verify_document(paper)
    assert (wrong.verdict, right.verdict) == (FAILS, HOLDS)
    assert wrong.corrected is None
    assert wrong.detail.endswith(
        "No corrected form could be derived (the spec cannot be written in the notation: "
        "no variable of the section is the spec's Wq)."
    ), wrong.detail


def test_a_function_without_a_latex_name_is_refused():
    notation = replace(ELMAN, functions={})
    with pytest.raises(Untranslatable, match="give tanh no LaTeX name"):
        cell_definitions(notation, ELMAN.sections[0])


def test_a_function_of_an_unnamed_expression_is_refused(tmp_path):
    # the GRU's gates are sigmoid(Wz@x + Uz@h + bz): no value of the document names the sum
    notation = GATED_NOTATION.replace('"spec:gated.toml"', '"spec:gru"')
    (tmp_path / "gru.notation.toml").write_text(notation, encoding="utf-8")
    loaded = load(tmp_path / "gru.notation.toml")
    with pytest.raises(Untranslatable, match="the document names no value for this one"):
        cell_definitions(loaded, loaded.sections[0])
