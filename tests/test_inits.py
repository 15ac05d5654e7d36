"""A spec's ``[init]`` (symbolic/inits.py, read by symbolic/parse.py): every form read, a
bad entry refused naming the file, line and parameter, and every backend's generated
``init_params`` drawing what the spec says (checked against the documented ranges and
formulas here, not against the generator's own check)."""

from __future__ import annotations

import importlib.util
import math
import sys

import numpy as np
import pytest

from symbolic import generate, inits, parse, validate
from symbolic.model import Init

CELL = """\
name = "init_demo"
kind = "recurrent"
input = "x"
output = "a"
state = { h = "a" }

[params]
W = "matrix"
U = "matrix"
V = "matrix"
b = "vector"
c = "vector"
d = "vector"
e = "vector"
f = "vector"

[init]
U = { orthogonal = 0.5 }
V = { normal = 2 }
b = { chrono = -1 }
c = "indrnn"
d = 0.25
e = { uniform = [0.5, 1.5] }
W = { uniform = 2.0 }

[equations]
a = "tanh(W@x + U@h + V@h + b + d*e) * sigmoid(c*h + f)"
"""


def test_every_form_is_read():
    forms = {
        '"zeros"': Init("constant", 0.0),
        '"ones"': Init("constant", 1.0),
        "-2": Init("constant", -2.0),
        "0.5": Init("constant", 0.5),
        '"normal"': Init("normal", 1.0),
        "{ normal = 0.5 }": Init("normal", 0.5),
        '"uniform"': Init("uniform", 1.0),
        "{ uniform = [-1, 3] }": Init("uniform", None, -1.0, 3.0),
        '"chrono"': Init("chrono", 1.0),
        "{ chrono = -1 }": Init("chrono", -1.0),
        '"indrnn"': Init("indrnn"),
    }
    for text, init in forms.items():
        cell = parse.loads(CELL.replace("d = 0.25", f"d = {text}"), "demo.toml")
        assert cell.init["d"] == init, text
    cell = parse.loads(CELL, "demo.toml")
    assert cell.init["U"] == Init("orthogonal", 0.5)
    assert list(cell.init) == ["U", "V", "b", "c", "d", "e", "W"]  # spec order
    assert "f" not in cell.init and inits.of(cell.init, "f", "vector") == Init("uniform", 0.1)


@pytest.mark.parametrize(
    ("entry", "symbol", "message"),
    [
        ('b = "orthogonal"', "b", "init orthogonal is for a matrix, not a vector"),
        ('V = "chrono"', "V", "init chrono is for a vector, not a matrix"),
        ('V = "indrnn"', "V", "init indrnn is for a vector, not a matrix"),
        ('b = "xavier"', "b", "unknown init 'xavier'"),
        ("b = true", "b", "init True: expected one of zeros, ones"),
        ("b = { normal = 0 }", "b", 'a gain of 0 is the constant 0: write "zeros"'),
        ("b = { uniform = [1, 0] }", "b", "the bounds [1, 0] are not lo < hi"),
        ("b = { uniform = [1, 2, 3] }", "b", "expected the bounds [lo, hi]"),
        ('b = { chrono = "big" }', "b", "the gain of chrono must be a number"),
        ("b = { indrnn = 2 }", "b", "init 'indrnn' takes no gain"),
        ("b = { normal = 1, uniform = 1 }", "b", "expected one of"),
        ("b = inf", "b", "must be a finite number"),
        ("b = 1e300", "b", "must be a finite number of at most 1e30"),
        ("nope = 1", "nope", "init for 'nope', which is not a parameter"),
    ],
)
def test_a_bad_init_names_the_file_line_and_parameter(entry, symbol, message):
    # The entry replaces b's (a matrix's entry replaces V's).
    replaced = "V = { normal = 2 }" if entry.startswith("V ") else "b = { chrono = -1 }"
    text = CELL.replace(replaced, entry)
    line = text.split("\n").index(entry) + 1
    with pytest.raises(parse.SpecError) as caught:
        parse.loads(text, "demo.toml")
    error = caught.value
    assert (error.path, error.line, error.symbol) == ("demo.toml", line, symbol)
    assert message in error.message
    assert str(error).startswith(f"demo.toml:{line}: '{symbol}' ")


def test_init_is_a_table_of_a_cell_only():
    head, rest = CELL.split("[init]\n")
    text = head.replace("[params]", "init = 3\n[params]") + rest[rest.index("[equations]") :]
    with pytest.raises(parse.SpecError, match="demo.toml:7: 'init' 'init' must be a table"):
        parse.loads(text, "demo.toml")
    cost = 'name = "c"\nkind = "cost"\nprediction = "a"\ntarget = "y"\nper_unit = "a - y"\n'
    with pytest.raises(parse.SpecError, match="unknown key for a cost spec"):
        parse.loads(cost + "[init]\na = 1\n", "cost.toml")


@pytest.fixture(scope="module")
def demo_modules(tmp_path_factory):
    """The demo cell generated for every backend (unvalidated: the test checks init)."""
    root = tmp_path_factory.mktemp("inits")
    spec = root / "init_demo.toml"
    spec.write_text(CELL)
    out = root / "out"
    generate.generate([spec], out=out, validate=False, progress=False)
    modules = {}
    for backend in ("numpy", "numba", "torch", "jax"):
        name = f"init_demo_{backend}_test_inits"
        found = importlib.util.spec_from_file_location(name, out / f"init_demo_{backend}.py")
        module = importlib.util.module_from_spec(found)
        sys.modules[name] = module
        found.loader.exec_module(module)
        modules[backend] = module
    yield modules
    for backend in modules:
        sys.modules.pop(f"init_demo_{backend}_test_inits", None)


def draw(module, backend: str, seed: int, steps: int | None) -> dict[str, np.ndarray]:
    if backend == "torch":
        import torch

        drawn = module.init_params(4, 6, seed=seed, dtype=torch.float64, steps=steps)
        return {name: value.numpy() for name, value in drawn.items()}
    if backend == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)
        drawn = module.init_params(4, 6, seed=seed, dtype="float64", steps=steps)
        return {name: np.asarray(value) for name, value in drawn.items()}
    return module.init_params(4, 6, seed=seed, steps=steps)


@pytest.mark.parametrize("backend", ["numpy", "numba", "torch", "jax"])
def test_every_backend_draws_the_spec_init(demo_modules, backend):
    module = demo_modules[backend]
    steps = 50
    p = draw(module, backend, seed=3, steps=steps)
    assert list(p) == ["W", "U", "V", "b", "c", "d", "e", "f"]
    assert {k: v.shape for k, v in p.items()} == {
        "W": (6, 4), "U": (6, 6), "V": (6, 6),
        "b": (6,), "c": (6,), "d": (6,), "e": (6,), "f": (6,),
    }  # fmt: skip
    assert all(v.dtype == np.float64 for v in p.values())
    np.testing.assert_allclose(p["U"].T @ p["U"], 0.25 * np.eye(6), atol=1e-12)
    assert np.all(p["d"] == 0.25)
    # chrono, gain -1: -log U(1, T-1); indrnn: U(2^(-1/T), 2^(1/T)); uniform bounds.
    assert np.all(p["b"] <= 0) and np.all(p["b"] >= -math.log(steps - 1)) and np.ptp(p["b"]) > 0
    assert np.all(p["c"] >= 2 ** (-1 / steps)) and np.all(p["c"] <= 2 ** (1 / steps))
    assert np.all(p["e"] >= 0.5) and np.all(p["e"] <= 1.5)
    assert np.all(np.abs(p["W"]) <= 2.0 / math.sqrt(4)) and np.abs(p["W"]).max() > 0.2
    assert np.all(np.abs(p["f"]) <= 0.1)  # the default of a vector
    # T scales chrono: a longer sequence reaches further; no steps: T = 10.
    assert draw(module, backend, 3, 100_000)["b"].min() < -math.log(steps - 1)
    assert draw(module, backend, 3, None)["b"].min() >= -math.log(9)
    # Deterministic in the seed, different across seeds.
    again, other = draw(module, backend, 3, steps), draw(module, backend, 4, steps)
    assert all(np.array_equal(again[k], p[k]) for k in p)
    assert not np.array_equal(other["V"], p["V"])
    with pytest.raises(ValueError, match="steps: expected a positive number of time steps"):
        draw(module, backend, 3, 0)


def test_a_large_normal_gain_scales_the_spread(demo_modules):
    # V ~ 2 N(0, 1/fan_in) with fan-in 6: over many draws its variance is 4/6.
    module = demo_modules["numpy"]
    values = np.concatenate([module.init_params(4, 6, seed=s)["V"].ravel() for s in range(200)])
    assert abs(values.var() - 4 / 6) < 0.05


def test_specs_without_init_keep_the_default_draw():
    # The default, as it always was: the matrices ~ N(0, 1/fan_in), the vectors
    # ~ U(-0.1, 0.1), drawn in the order of PARAMS from default_rng(seed).
    from generated import dense_sigmoid_numpy as module

    rng = np.random.default_rng(7)
    want_w = (rng.standard_normal((5, 3)) / np.sqrt(3)).astype(np.float32)
    want_b = rng.uniform(-0.1, 0.1, (5,)).astype(np.float32)
    got = module.init_params(3, 5, seed=7, dtype=np.float32)
    assert list(module.PARAMS) == ["W", "B"]
    np.testing.assert_array_equal(got["W"], want_w)
    np.testing.assert_array_equal(got["B"], want_b)


def test_validation_refuses_a_module_that_draws_another_init(demo_modules):
    cell = parse.loads(CELL, "demo.toml")
    module = demo_modules["numpy"]
    validate.check_init(cell, module, validate._Checker("demo.toml", "demo"))  # holds

    class Wrong:
        PARAMS = module.PARAMS

        @staticmethod
        def init_params(n_in, n_out, **options):
            params = module.init_params(n_in, n_out, **options)
            params["c"] = params["c"] * 2  # not U(2^(-1/T), 2^(1/T)) any more
            return params

    with pytest.raises(validate.Mismatch, match=r"init_params\(\)\['c'\].*outside"):
        validate.check_init(cell, Wrong, validate._Checker("demo.toml", "demo"))
