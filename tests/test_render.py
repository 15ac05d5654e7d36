"""The templates' inputs (symbolic/render.py and the backends' layouts,
templates/<backend>/*.j2 and the shared partials) and what they stamp.

- the context dicts carry exactly the keys the templates read (checked with jinja2's
  ``meta.find_undeclared_variables`` over each template as it renders, its blocks in the
  skeleton it extends, and over the ones it includes);
- every template renders under ``StrictUndefined`` (a missing key is an error);
- each generated module starts with its banner: do not edit, the spec file, the spec's
  sha256, the generator version;
- each emitted block carries a comment naming its equation or adjoint.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import jinja2
import pytest
import sympy as sp
from jinja2 import meta, nodes

import symbolic
from symbolic import backends, parse
from symbolic import render as render_stage
from symbolic.backends.base import templates_root
from symbolic.generate import builtin_specs, compile_model, default_out, render_model
from symbolic.model import COST
from symbolic.render import cell_context, environment

#: The NumPy-array backends whose templates these structural checks read (the torch
#: backend's modules are checked in tests/backends/test_torch_backend.py).
BACKENDS = ("numpy", "numba")
#: Each backend's environment; a template is named ``<backend>/<file>``.
ENVS = {b: environment(backends.get(b)) for b in BACKENDS}
ENV = ENVS["numpy"]
SPECS = {path.stem: path for path in builtin_specs()}
MODELS = {name: parse.load(path) for name, path in SPECS.items()}
MODULE_TEMPLATE = re.compile(
    r"^(?P<backend>[a-z]+)/(?P<kind>feedforward|recurrent|cost)(_\w+)?\.py\.j2$"
)


def module_templates() -> list[str]:
    return sorted(
        f"{b}/{p.name}"
        for b in BACKENDS
        for p in (templates_root() / b).glob("*.j2")
        if not p.name.startswith("_")
    )


def load_template(name: str) -> jinja2.Template:
    """A template named ``<backend>/<file>``, loaded as its backend loads it."""
    backend, file = name.split("/", 1)
    return ENVS[backend].get_template(file)


SPEC_BACKENDS = [
    pytest.param((name, backend), id=f"{name}-{backend}") for name in MODELS for backend in BACKENDS
]
READY = [c.values[0] for c in SPEC_BACKENDS]


@dataclass(frozen=True)
class Rendering:
    """What ``render`` handed to Jinja for one module: the template and its context."""

    template: str
    context: dict
    text: str


@functools.cache
def rendering(name: str, backend: str) -> Rendering:
    """Render through ``symbolic.render.render`` itself, recording the template it picks
    and the exact keyword arguments it passes (so the test follows any layout choice)."""
    seen: list = []
    real = environment(backends.get(backend))

    class Spy:
        def get_template(self, template_name):
            template = real.get_template(template_name)

            class Recorder:
                def render(self, **context):
                    text = template.render(**context)
                    seen.append((f"{backend}/{template_name}", context, text))
                    return text

            return Recorder()

    with mock.patch.object(render_stage, "environment", lambda _: Spy()):
        module = render_stage.render(compile_model(MODELS[name]), backend)
    # the module's rendering is the one whose text it is (render renders again without
    # the helpers its code never calls, and with placeholder display texts, to check
    # that the code ignores them)
    template, context, _ = next(r for r in seen if r[2] == module.text)
    return Rendering(template, context, module.text)


def renderings_of(template: str) -> list[Rendering]:
    return [r for r in map(lambda c: rendering(*c), READY) if r.template == template]


def _parse(name: str) -> nodes.Template:
    """The AST of a template named ``<backend>/<file>``, found as its backend finds it."""
    backend, file = name.split("/", 1)
    env = ENVS[backend]
    return env.parse(env.loader.get_source(env, file)[0])


def _referenced(tree: nodes.Template, name: str) -> list[str]:
    """The templates ``tree`` (of ``name``) includes, imports or extends."""
    backend = name.split("/", 1)[0]
    refs = list(meta.find_referenced_templates(tree))
    assert None not in refs, f"{name}: dynamic include"
    return [f"{backend}/{ref}" for ref in refs]


def _inline(body: list[nodes.Node], blocks: dict[str, nodes.Block]) -> list[nodes.Node]:
    """``body`` with each block replaced by its statements: those of its definition in
    ``blocks`` if there is one (and its own too where that calls ``super()``)."""
    out = []
    for node in body:
        if not isinstance(node, nodes.Block):
            out.append(node)
            continue
        chosen = blocks.get(node.name, node)
        calls_super = any(
            isinstance(call.node, nodes.Name) and call.node.name == "super"
            for call in chosen.find_all(nodes.Call)
        )
        out += _inline(chosen.body + (node.body if calls_super else []), blocks)
    return out


def _as_rendered(name: str, blocks: dict[str, nodes.Block] | None = None) -> nodes.Template:
    """A template's AST as it renders, its blocks inlined: one that extends another is the
    other's AST with the blocks it defines (or ``blocks``, defined by a template extending
    it) in place of the other's, after its own imports (the rest of its top level is never
    rendered)."""
    tree = _parse(name)
    blocks = blocks or {}
    extends = next((n for n in tree.body if isinstance(n, nodes.Extends)), None)
    if extends is None:
        tree.body = _inline(tree.body, blocks)
        assert not list(tree.find_all(nodes.Block)), f"{name}: a block inside a statement"
        return tree
    (parent_name,) = _referenced(nodes.Template([extends]), name)
    own = {block.name: block for block in tree.find_all(nodes.Block)}
    parent = _as_rendered(parent_name, own | blocks)
    kept = [n for n in tree.body if not isinstance(n, nodes.Extends | nodes.Block | nodes.Output)]
    parent.body = kept + parent.body
    return parent


def _trees(name: str) -> list[nodes.Template]:
    """A template's AST as it renders and those of every template it includes or imports
    (recursively); ``name`` is ``<backend>/<file>``, and what it includes is looked up as
    its backend does."""
    tree = _as_rendered(name)
    out = [tree]
    for ref in _referenced(tree, name):
        out += _trees(ref)
    return out


def _files(name: str) -> set[Path]:
    """The files of the templates ``name`` includes, imports or extends (recursively), as
    its backend finds them (a backend's own partial before a shared one of that name)."""
    backend = name.split("/", 1)[0]
    refs = _referenced(_parse(name), name)
    env = ENVS[backend]
    found = {Path(env.loader.get_source(env, ref.split("/", 1)[1])[1]).resolve() for ref in refs}
    return found.union(*map(_files, refs))


def used_keys(name: str) -> set[str]:
    keys: set[str] = set()
    for tree in _trees(name):
        keys |= meta.find_undeclared_variables(tree)
    return keys


def used_fields(name: str) -> dict[str, set[str]]:
    """``{list key: fields read from its items}`` for loops ``{% for s in key %}``."""
    fields: dict[str, set[str]] = {}
    for tree in _trees(name):
        for loop in tree.find_all(nodes.For):
            if not (isinstance(loop.iter, nodes.Name) and isinstance(loop.target, nodes.Name)):
                continue
            var = loop.target.name
            found = fields.setdefault(loop.iter.name, set())
            parts = list(loop.body) + ([loop.test] if loop.test is not None else [])
            for part in parts:
                attrs = list(part.find_all(nodes.Getattr))
                if isinstance(part, nodes.Getattr):
                    attrs.append(part)
                for attr in attrs:
                    if isinstance(attr.node, nodes.Name) and attr.node.name == var:
                        found.add(attr.attr)
    return fields


# ---------------------------------------------------------------------------------------
# The environment
# ---------------------------------------------------------------------------------------


def test_environment_is_strict_and_trims_blocks():
    assert ENV.undefined is jinja2.StrictUndefined
    assert ENV.trim_blocks and ENV.lstrip_blocks
    assert ENV.keep_trailing_newline
    assert not ENV.autoescape


def test_every_template_file_is_known():
    """Module templates are ``<backend>/<kind>[_<layout>].py.j2``; every partial is
    included, imported or extended by some template; every module template is used by a
    built-in spec (so that the strict rendering below reaches it)."""
    included = set().union(*map(_files, module_templates()))
    for path in templates_root().rglob("_*.j2"):
        if path.parent.name in backends.BUILTIN and path.parent.name not in BACKENDS:
            continue  # checked with that backend's own tests
        assert path.resolve() in included, f"{path.name} is included by no template"
    used = {rendering(*case).template for case in READY}
    for name in module_templates():
        match = MODULE_TEMPLATE.match(name)
        if match and match["backend"] in backends.BUILTIN and match["backend"] not in BACKENDS:
            continue
        assert match and match["backend"] in BACKENDS, f"unexpected template {name}"
        assert name in used, f"{name} is rendered by no built-in spec"


# ---------------------------------------------------------------------------------------
# Context keys == template keys
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", SPEC_BACKENDS)
def test_every_key_a_template_reads_is_in_its_context(case):
    r = rendering(*case)
    missing = used_keys(r.template) - set(r.context)
    assert not missing, f"{r.template} reads {sorted(missing)}, absent from the context"


@pytest.mark.parametrize("template", module_templates())
def test_every_field_a_template_reads_from_a_list_exists(template):
    """``{% for s in forward %} ... s.code``: some item of some context has ``code``.

    (A field read under a condition, like ``s.arg`` under ``s.matvec``, need not be on
    every item; rendering under StrictUndefined checks the items that reach it.)
    """
    provided: dict[str, set[str]] = {}
    for r in renderings_of(template):
        for key, value in r.context.items():
            if isinstance(value, list):
                for item in value:
                    if isinstance(item, dict):
                        provided.setdefault(key, set()).update(item)
    for key, wanted in used_fields(template).items():
        if key not in provided:  # a list that is empty in every built-in spec
            continue
        conditional = {"arg", "matrix", "transpose"}  # only on matrix-product statements
        missing = wanted - provided[key] - conditional
        assert not missing, f"{template}: items of {key!r} never have {sorted(missing)}"


def _dead_keys(costs: bool) -> set[str]:
    """Keys some context provides that none of the templates it feeds reads."""
    read: set[str] = set()
    provided: set[str] = set()
    for case in READY:
        if (MODELS[case[0]].kind == COST) != costs:
            continue
        r = rendering(*case)
        read |= used_keys(r.template)
        provided |= set(r.context)
    return provided - read


# Keys no template reads, known and reported; any other dead key fails outright.
KNOWN_DEAD_CELL_KEYS = {"input", "state_names"}
KNOWN_DEAD_COST_KEYS = {"kind"}


def test_cell_context_has_no_unknown_dead_key():
    assert _dead_keys(costs=False) <= KNOWN_DEAD_CELL_KEYS


def test_cost_context_has_no_unknown_dead_key():
    assert _dead_keys(costs=True) <= KNOWN_DEAD_COST_KEYS


def test_cell_context_has_exactly_the_keys_the_templates_read():
    assert _dead_keys(costs=False) == set()


def test_cost_context_has_exactly_the_keys_the_templates_read():
    assert _dead_keys(costs=True) == set()


@pytest.mark.parametrize("case", SPEC_BACKENDS)
def test_context_values_are_text_not_sympy(case):
    """Templates receive printed text: no SymPy object reaches a template."""

    def walk(value, where):
        assert not isinstance(value, sp.Basic), f"{where} is a SymPy object: {value!r}"
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{where}.{k}")
        elif isinstance(value, list | tuple):
            for i, v in enumerate(value):
                walk(v, f"{where}[{i}]")
        else:
            assert value is None or isinstance(value, str | bool | int), (
                f"{where}: {type(value).__name__}"
            )

    walk(rendering(*case).context, case[0])


# ---------------------------------------------------------------------------------------
# Rendering under StrictUndefined
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", SPEC_BACKENDS)
def test_every_template_renders_with_strict_undefined(case):
    r = rendering(*case)  # render() itself, with the strict environment checked above
    assert r.text.strip()
    compile(r.text, f"{case[0]}_{case[1]}.py", "exec")  # the rendering is Python
    # and the same context renders again identically (no hidden state)
    assert load_template(r.template).render(**r.context) == r.text


@pytest.mark.parametrize("template", module_templates())
def test_a_missing_key_is_an_error_not_an_empty_string(template):
    """Dropping any key a template reads fails loudly, for some built-in spec that reaches
    the place where it is read."""
    renderings = renderings_of(template)
    assert renderings, f"{template}: rendered by no built-in spec"
    jinja_template = load_template(template)
    for key in sorted(used_keys(template)):
        for r in renderings:
            partial = {k: v for k, v in r.context.items() if k != key}
            try:
                jinja_template.render(**partial)
            except jinja2.UndefinedError:
                break
        else:
            pytest.fail(f"{template}: rendering without {key!r} did not fail")


# ---------------------------------------------------------------------------------------
# What the generated modules carry: banner and per-block provenance
# ---------------------------------------------------------------------------------------


COUPLED_SPEC = """
name = "gated"
kind = "recurrent"
input = "x"
output = "a"
state = { h = "a" }

[params]
W = "matrix"
R = "matrix"
U = "matrix"
b = "vector"

[equations]
r = "sigmoid(R@h)"
n = "tanh(W@x + U@(r*h) + b)"
a = "n + 0.5*h"
"""


def test_matrix_products_inside_the_loop_render_strictly(tmp_path):
    """A matrix-coupled recurrence (``U@(r*h)``) takes the templates' matrix-product
    branches, which no built-in spec reaches; rendering must still be strict and valid."""
    spec = tmp_path / "gated.toml"
    spec.write_text(COUPLED_SPEC)
    cell = parse.load(spec)
    ctx = cell_context(compile_model(cell).kernel, backends.get("numpy"))
    assert any(s["matvec"] for s in ctx["forward"]) and any(s["matvec"] for s in ctx["backward"])
    text = render_model(cell, "numpy").text
    compile(text, "gated_numpy.py", "exec")


def module_path(spec: str, backend: str) -> Path:
    return default_out() / f"{spec}_{backend}.py"


@pytest.mark.parametrize("case", SPEC_BACKENDS)
def test_banner(case):
    spec, backend = case
    spec_path = SPECS[spec]
    lines = module_path(spec, backend).read_text(encoding="utf-8").splitlines()
    digest = hashlib.sha256(spec_path.read_bytes()).hexdigest()
    assert lines[:3] == [
        f"# Generated by derivgen {symbolic.__version__} from symbolic/specs/{spec}.toml: "
        "do NOT edit by hand.",
        f"# spec sha256: {digest}",
        "# Regenerate with `derivgen generate`; `derivgen generate --check` finds stale files.",
    ]


def test_banner_never_holds_an_absolute_path(tmp_path):
    """A spec outside the package is named by its file name only (no machine paths)."""

    spec = tmp_path / "deep" / "mine.toml"
    spec.parent.mkdir()
    text = SPECS["dense_linear"].read_text().replace('name = "dense_linear"', 'name = "mine"')
    spec.write_text(text)
    module = render_model(parse.load(spec), "numpy")
    first = module.text.splitlines()[0]
    assert (
        first
        == f"# Generated by derivgen {symbolic.__version__} from mine.toml: do NOT edit by hand."
    )
    assert str(tmp_path) not in module.text


def _comment_then_statement(lines: list[str], comment: str, target: str) -> bool:
    """Some ``# comment`` line is directly followed by code that computes ``target`` (an
    assignment ``target = ...``, a buffer write ``target_seq[...] = ...`` or a product
    ``np.matmul(..., out=_w_target)``: whatever the layout)."""
    # the name, possibly decorated (``a_seq``, ``_w_dh_U``), but not inside another word
    left = "" if target.startswith("_") else "(?<![A-Za-z0-9])"
    name = re.compile(rf"{left}{re.escape(target)}(?![A-Za-z0-9])")
    for i, line in enumerate(lines[:-1]):
        if line.strip() == f"# {comment}" and name.search(lines[i + 1]):
            return True
    return False


def _comment_heads_code(lines: list[str], comment: str) -> bool:
    """Some comment line starts with ``# comment`` and the block of comments it is in is
    followed by code."""
    for i, line in enumerate(lines):
        if line.strip().startswith(f"# {comment}"):
            rest = [x.strip() for x in lines[i + 1 :] if x.strip()]
            code = next((x for x in rest if not x.startswith("#")), "")
            if code and not code.startswith(("def ", "return", "for ")):
                return True
    return False


CELL_CASES = [c for c in SPEC_BACKENDS if MODELS[c.values[0][0]].kind != COST]
COST_CASES = [c for c in SPEC_BACKENDS if MODELS[c.values[0][0]].kind == COST]


def _normalized(source: str) -> str:
    """An equation as generated code shows it: parsed and printed back (ast.unparse)."""
    return ast.unparse(ast.parse(source.strip(), mode="eval").body)


@pytest.mark.parametrize("case", CELL_CASES)
def test_each_block_names_its_equation_or_adjoint(case):
    spec, backend = case
    lines = module_path(spec, backend).read_text(encoding="utf-8").splitlines()
    kernel = compile_model(MODELS[spec]).kernel
    # every statement of the kernel IR is emitted under its provenance comment; the NumPy
    # backend fuses statements (Zu into G = sigmoid(Zu)), and both stack the input
    # projections, so there a comment line per statement heads the code that computes it
    for stmt in kernel.pre + kernel.forward + kernel.backward:
        assert stmt.comment, f"{stmt.target} has no comment"
        if backend == "numpy" or stmt in kernel.pre:
            assert _comment_heads_code(lines, stmt.comment), (
                f"{spec}_{backend}: no '# {stmt.comment}' heading code"
            )
            continue
        assert _comment_then_statement(lines, stmt.comment, stmt.target), (
            f"{spec}_{backend}: no '# {stmt.comment}' just before the code of {stmt.target}"
        )
    # and, from the spec itself: each equation is named by a forward block and an adjoint
    data = tomllib.loads(SPECS[spec].read_text())
    text = "\n".join(line.strip() for line in lines)
    for name, source in data["equations"].items():
        source = _normalized(source)
        assert f"# {name} = {source}" in text, f"no forward block names {name}"
        assert f"# adjoint of {name} = {source}" in text, f"no adjoint block names {name}"


@pytest.mark.parametrize("case", COST_CASES)
def test_cost_blocks_name_the_cost_and_its_gradient(case):
    spec, backend = case
    data = tomllib.loads(SPECS[spec].read_text())
    text = module_path(spec, backend).read_text(encoding="utf-8")
    assert f"# C = sum of {_normalized(data['per_unit'])}" in text
    assert f"# dC/d{data['prediction']}" in text


def _top_level_functions_never_read(text: str) -> set[str]:
    tree = ast.parse(text)
    defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    read = set()
    for node in tree.body:
        own = node.name if isinstance(node, ast.FunctionDef) else None
        for n in ast.walk(node):
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load) and n.id != own:
                read.add(n.id)
    return {name for name in defined if name.startswith("_np_") and name not in read}


@pytest.mark.parametrize("path", sorted(default_out().glob("*.py")), ids=lambda p: p.stem)
def test_no_module_carries_a_numpy_helper_its_code_never_calls(path):
    """A Numba module's kernels call a primitive's compiled form: the primitive's NumPy
    helper is left out unless whole-array code (a reduction, a cost) calls it."""
    assert _top_level_functions_never_read(path.read_text(encoding="utf-8")) == set()


def test_called_helpers_keeps_what_the_code_or_a_kept_helper_reads():
    helpers = [
        "def _np_a(z):\n    return _np_b(z) + 1",
        "def _np_b(z):\n    return z",
        "def _np_c(z):\n    return _np_d(z)",
        "def _np_d(z):\n    return z",
        "def _np_e(z):\n    return z",
    ]
    text = "\n\n".join(helpers) + "\n\n\ndef forward(x):\n    return _np_a(x) + _np_e\n"
    assert render_stage._called_helpers(text, helpers) == [helpers[0], helpers[1], helpers[4]]
    assert render_stage._called_helpers(text.replace("_np_a(x) + ", ""), helpers) == [helpers[4]]
    assert render_stage._called_helpers(text, []) == []


@pytest.mark.parametrize("spec", ["dense_sigmoid", "grn", "elman", "layer_norm"])
def test_a_numba_kernel_writes_the_callers_copy_of_a_cached_output(spec):
    """Where the cache holds the output, the Numba kernel that computes it stores it a
    second time, into the array the forward pass returns (no copy read back after the
    kernel); an output the cache does not hold is returned as it is."""
    from dataclasses import replace

    from symbolic.backends.numba import layout
    from symbolic.ir import MatVec

    kernel = compile_model(MODELS[spec]).kernel
    keys = cell_context(kernel, backends.get("numba"))
    text = module_path(spec, "numba").read_text(encoding="utf-8")
    output = MODELS[spec].output
    if not keys["output_shared"]:
        assert layout._returned(kernel, keys) == {"returned": keys["output_array"]}
        assert f"return {keys['output_array']}, cache" in text
        return
    assert layout._returned(kernel, keys) == {"returned": layout.RETURNED}
    assert f"return {layout.RETURNED}, cache" in text and ".copy(), cache" not in text
    stores = re.findall(
        rf"\b{layout.RETURNED}\[[^\]]*\] = {output}$|"
        rf"_r_{layout.RETURNED}\[_[ik]\] = {output}$",
        text,
        re.M,
    )
    assert len(stores) == 1, stores
    # an output a matrix product writes (NumPy's, outside the kernels): a copy after it
    product = MatVec(output, "V", "s", False, output)
    forward = [st for st in kernel.forward if st.target != output] + [product]
    copied = layout._returned(replace(kernel, forward=forward), keys)
    assert copied == {"returned": f"{keys['output_array']}.copy()"}


@pytest.mark.parametrize("spec", ["grn", "sru", "indrnn", "mingru"])
def test_a_diagonal_numba_kernel_sums_every_vector_gradient_per_lane(spec):
    """A diagonal recurrence's backward kernel adds every vector parameter's adjoint, a
    bias's included, into a (B, n) float64 accumulator while it is in the cache: no sum
    of the stored adjoints is read again after the kernel."""
    model = MODELS[spec]
    text = module_path(spec, "numba").read_text(encoding="utf-8")
    kernel_text = text[text.index("def _backward_kernel(") : text.index("\ndef forward(")]
    vectors = [name for name, kind in model.params.items() if kind == "vector"]
    assert vectors
    for name in vectors:
        assert f"    _g_{name} = np.zeros((_B, _n_out), np.float64)" in text, name
        assert re.search(rf"_r__g_{name}\[_k\] \+= ", kernel_text), name
        assert f'grads["{name}"] = _g_{name}.sum(axis=0).astype(_dtype)' in text, name
    assert "_dP_sum" not in text and ".sum(axis=(0, 1))" not in text
