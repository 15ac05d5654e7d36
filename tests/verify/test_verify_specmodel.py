"""Tests of the unrolled models built from a spec (symbolic.verify.specmodel).

The builder's independent checks: the GRN built from ``symbolic/specs/grn.toml`` is the
GRN written by hand in symbolic.verify.unrolled (same values, same equations, same exact
and finite-difference totals at random points), and the Elman network built from
``elman.toml`` agrees with an Elman network written by hand in torch (its cost and
every gradient, by autograd). Then what the oracle cannot read is refused, naming the
file, the line and the symbol.
"""

# ruff: noqa: E741 (l is the paper's layer index throughout)

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
import sympy as sp
import torch
from hypothesis import HealthCheck, Phase, given, settings
from spec_strategies import cells

import symbolic
from symbolic.cli import main
from symbolic.parse import SpecError
from symbolic.verify.notation import load
from symbolic.verify.specmodel import CellShape, load_cell_spec
from symbolic.verify.unrolled import COST, StepKey, grn, label, time_of

SPECS = Path(symbolic.__file__).parent / "specs"
PAPERS = Path(symbolic.__file__).parent / "papers"
SEEDS = (5, 17)  # points the verification of the documents does not use
HERE = Path("notation.toml")  # the notation file errors name


def spec_model(name: str, sizes, T: int, input_layer: int = 0):
    return load_cell_spec(HERE, f"spec:{name}").unrolled(tuple(sizes), T, input_layer)


def rel(x: float, ref: float) -> float:
    return abs(x - ref) / max(abs(x), abs(ref), 1e-2)


def canonical(poly) -> dict:
    """An atom polynomial as {monomial in atom names: coefficient}, comparable across
    two models whose atoms have the same names."""
    out = {}
    for mono, coeff in poly.terms.items():
        names = tuple(sorted((sym.name, e) for sym, e in poly.space.exponents(mono)))
        out[names] = coeff
    return out


# ------------------------------------------------------------- the GRN, both ways

GRN_SHAPES = [((2, 2), 2, 1), ((2, 2, 2), 2, 0), ((2, 3), 3, 0)]


@pytest.mark.parametrize(("sizes", "T", "l0"), GRN_SHAPES, ids=str)
def test_the_grn_from_its_spec_is_the_hand_written_grn(sizes, T, l0):
    built, hand = spec_model("grn", sizes, T, l0), grn(sizes, T, l0)
    assert set(built.shape.leaves()) == set(hand.shape.leaves())
    assert built.symbolic.order[-1] == COST
    assert set(built.symbolic.order) == set(hand.symbolic.order)
    for key in hand.symbolic.order:
        assert built.symbolic.parents[key] == hand.symbolic.parents[key], key
        assert (built.symbolic.equation(key) - hand.symbolic.equation(key)).expand() == 0, key


@pytest.mark.parametrize(("sizes", "T", "l0"), GRN_SHAPES, ids=str)
def test_the_grn_from_its_spec_has_the_same_totals_at_random_points(sizes, T, l0):
    built, hand = spec_model("grn", sizes, T, l0), grn(sizes, T, l0)
    for seed in SEEDS:
        point = hand.numeric.random_point(seed)
        mine, theirs = built.numeric.run(point), hand.numeric.run(point)
        assert max(abs(mine[k] - theirs[k]) for k in theirs) < 1e-14
        for leaf in hand.shape.leaves():
            fd_mine = built.numeric.fd(point, COST, leaf)
            assert rel(fd_mine, hand.numeric.fd(point, COST, leaf)) < 1e-6, leaf
    # exact: the same polynomial in the same atoms, for every leaf and intermediate
    for key in [*hand.shape.leaves(), *hand.symbolic.order[:-1]]:
        exact = canonical(built.symbolic.total(COST, key))
        assert exact == canonical(hand.symbolic.total(COST, key)), label(key)


def test_values_of_a_step_know_their_step():
    model = spec_model("elman", (2, 2), 2)
    z = next(k for k in model.symbolic.order if k[0] == "z")
    assert isinstance(z, StepKey) and z == ("z", 1, 1, 0) and hash(z) == hash(("z", 1, 1, 0))
    assert time_of(z) == 1 and time_of(("U", 1, 0, 1)) is None
    assert label(z) == "^1z^1_0" and label(("U", 1, 0, 1)) == "U^1_{01}"
    children = model.symbolic.children[("U", 1, 0, 1)]
    assert sorted(time_of(c) for c in children) == [1, 2]


# ------------------------------------------------ the Elman network against torch


def torch_elman(model, point):
    """The Elman network of elman-bptt.md written by hand in torch (float64): the
    cost, and autograd's gradient of it with respect to every leaf of ``model``."""
    shape = model.shape
    leaves = {
        key: torch.tensor(point[key], dtype=torch.float64, requires_grad=True)
        for key in shape.leaves()
    }

    def vec(kind, *idx, n):
        return torch.stack([leaves[(kind, *idx, j)] for j in range(n)])

    def mat(kind, l, rows, cols):
        return torch.stack([vec(kind, l, i, n=cols) for i in range(rows)])

    n, l0 = shape.n, shape.input_layer
    a = {(t, l0): vec("a", t, l0, n=n(l0)) for t in range(1, shape.T + 1)}
    a |= {(0, l): vec("a", 0, l, n=n(l)) for l in shape.layers}
    cost = torch.zeros((), dtype=torch.float64)
    for t in range(1, shape.T + 1):
        for l in shape.layers:
            W, U = mat("W", l - 1, n(l), n(l - 1)), mat("U", l, n(l), n(l))
            a[(t, l)] = torch.tanh(W @ a[(t, l - 1)] + U @ a[(t - 1, l)] + vec("b", l, n=n(l)))
        cost = cost + ((a[(t, shape.L)] - vec("y", t, n=n(shape.L))) ** 2).sum()
    cost.backward()
    return float(cost.detach()), {key: float(x.grad) for key, x in leaves.items()}


@pytest.mark.parametrize(("sizes", "T"), [((2, 2), 3), ((3, 2, 2), 2), ((2, 3), 2)], ids=str)
def test_the_elman_network_from_its_spec_agrees_with_torch_autograd(sizes, T):
    model = spec_model("elman", sizes, T)
    sym = model.symbolic
    for seed in SEEDS:
        point = model.numeric.random_point(seed)
        values = model.numeric.run(point)
        cost, grads = torch_elman(model, point)
        assert abs(values[COST] - cost) < 1e-12
        atoms = {sym.symbol(k): v for k, v in values.items()}
        for leaf, truth in grads.items():
            assert rel(sym.total(COST, leaf).evaluate(atoms), truth) < 1e-12, label(leaf)
            assert rel(model.numeric.fd(point, COST, leaf), truth) < 1e-7, label(leaf)


def test_a_call_inside_an_equation_is_a_node_of_its_own():
    # The LSTM's a = og*tanh(cn): tanh(cn) becomes _call0, so that tanh'(cn) is an atom's
    # polynomial; the exact totals then agree with finite differences.
    spec = load_cell_spec(HERE, "spec:lstm")
    assert [name for name, _, _ in spec.equations][-2:] == ["_call0", "a"]
    model = spec.unrolled((2, 2), 2)
    point = model.numeric.random_point(SEEDS[0])
    values = model.numeric.run(point)
    atoms = {model.symbolic.symbol(k): v for k, v in values.items()}
    for leaf in [("Uf", 1, 0, 1), ("Wi", 0, 1, 0), ("bo", 1, 1), ("cn", 0, 1, 0)]:
        exact = model.symbolic.total(COST, leaf).evaluate(atoms)
        assert rel(exact, model.numeric.fd(point, COST, leaf)) < 1e-7, leaf


def test_the_shape_names_its_layers_and_sizes():
    shape = spec_model("elman", (2, 3, 3), 2).shape
    assert isinstance(shape, CellShape)
    assert shape.name == "stacked elman 2-3-3 (layers 0-2), T=2"
    assert (shape.L, list(shape.layers), shape.is_grn(0), shape.is_grn(2)) == (
        2,
        [1, 2],
        False,
        True,
    )
    assert shape.has(("W", 1, 2, 2)) and not shape.has(("W", 2, 0, 0))
    assert shape.has(("a", 0, 2, 1)) and not shape.has(("a", 0, 0, 1))
    assert shape.has(("Ct", 2)) and shape.has(COST) and not shape.has(("z", 3, 1, 0))


# ----------------------------------------------------------------------- refusals


def test_a_primitive_whose_derivative_is_not_polynomial_is_refused():
    with pytest.raises(SpecError) as error:
        load_cell_spec(HERE, "spec:indrnn")
    assert Path(error.value.path).name == "indrnn.toml" and error.value.symbol == "a"
    lines = (SPECS / "indrnn.toml").read_text().splitlines()
    where = next(n for n, text in enumerate(lines, 1) if text.startswith("a = "))
    assert error.value.line == where and "not relu" in str(error.value)


def test_a_cost_the_oracle_cannot_read_is_refused():
    with pytest.raises(SpecError) as error:
        load_cell_spec(HERE, "spec:elman", "bce_logits")
    assert Path(error.value.path).name == "bce_logits.toml" and error.value.symbol == "per_unit"


def test_fractions_in_an_equation_are_refused(tmp_path):
    text = (SPECS / "elman.toml").read_text().replace('a = "tanh(z)"', 'a = "tanh(z)/2"')
    (tmp_path / "half.toml").write_text(text)
    with pytest.raises(SpecError) as error:
        load_cell_spec(tmp_path / "n.toml", "spec:half.toml")
    assert (error.value.line, error.value.symbol) == (18, "a")
    assert "integer coefficients" in str(error.value)


@pytest.mark.parametrize(
    ("model", "cost", "words"),
    [
        ("spec:nothing", None, "names no spec (shipped: bce_logits"),
        ("spec:squared_error", None, "a cell spec, not a cost"),
        ("spec:elman", "elman", "a cost spec"),
    ],
)
def test_a_section_naming_a_wrong_spec_is_an_error(model, cost, words):
    with pytest.raises(SpecError) as error:
        load_cell_spec(HERE, model, cost)
    assert error.value.path == str(HERE) and words in str(error.value)


def _notation_copy(tmp_path: Path, old: str, new: str) -> Path:
    paper = tmp_path / "elman-bptt.md"
    shutil.copy(PAPERS / "elman-bptt.md", paper)
    text = (PAPERS / "elman-bptt.notation.toml").read_text()
    assert old in text
    (tmp_path / "elman-bptt.notation.toml").write_text(text.replace(old, new))
    return paper


def test_a_spec_beside_the_notation_file_is_read(tmp_path):
    shutil.copy(SPECS / "elman.toml", tmp_path / "my_elman.toml")
    paper = _notation_copy(tmp_path, 'model = "spec:elman"', 'model = "spec:my_elman.toml"')
    section = load(paper.with_name("elman-bptt.notation.toml")).sections[0]
    assert section.spec.cell.path == (tmp_path / "my_elman.toml").resolve()
    assert [m.name for m in section.models(True)][:2] == [
        "elman 2-2 (layers 0-1), T=1",
        "elman 2-3 (layers 0-1), T=1",
    ]


def test_the_cli_reports_a_section_naming_no_spec(tmp_path, capsys):
    paper = _notation_copy(tmp_path, 'model = "spec:elman"', 'model = "spec:elmann"')
    assert main(["verify", "--paper", str(paper), "--json"]) == 2
    out, err = capsys.readouterr()
    assert "'spec:elmann' the section's model names no spec" in err
    assert json.loads(out)["status"] == 2


def test_a_shape_too_small_is_refused():
    with pytest.raises(ValueError, match="two layers or more"):
        load_cell_spec(HERE, "spec:elman").unrolled((2,), 1)


def test_states_sharing_an_equation_are_refused(tmp_path):
    text = (SPECS / "elman.toml").read_text().replace('{ h = "a" }', '{ h = "a", c = "a" }')
    text = text.replace('z = "W@x + U@h + b"', 'z = "W@x + U@h + b + c"')
    (tmp_path / "twice.toml").write_text(text)
    with pytest.raises(SpecError) as error:
        load_cell_spec(tmp_path / "n.toml", "spec:twice.toml")
    assert error.value.symbol == "h" and "states h, c all take the value of a" in str(error.value)


# --------------------------------------------------------------------- fuzzing

FUZZ_EXAMPLES = 60


@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.generate],
    suppress_health_check=list(HealthCheck),
)
@given(cells())
def test_a_random_cell_is_built_exactly_or_refused_clearly(example):
    # Soundness of the builder: a random valid spec (tests/spec_strategies.py) is
    # refused with an error naming its file (polynomials and the primitives of
    # polynomial derivative only), or built into a model whose exact totals agree with
    # finite differences of its NumPy twin for every leaf.
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.toml"
        path.write_text(example.text)
        try:
            spec = load_cell_spec(Path(folder) / "n.toml", "spec:fuzz.toml")
        except SpecError as error:
            assert "unrolled oracle" in str(error) and str(path.resolve()) in str(error)
            return
        model = spec.unrolled((2, 2), 2 if example.kind == "recurrent" else 1)
    point = model.numeric.random_point(SEEDS[0])
    values = model.numeric.run(point)
    atoms = {model.symbolic.symbol(k): v for k, v in values.items()}
    for leaf in model.shape.leaves():
        exact = model.symbolic.total(COST, leaf).evaluate(atoms)
        assert rel(exact, model.numeric.fd(point, COST, leaf)) < 1e-5, (label(leaf), example)


def test_a_section_may_name_its_cost_spec(tmp_path):
    text = (SPECS / "squared_error.toml").read_text().replace('"(a - y)**2"', '"(a - y)**4"')
    (tmp_path / "quartic.toml").write_text(text.replace('"squared_error"', '"quartic"', 1))
    model = load_cell_spec(tmp_path / "n.toml", "spec:elman", "quartic.toml").unrolled((2, 2), 2)
    point = model.numeric.random_point(SEEDS[1])
    values = model.numeric.run(point)
    by_hand = sum(
        (values[("a", t, 1, i)] - point[("y", t, i)]) ** 4 for t in (1, 2) for i in (0, 1)
    )
    assert abs(values[COST] - by_hand) < 1e-14
    assert model.symbolic.equation(("Ct", 1)).has(sp.Integer(4))


def test_an_equation_named_as_the_target_is_refused(tmp_path):
    text = (SPECS / "elman.toml").read_text().replace('z = "W@x', 'y = "W@x')
    (tmp_path / "named_y.toml").write_text(text.replace('tanh(z)"', 'tanh(y)"'))
    spec = load_cell_spec(tmp_path / "n.toml", "spec:named_y.toml")
    with pytest.raises(SpecError) as error:
        spec.unrolled((2, 2), 2)
    assert error.value.symbol == "y" and "would name two values" in str(error.value)
