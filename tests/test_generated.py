"""The generated-module API contract (DESIGN.md), for every module of every built-in spec.

NAME, KIND, PARAMS (spec order), STATES, SPEC_SHA256 (of the spec file), param_shapes,
init_params (deterministic by seed, dtype honoured), forward/backward shapes, state0=None
meaning zeros; and the modules import only numpy (and numba), checked on their AST.
Expected values come from the spec files themselves (read with tomllib), not from the
pipeline that wrote the modules.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.util
import re
import shutil
import sys
import tomllib

import numpy as np
import pytest

from symbolic.backends import array_backends
from symbolic.generate import builtin_specs, default_out

#: The NumPy-array backends (the torch modules are tested in tests/backends/).
BACKENDS = array_backends()
SPECS = {path.stem: path for path in builtin_specs()}
DATA = {name: tomllib.loads(path.read_text()) for name, path in SPECS.items()}

#: What each backend's modules may import. ``math`` (standard library) is the scalar
#: math of compiled Numba loops; it installs nothing.
#: The standard library's sys and os: a Numba module keeps its on-disk cache under its own
#: name and reads the thread variables; threadpoolctl (a dependency, imported inside a try)
#: applies its thread policy (templates/numba/_threads.py.j2).
# Beside NumPy (and Numba), the standard library only: os, sys and ctypes for the memory
# policy (templates/_memory.py.j2); math, threadpoolctl, concurrent (the split
# products) and threading (whether another Python thread is alive) for the thread policy.
MEMORY = {"os", "sys", "ctypes"}
THREADS = {"math", "threadpoolctl", "concurrent", "threading", "time"}
ALLOWED_IMPORTS = {
    "numpy": {"numpy", *MEMORY},
    # llvmlite: Numba's code generator, which a compiled call of BLAS's gemm is written in
    "numba": {"numpy", "numba", "llvmlite", *THREADS, *MEMORY},
}

N_IN, N_OUT, T, B = 3, 4, 3, 2


def _params(kinds) -> list:
    out = []
    for name, data in DATA.items():
        if data["kind"] not in kinds:
            continue
        for backend in BACKENDS:
            out.append(pytest.param((name, backend), id=f"{name}-{backend}"))
    return out


MODULES = _params({"feedforward", "recurrent", "cost"})
CELLS = _params({"feedforward", "recurrent"})
RECURRENT = _params({"recurrent"})
FEEDFORWARD = _params({"feedforward"})
COSTS = _params({"cost"})


def module(name: str, backend: str):
    return importlib.import_module(f"generated.{name}_{backend}")


def input_name(name: str) -> str:
    """The spec's input (``input = "x"`` or ``input = { x = "elementwise" }``)."""
    value = DATA[name]["input"]
    return next(iter(value)) if isinstance(value, dict) else value


def n_in(name: str) -> int:
    """The input's size for a spec's forward: an elementwise input has the output's."""
    return N_OUT if isinstance(DATA[name]["input"], dict) else N_IN


def expected_shapes(name: str, n_in: int, n_out: int) -> dict[str, tuple[int, ...]]:
    """From the spec text: a shape given in size names is read with the sizes'
    defaults; a vector is (n_out,); a matrix is (n_out, n_in) when it multiplies the
    input, else (n_out, n_out)."""
    data = DATA[name]
    text = " ".join(data["equations"].values())
    widths = {"n_in": n_in, "n_out": n_out, **data.get("sizes", {})}
    shapes = {}
    for param, kind in data["params"].items():
        if isinstance(kind, dict):
            names = kind.get("shape") or [kind.get("size", "n_out")]
            shapes[param] = tuple(widths[n] for n in names)
            continue
        if kind == "vector":
            shapes[param] = (n_out,)
            continue
        args = set(re.findall(rf"\b{re.escape(param)}\s*@\s*(\(|\w+)", text))
        assert args, f"{param} multiplies nothing in {name}"
        shapes[param] = (n_out, n_in) if args == {input_name(name)} else (n_out, n_out)
    return shapes


# ---------------------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", MODULES)
def test_constants(case):
    name, backend = case
    mod, data = module(name, backend), DATA[name]
    assert mod.NAME == name
    assert mod.KIND == data["kind"]
    assert mod.PARAMS == tuple(data.get("params", {}))
    assert isinstance(mod.PARAMS, tuple)
    assert mod.SPEC_SHA256 == hashlib.sha256(SPECS[name].read_bytes()).hexdigest()
    if data["kind"] == "recurrent":
        assert mod.STATES == tuple(data["state"])


# ---------------------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CELLS)
def test_param_shapes(case):
    name, backend = case
    mod = module(name, backend)
    for n_in, n_out in [(N_IN, N_OUT), (5, 2), (1, 1)]:
        shapes = mod.param_shapes(n_in, n_out)
        assert list(shapes) == list(mod.PARAMS)  # spec order
        assert shapes == expected_shapes(name, n_in, n_out)


@pytest.mark.parametrize("case", CELLS)
def test_init_params_is_deterministic_by_seed_and_honours_dtype(case):
    name, backend = case
    mod = module(name, backend)
    default = mod.init_params(N_IN, N_OUT)
    again = mod.init_params(N_IN, N_OUT, seed=0, dtype=np.float64)
    other = mod.init_params(N_IN, N_OUT, seed=1)
    single = mod.init_params(N_IN, N_OUT, dtype=np.float32)
    shapes = mod.param_shapes(N_IN, N_OUT)
    # A constant init (the spec's [init]: a number, zeros, ones) is the same for any seed.
    init = DATA[name].get("init", {})
    constant = {
        k for k, v in init.items() if not isinstance(v, str | dict) or v in ("zeros", "ones")
    }
    assert list(default) == list(mod.PARAMS)
    for k in mod.PARAMS:
        assert default[k].shape == shapes[k]
        assert default[k].dtype == np.float64 and single[k].dtype == np.float32
        assert np.all(np.isfinite(default[k])) and np.any(default[k] != 0)
        np.testing.assert_array_equal(default[k], again[k])
        if k not in constant:
            assert not np.array_equal(default[k], other[k]), f"{k}: the seed changes nothing"
        np.testing.assert_array_equal(single[k], default[k].astype(np.float32))
    for dtype in ("float32", np.dtype("float64")):
        assert all(
            v.dtype == np.dtype(dtype) for v in mod.init_params(N_IN, N_OUT, dtype=dtype).values()
        )
    with pytest.raises(ValueError, match="dtype"):
        mod.init_params(N_IN, N_OUT, dtype=np.int64)


@pytest.mark.parametrize("name", [n for n, d in DATA.items() if d["kind"] != "cost"])
def test_same_init_params_across_backends(name):
    """A model is the same model whichever backend runs it."""
    inits = [module(name, b).init_params(N_IN, N_OUT, seed=3) for b in BACKENDS]
    for other in inits[1:]:
        for k in inits[0]:
            np.testing.assert_array_equal(inits[0][k], other[k])


# ---------------------------------------------------------------------------------------
# forward / backward
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", FEEDFORWARD)
def test_feedforward_shapes(case, dtype):
    name, backend = case
    mod = module(name, backend)
    params = mod.init_params(n_in(name), N_OUT, seed=1, dtype=dtype)
    x = np.random.default_rng(0).standard_normal((B, n_in(name))).astype(dtype)
    a, cache = mod.forward(params, x)
    assert a.shape == (B, N_OUT) and a.dtype == dtype
    grads, dx = mod.backward(params, cache, np.ones_like(a))
    assert list(grads) == list(mod.PARAMS)
    for k in params:
        assert grads[k].shape == params[k].shape and grads[k].dtype == dtype
    assert dx.shape == (B, n_in(name)) and dx.dtype == dtype


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", RECURRENT)
def test_recurrent_shapes(case, dtype):
    name, backend = case
    mod = module(name, backend)
    params = mod.init_params(n_in(name), N_OUT, seed=1, dtype=dtype)
    x = np.random.default_rng(0).standard_normal((T, B, n_in(name))).astype(dtype)
    a, cache = mod.forward(params, x)
    assert a.shape == (T, B, N_OUT) and a.dtype == dtype
    grads, dx, dstate0 = mod.backward(params, cache, np.ones_like(a))
    assert list(grads) == list(mod.PARAMS)
    for k in params:
        assert grads[k].shape == params[k].shape and grads[k].dtype == dtype
    assert dx.shape == (T, B, n_in(name)) and dx.dtype == dtype
    assert sorted(dstate0) == sorted(mod.STATES)
    for s in mod.STATES:
        assert dstate0[s].shape == (B, N_OUT) and dstate0[s].dtype == dtype


@pytest.mark.parametrize("case", RECURRENT)
def test_state0_none_means_zeros(case):
    name, backend = case
    mod = module(name, backend)
    params = mod.init_params(n_in(name), N_OUT, seed=2)
    x = np.random.default_rng(1).standard_normal((T, B, n_in(name)))
    zeros = {s: np.zeros((B, N_OUT)) for s in mod.STATES}
    a0, cache0 = mod.forward(params, x)
    a1, cache1 = mod.forward(params, x, zeros)
    a2, _ = mod.forward(params, x, {s: np.full((B, N_OUT), 0.5) for s in mod.STATES})
    np.testing.assert_array_equal(a0, a1)
    assert not np.allclose(a0, a2), "state0 is ignored"
    da = np.ones_like(a0)
    g0, dx0, d0 = mod.backward(params, cache0, da)
    g1, dx1, d1 = mod.backward(params, cache1, da, None)
    for k in g0:
        np.testing.assert_array_equal(g0[k], g1[k])
    np.testing.assert_array_equal(dx0, dx1)
    for s in mod.STATES:
        np.testing.assert_array_equal(d0[s], d1[s])


@pytest.mark.parametrize("case", RECURRENT)
def test_a_sequence_split_in_two_is_the_whole_sequence(case):
    """Carrying the states across two calls gives the same outputs (the states after
    the last step are the outputs' or what the cache records)."""
    name, backend = case
    mod, data = module(name, backend), DATA[name]
    params = mod.init_params(n_in(name), N_OUT, seed=4)
    x = np.random.default_rng(2).standard_normal((2 * T, B, n_in(name)))
    whole, _ = mod.forward(params, x)
    first, cache = mod.forward(params, x[:T])
    carried = {
        s: first[-1] if target == data["output"] else cache["state"][s]
        for s, target in data["state"].items()
    }
    second, _ = mod.forward(params, x[T:], carried)
    np.testing.assert_allclose(np.concatenate([first, second]), whole, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("case", CELLS)
def test_forward_does_not_modify_its_arguments(case):
    name, backend = case
    mod, data = module(name, backend), DATA[name]
    params = mod.init_params(n_in(name), N_OUT, seed=5)
    lead = (T, B) if data["kind"] == "recurrent" else (B,)
    x = np.random.default_rng(3).standard_normal((*lead, n_in(name)))
    copies = ({k: v.copy() for k, v in params.items()}, x.copy())
    a, cache = mod.forward(params, x)
    out = mod.backward(params, cache, np.ones_like(a))
    assert all(np.array_equal(params[k], copies[0][k]) for k in params)
    np.testing.assert_array_equal(x, copies[1])
    assert out[0] is not params


@pytest.mark.parametrize("case", COSTS)
def test_cost_api(case):
    name, backend = case
    cost = module(name, backend)
    rng = np.random.default_rng(0)
    for shape in [(B, N_OUT), (T, B, N_OUT)]:
        for dtype in (np.float64, np.float32):
            a = rng.uniform(0.1, 0.9, shape).astype(dtype)
            y = rng.uniform(0, 1, shape).astype(dtype)
            C, da = cost.loss(a, y)
            assert isinstance(C, float) and np.isfinite(C)
            assert da.shape == shape and da.dtype == dtype
            # batch axis is -2: the cost of two copies of a batch is the cost of one
            C2, _ = cost.loss(np.concatenate([a, a], axis=-2), np.concatenate([y, y], axis=-2))
            assert C2 == pytest.approx(C, rel=1e-5)


# ---------------------------------------------------------------------------------------
# Imports and independence
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", MODULES)
def test_imports_only_numpy_and_numba(case):
    name, backend = case
    path = default_out() / f"{name}_{backend}.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: relative import"
            imported.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") in (
            "__import__",
            "exec",
            "eval",
        ):
            pytest.fail(f"{path.name}: calls {node.func.id}")
    assert "numpy" in imported
    assert imported <= ALLOWED_IMPORTS[backend], f"{path.name} imports {sorted(imported)}"


@pytest.mark.parametrize("case", [c for c in MODULES if c.values[0][1] == "numpy"])
def test_a_module_copied_anywhere_works_alone(case, tmp_path, monkeypatch):
    """The file is the whole module: copied out of the package, it imports and runs."""
    name, backend = case
    filename = f"{name}_{backend}.py"
    shutil.copy(default_out() / filename, tmp_path / f"standalone_{filename}")
    spec = importlib.util.spec_from_file_location(
        f"standalone_{name}", tmp_path / f"standalone_{filename}"
    )
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, mod)
    spec.loader.exec_module(mod)
    assert mod.NAME == name
    if mod.KIND == "cost":
        mod.loss(np.zeros((B, N_OUT)) + 0.5, np.zeros((B, N_OUT)))
        return
    params = mod.init_params(n_in(name), N_OUT)
    lead = (T, B) if mod.KIND == "recurrent" else (B,)
    a, cache = mod.forward(params, np.zeros((*lead, n_in(name))))
    mod.backward(params, cache, np.ones_like(a))


ELEMENTWISE = [c for c in CELLS if isinstance(DATA[c.values[0][0]]["input"], dict)]


@pytest.mark.parametrize("case", ELEMENTWISE)
def test_an_elementwise_input_of_another_size_is_refused_naming_x(case):
    name, backend = case
    mod = module(name, backend)
    assert mod.INPUT_ELEMENTWISE is True
    params = mod.init_params(N_IN, N_OUT, seed=6)  # n_in != n_out: allowed for the shapes
    lead = (T, B) if DATA[name]["kind"] == "recurrent" else (B,)
    pattern = rf"^x: expected n_in = n_out = {N_OUT} units .*got n_in = {N_IN}$"
    with pytest.raises(ValueError, match=pattern):
        mod.forward(params, np.zeros((*lead, N_IN)))


def test_elementwise_inputs_are_shipped():
    assert {c.values[0][0] for c in ELEMENTWISE} >= {"highway", "sru"}
    plain = module("dense_tanh", "numpy")
    assert not hasattr(plain, "INPUT_ELEMENTWISE")
