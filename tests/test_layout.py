"""The package's layout holds: no import cycle, the pipeline's stages in one direction, no
function too long to read, and extension points that need no edit elsewhere (a backend,
a primitive: each added here, from inside the test, and run end to end)."""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

from symbolic import backends, generate, parse, primitives, validate
from symbolic.backends import Backend
from symbolic.backends.base import templates_root
from symbolic.backends.jax import primitives as jax_primitives
from symbolic.backends.numba import primitives as numba_primitives
from symbolic.backends.numpy import layout as numpy_layout
from symbolic.backends.numpy import primitives as numpy_primitives
from symbolic.backends.numpy.printer import NumpyPrinter
from symbolic.backends.torch import primitives as torch_primitives

PACKAGE = Path(__file__).resolve().parent.parent / "symbolic"
SPECS = {path.stem: path for path in generate.builtin_specs()}

#: The longest a function may be (data tables aside: none today).
MAX_FUNCTION_LINES = 80


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(name: str) -> set[str]:
    """The package's modules that module ``name`` imports, anywhere in its body (an
    import inside a function counts: it runs too)."""
    tree = ast.parse(MODULES[name].read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in MODULES}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from symbolic import parse``: the module symbolic.parse; a name that is
            # not a module is read from the package or module itself
            submodules = {f"{node.module}.{a.name}" for a in node.names} & MODULES.keys()
            out |= submodules
            if node.module in MODULES and len(submodules) < len(node.names):
                out.add(node.module)
    out.discard(name)
    return out


GRAPH = {name: imports(name) for name in MODULES}


def reachable(start: str) -> set[str]:
    seen, stack = set(), [start]
    while stack:
        for nxt in GRAPH[stack.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen


def test_the_import_graph_is_read_from_the_sources():
    """The walker sees what it must (so the cycle test below cannot pass vacuously)."""
    assert "symbolic.backends.numpy.plan" in MODULES
    assert "symbolic.ir" in GRAPH["symbolic.lower"]
    assert "symbolic.parse" in GRAPH["symbolic.generate"]  # from symbolic import parse
    assert "symbolic.backends.base" in GRAPH["symbolic.backends.numpy"]


def test_no_import_cycle_inside_the_package():
    cycles = sorted(name for name in MODULES if name in reachable(name))
    assert not cycles, f"modules on an import cycle: {cycles}"


def test_render_imports_neither_derive_nor_lower():
    """The pipeline runs one way: render receives the kernel, it never derives or lowers
    (not even through a backend)."""
    below = reachable("symbolic.render")
    assert "symbolic.derive" not in below and "symbolic.lower" not in below
    for name in backends.BUILTIN.values():
        assert "symbolic.derive" not in reachable(name) | {name}
        assert "symbolic.lower" not in reachable(name) | {name}


def test_no_function_is_too_long_to_read():
    long = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {lines} lines")
    assert not long, "\n".join(sorted(long))


def test_every_list_of_backends_is_the_registry():
    """The CLI offers what the registry holds (one place lists backends)."""
    from symbolic import cli

    parser = cli.build_parser("generate")
    sub = next(a for a in parser._actions if a.dest == "command")
    gen = sub.choices["generate"]
    choices = next(a for a in gen._actions if a.dest == "backend").choices
    assert tuple(choices) == (*backends.names(), "all")
    assert cli.SHOW_STAGES == generate.STAGES


# --- a backend is one folder and one registration ---------------------------------------


@pytest.fixture
def plain_backend(tmp_path):
    """A backend defined here: the NumPy layout, with templates in a folder of its own
    (each module marked as the plain backend's), registered, then removed."""
    folder = tmp_path / "plain_templates"
    shutil.copytree(templates_root() / "numpy", folder)
    for template in folder.glob("*.py.j2"):
        # at the top: of a template that extends another, only its blocks and the text
        # before its extends line render
        template.write_text("# laid out by the plain backend\n" + template.read_text())
    backend = Backend(
        name="plain",
        printer=NumpyPrinter,
        cell=numpy_layout.cell,
        cost=numpy_layout.cost,
        templates=folder,
    )
    backends.register(backend)
    yield backend
    backends.unregister("plain")
    assert "plain" not in backends.names()


def test_a_registered_backend_generates_validated_modules(plain_backend, tmp_path):
    out = tmp_path / "out"
    specs = [SPECS["grn"], SPECS["dense_tanh"], SPECS["squared_error"]]
    written, _ = generate.generate(specs, ["numpy", "plain"], out, progress=False)
    names = {p.name for p in written}
    assert {"grn_plain.py", "dense_tanh_plain.py", "squared_error_plain.py"} <= names
    for name in ("grn", "dense_tanh", "squared_error"):
        assert "# laid out by the plain backend" in (out / f"{name}_plain.py").read_text()
        assert "plain backend" not in (out / f"{name}_numpy.py").read_text()
    # validation compared every plain module with the NumPy one; run one here as well
    plain = validate.load(out / "dense_tanh_plain.py")
    numpy = validate.load(out / "dense_tanh_numpy.py")
    params = numpy.init_params(3, 4, seed=0)
    x = np.random.default_rng(0).standard_normal((5, 3))
    np.testing.assert_array_equal(plain.forward(params, x)[0], numpy.forward(params, x)[0])


def test_a_registered_backend_is_offered_by_the_cli(plain_backend):
    from symbolic import cli

    parser = cli.build_parser("generate")
    args = parser.parse_args(["generate", "--backend", "plain", "--check"])
    assert args.backend == "plain"


def test_a_backend_is_registered_once(plain_backend):
    with pytest.raises(ValueError, match="already registered"):
        backends.register(plain_backend)
    with pytest.raises(ValueError, match="unknown backend 'nope'"):
        backends.get("nope")


# --- a primitive is one entry in the table and one per backend -----------------------


CUBE_SPEC = """
name = "cubed"
title = "a layer with a primitive defined in a test"
kind = "feedforward"
input = "x"
output = "a"

[params]
W = "matrix"
b = "vector"

[equations]
a = "cube(W@x + b) - 0.5*cube(b)"
"""


@pytest.fixture
def cube(monkeypatch):
    """cube(z) = z**3, added to the table and to each backend's, then removed."""
    prim = primitives.register(
        "cube", lambda out, z: 3 * z**2, lambda z: z**3, lambda z: np.asarray(z) ** 3
    )
    monkeypatch.setitem(
        numpy_primitives.FORMS,
        "cube",
        numpy_primitives.Form(call="({0})**3", out="np.power({i}, 3, out={o})"),
    )
    monkeypatch.setitem(numba_primitives.FORMS, "cube", numba_primitives.Form(call="({0})**3"))
    monkeypatch.setitem(torch_primitives.FORMS, "cube", torch_primitives.Form(call="({0})**3"))
    monkeypatch.setitem(jax_primitives.FORMS, "cube", jax_primitives.Form(call="({0})**3"))
    yield prim
    del primitives.PRIMITIVES["cube"]


def test_a_new_primitive_is_one_entry_per_table(cube, tmp_path):
    spec = tmp_path / "cubed.toml"
    spec.write_text(CUBE_SPEC)
    model = parse.load(spec)
    assert sp.diff(cube.func(sp.Symbol("z")), sp.Symbol("z")) == 3 * sp.Symbol("z") ** 2
    compiled = generate.compile_model(model)
    modules = []
    for backend in backends.BUILTIN:  # every built-in backend, each with its one entry
        if backends.get(backend).missing():  # pragma: no cover - all installed in CI
            continue
        text = generate.module(compiled, backend).text
        assert re.search(r"np\.power\(" if backend == "numpy" else r"\*\* ?3", text), backend
        modules.append((backend, str(validate.stage(text, f"cubed_{backend}.py", tmp_path))))
    assert [b for b, _ in modules][:2] == ["numpy", "numba"]
    # in this process (the workers of `generate` would not know a primitive added here):
    # forward against the interpreter, gradients against finite differences, every
    # backend against NumPy
    verdicts = validate.validate_job(validate.Job(str(spec), spec.read_text(), modules))
    assert [v.status for v in verdicts] == ["ok"] * len(modules), [v.message for v in verdicts]


def test_show_prints_every_stage(capsys):
    from symbolic import cli

    outputs = {}
    for stage in generate.STAGES:
        assert cli.main(["generate", "--show", stage, str(SPECS["grn"])]) == 0
        outputs[stage] = capsys.readouterr().out
    assert "G = sigmoid(Zu)" in outputs["model"]
    assert "# adjoint program of one step" in outputs["derivation"]
    assert "# kernel of grn (recurrence: diagonal)" in outputs["kernel"]
    assert outputs["plan"].startswith("# numpy/recurrent.py.j2")
    assert outputs["module"] == (generate.default_out() / "grn_numpy.py").read_text()
    with pytest.raises(SystemExit):
        cli.main(["generate", "--show", "kernel"])  # one spec, exactly
