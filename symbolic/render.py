"""Kernel IR -> module text (pipeline stage 5, ``module``).

Input: a :class:`~symbolic.ir.Compiled` model (a cell's kernel, or a cost's derivation)
and a backend's name. Output: the text of one generated module. The keys every module
shares (names, parameters, gradients, the banner) are made here; the backend
(:mod:`symbolic.backends`) adds its layout and names its template. Every expression is
printed by a backend's printer; the Jinja templates (``templates/<backend>/`` and the
shared partials in ``templates/``) receive strings only and hold layout, not logic.
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from pathlib import Path

import jinja2
import sympy as sp

from symbolic import (
    __version__,
    backends,
    inits,
    ir,
    naming,
    passes,
    primitives,
    printing,
    reductions,
    sizes,
)
from symbolic.backends import Backend, UnsupportedSpec
from symbolic.backends.base import statement, templates_root
from symbolic.backends.numpy import primitives as numpy_primitives
from symbolic.backends.numpy.printer import code as numpy_code
from symbolic.ir import COUPLED, Assign, Compiled, CostDerivation, Kernel, MatVec
from symbolic.model import RECURRENT, ROW, UNIT, Cell, Cost, Init


def environment(backend: Backend) -> jinja2.Environment:
    """The Jinja environment of a backend (see :func:`new_environment`), shared: one per
    template folder and process, so that each template is compiled once (Jinja reloads a
    template whose file changed since). Not to be changed: make a new one for that."""
    return _shared_environment(str(backend.templates), str(templates_root()))


def new_environment(backend: Backend) -> jinja2.Environment:
    """A new Jinja environment of a backend: its templates, then the shared partials;
    strict (a missing key is an error), no stray whitespace."""
    return _new_environment(str(backend.templates), str(templates_root()))


def _new_environment(templates: str, shared: str) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([templates, shared]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    # display text (titles, file names, equations as written) reaches docstrings and
    # comments only through this filter
    env.filters["text"] = printing.display
    return env


_shared_environment = functools.cache(_new_environment)


@dataclass(frozen=True)
class Module:
    """One generated module: its file name and text."""

    filename: str
    text: str


def spec_label(path: Path) -> str:
    """The spec's path as the banner shows it (relative to the package, never absolute)."""
    path = Path(path)
    package = Path(__file__).resolve().parent
    try:
        return str(path.resolve().relative_to(package.parent)).replace("\\", "/")
    except ValueError:
        return path.name


def _arrays(kernel: Kernel, backend: Backend) -> dict[str, str]:
    """Where each value the kernels exchange lives: ``name -> array``."""
    cell = kernel.cell
    names = set(kernel.cached) | set(kernel.stored) | {cell.output}
    names |= {s.target for s in kernel.pre}
    if cell.kind == RECURRENT:
        arrays = {name: naming.sequence(name) for name in names}
    elif backend.lane_buffers:
        arrays = {name: naming.buffer(name) for name in names}
    else:  # NumPy feedforward code works on whole arrays named like the symbols
        arrays = {name: name for name in names}
    arrays[cell.input] = "_x"
    return arrays


def _params(cell: Cell) -> list[dict]:
    """Each parameter: its shape in sizes and its fan-in (for the initialisation)."""
    params = []
    for name, kind in cell.params.items():
        if kind == "matrix":
            rows, cols = _shape_names(cell, name)
            shape = f"({rows}, {cols})"
            fan_in = cols
        else:
            # a vector enters each neuron once
            shape, fan_in = f"({_shape_names(cell, name)[0]},)", "1"
        params.append(
            {
                "name": name,
                "kind": kind,
                "shape": shape,
                "fan_in": fan_in,
                "array": naming.param_array(name),
                "init": _init(inits.of(cell.init, name, kind), fan_in),
            }
        )
    return params


def _shape_names(cell: Cell, param: str) -> tuple[str, ...]:
    """A parameter's shape in size names (``n_in``, ``n_out``, a named size)."""
    if param in cell.shapes:
        return cell.shapes[param]
    if cell.params[param] == "vector":
        return ("n_out",)
    return tuple({"in": "n_in", "out": "n_out"}[s] for s in cell.matrix_shape(param))


def size_context(cell: Cell) -> dict:
    """The keys of a module's named sizes (all empty without ``[sizes]``): each size, its
    default and the parameter axis a module reads it from; the parameter giving n_out;
    the extra signature of ``param_shapes`` and ``init_params``; and the lines binding
    each size as ``_n_<size>`` in a function that has checked ``params``."""
    if not cell.sizes:
        return {
            "sizes": [],
            "out_source": None,
            "size_params": "",
            "size_defaults": "",
            "size_args": "",
            "size_lines": [],
        }
    where = sizes.sources(cell)
    named = [
        {"name": n, "default": d, "param": where[n][0], "axis": where[n][1]}
        for n, d in cell.sizes.items()
    ]
    defaults = "".join(f", {s['name']}={s['default']}" for s in named)
    return {
        "sizes": named,
        "out_source": {"param": where["n_out"][0], "axis": where["n_out"][1]},
        "size_params": ", *" + defaults,
        "size_defaults": defaults,
        "size_args": "".join(f", {s['name']}={s['name']}" for s in named),
        "size_lines": [
            f'{naming.size(s["name"])} = _size_of(params, "{s["param"]}", {s["axis"]})'
            for s in named
        ],
    }


def _init(init: Init, fan_in: str) -> dict:
    """A parameter's initialisation as the templates draw it: its name, its constant or
    gain, and the uniform's bounds as code (the gain over sqrt(fan_in) unless given)."""
    gain = 1.0 if init.value is None else init.value
    scaled = repr(gain) if fan_in == "1" else f"{gain!r} / {fan_in} ** 0.5"
    if init.low is not None:
        low, high = repr(init.low), repr(init.high)
    else:
        low, high = (f"-{scaled}" if fan_in == "1" else f"-({scaled})"), scaled
    return {
        "name": init.name,
        "value": repr(gain),
        "unit_gain": gain == 1.0,
        "low": low,
        "high": high,
        "fan_in": fan_in,
    }


def _grads(kernel: Kernel, backend: Backend, arrays: dict[str, str]) -> list[dict]:
    """Each parameter's gradient: a vector's sum (whole-array code and per-lane code), a
    matrix's products of adjoints and arguments."""
    cell = kernel.cell
    vector = dict(kernel.vector_grads)
    matrix = dict(kernel.matrix_grads)
    grads = []
    for name, kind in cell.params.items():
        if kind == "vector":
            expr = vector[name]
            grads.append(
                {
                    "param": name,
                    "kind": kind,
                    "code": numpy_code(expr, arrays),
                    # the parameter does not reach the cost (``B - B``): zeros
                    "zero": expr == 0,
                    "local": backend.code(expr),
                    "array": naming.grad_array(name),
                    # a gradient that is a stored adjoint summed needs no accumulator
                    "stored": arrays[expr.name]
                    if isinstance(expr, sp.Symbol) and expr.name in kernel.stored
                    else "",
                    "terms": [],
                }
            )
            continue
        terms = [
            {
                "adjoint": arrays[adj],
                "arg": arrays[arg],
                "arg_size": "_n_in" if arg == cell.input else "_n_out",
            }
            for adj, arg in matrix[name]
        ]
        grads.append(
            {
                "param": name,
                "kind": kind,
                "code": "",
                "local": "",
                "array": "",
                "stored": "",
                "terms": terms,
            }
        )
    return grads


def _primitives_used(kernel: Kernel) -> set[str]:
    used = set()
    for stmt in kernel.forward + kernel.backward:
        if isinstance(stmt, Assign):
            used |= primitives.used(stmt.expr) | reductions.used(stmt.expr)
    for _, expr in kernel.vector_grads:
        used |= primitives.used(expr) | reductions.used(expr)
    return used


def _states(cell: Cell) -> list[dict]:
    return [
        {
            "name": state,
            "target": target,
            "adjoint": naming.adjoint(state),
            "carried": naming.carried(state),
            "array": naming.state_array(state),
            "carried_array": naming.state_array(naming.carried(state)),
        }
        for state, target in cell.states.items()
    ]


def _work(kernel: Kernel) -> dict:
    """The thread policy's inputs: products of the input and in the step, and the
    elementwise work per lane and step (a transcendental call counted as 10 flops)."""
    ops = passes.count_ops(kernel.forward + kernel.backward)
    return {
        "input_products": len(kernel.pre),
        "state_products": sum(isinstance(s, MatVec) for s in kernel.forward),
        "lane_flops": max(1, ops["arithmetic"] + 10 * ops["calls"]),
    }


def _input_keys(kernel: Kernel, arrays: dict[str, str]) -> dict:
    """An elementwise input: forward checks n_in = n_out (``input_elementwise``); dx adds
    its stored lane adjoint (``input_adjoint``, "" when the input is in products only)."""
    adjoint = kernel.input_adjoint
    return {
        "input_elementwise": kernel.cell.input_elementwise,
        "input_adjoint": arrays[adjoint] if adjoint else "",
    }


def cell_context(kernel: Kernel, backend: Backend) -> dict:
    """The template keys of a cell module: names and printed code, nothing else.

    Each vector symbol has a per-lane scalar (or, in NumPy, per-step array) named as in
    the spec, and a buffer holding it for every lane (and step): ``array``.
    """
    cell: Cell = kernel.cell
    recurrent = cell.kind == RECURRENT
    arrays = _arrays(kernel, backend)

    def entry(name: str) -> dict:
        return {"name": name, "array": arrays[name]}

    params = _params(cell)
    grads = _grads(kernel, backend, arrays)
    read_back = {n for s in kernel.backward for n in ir.reads(s, matrices=True)}
    grad_reads = {n for _, e in kernel.vector_grads for n in ir.names(e)}
    # Numba accumulates the vector gradients inside the step, NumPy after the loop.
    step_reads = set(read_back)
    if backend.grads_in_step:
        step_reads |= grad_reads
    read_back |= {m for _, m in kernel.input_grads} | grad_reads
    vector_params = [p for p in params if p["kind"] == "vector"]
    forward = [statement(s, backend.code) for s in kernel.forward]
    backward = [statement(s, backend.code) for s in kernel.backward]
    printed = [s["code"] for s in forward + backward] + [g["local"] for g in grads]
    used = _primitives_used(kernel)
    helpers = backend.helpers(used)
    work = _work(kernel) | _input_keys(kernel, arrays)
    return work | {
        # a diagonal recurrence runs every step in one parallel loop
        "one_loop": recurrent and kernel.recurrence != COUPLED,
        "helpers": helpers,
        # the NumPy code of either backend (whole-array statements) calls these
        "numpy_helpers": numpy_primitives.helpers(used),
        "uses_math": any("math." in text for text in printed + helpers),
        "name": cell.name,
        "title": cell.title,
        "kind": cell.kind,
        "recurrence": kernel.recurrence,
        "spec_file": spec_label(cell.path),
        "spec_sha256": cell.sha256,
        "version": __version__,
        "output": cell.output,
        "output_array": arrays[cell.output],
        "upstream": naming.upstream(cell.output),
        "params": params,
        # init_params draws orthogonal matrices
        "init_orthogonal": any(p["init"]["name"] == "orthogonal" for p in params),
        "backward_params": [p["name"] for p in params if p["name"] in read_back],
        "vector_params": vector_params,
        "backward_vector_params": [p for p in vector_params if p["name"] in read_back],
        "state_names": list(cell.states),
        "states": _states(cell),
        "equations": [
            {"name": eq.name, "source": eq.source} for eq in cell.equations if not eq.lifted
        ],
        "pre": [dict(statement(s, backend.code), array=arrays[s.target]) for s in kernel.pre],
        "forward": forward,
        "cached": [entry(n) for n in kernel.cached],
        # what the backward step reads of the cache (the rest is read after the loop)
        "backward_loads": [entry(n) for n in kernel.cached if n in step_reads],
        # what the forward kernel writes (the projections of the input are computed
        # before it, in arrays of their own)
        "stores": [
            entry(n)
            for n in sorted(set(kernel.cached) | {cell.output})
            if n not in {st.target for st in kernel.pre}
        ],
        # The returned output is the caller's to edit: a copy when the cache holds it
        # (or the state buffer it is a view of).
        "output_shared": cell.output in kernel.cached
        or any(s in kernel.cached and t == cell.output for s, t in cell.states.items()),
        "backward": backward,
        "stored": [entry(n) for n in kernel.stored],
        "grads": grads,
        "input_grads": [{"adjoint": arrays[adj], "matrix": m} for adj, m in kernel.input_grads],
        "scan": None,
    }


def cost_context(derived: CostDerivation) -> dict:
    """The template keys every cost module shares."""
    cost = derived.cost
    used = (
        primitives.used(derived.per_unit)
        | reductions.used(derived.per_unit)
        | primitives.used(derived.gradient)
        | reductions.used(derived.gradient)
    )
    return {
        "numpy_helpers": numpy_primitives.helpers(used),
        "name": cost.name,
        "title": cost.title,
        "spec_file": spec_label(cost.path),
        "spec_sha256": cost.sha256,
        "version": __version__,
        "prediction": cost.prediction,
        "target": cost.target,
        "per_unit_source": cost.source,
        "gradient_source": sp.sstr(derived.gradient),
        "input_elementwise": False,
    } | cost_input_keys(cost)


def cost_input_keys(cost: Cost) -> dict:
    """The template keys of a cost's named inputs (``[inputs]``): each one's name and
    kind, and which kinds occur (each kind has its argument check)."""
    kinds = set(cost.inputs.values())
    return {
        "inputs": [{"name": name, "kind": kind} for name, kind in cost.inputs.items()],
        "row_inputs": ROW in kinds,
        "unit_inputs": UNIT in kinds,
    }


def layout(compiled: Compiled, backend: str) -> tuple[str, dict]:
    """The backend's template for ``compiled`` and every key it renders with (the plan
    ``derivgen generate --show plan`` prints)."""
    chosen = backends.get(backend)
    if compiled.kernel is None:
        keys = cost_context(compiled.derivation)
        template, extra = chosen.cost(compiled.derivation, keys)
    else:
        keys = cell_context(compiled.kernel, chosen) | size_context(compiled.kernel.cell)
        template, extra = chosen.cell(compiled.kernel, keys)
    return template, keys | extra


def render(compiled: Compiled, backend: str) -> Module:
    """The generated module of a compiled model for ``backend``."""
    name, keys = layout(compiled, backend)
    template = environment(backends.get(backend)).get_template(name)
    text = template.render(**keys)
    tree = _parsed(text, compiled.model)
    called = _called_helpers(tree, keys.get("numpy_helpers", []))
    if called != keys.get("numpy_helpers", []):
        keys = keys | {"numpy_helpers": called}
        text = template.render(**keys)
        tree = _parsed(text, compiled.model)
    _check_code_ignores_display_text(template, keys, text, tree, compiled.model)
    return Module(f"{compiled.model.name}_{backend}.py", text)


def _parsed(text: str, model) -> ast.Module:
    """A rendered module's tree (parsed once for every check below)."""
    try:
        return ast.parse(text)
    except SyntaxError as exc:
        raise TemplateBug(f"{model.path}: the rendered module is not Python: {exc}") from None


def _called_helpers(module: str | ast.Module, helpers: list[str]) -> list[str]:
    """The NumPy helpers that the module's code (its text or its tree) calls. A Numba
    module's kernels call a primitive's compiled form, not its NumPy helper: that helper
    would be dead code. A helper is kept where code outside the helpers reads one of its
    functions, or where a kept helper does."""
    if not helpers:
        return helpers
    owner: dict[str, int] = {}  # a helper's function name -> its index
    for index, source in enumerate(helpers):
        for name in _helper_names(source):
            owner[name] = index
    reads: dict[int | None, set[str]] = {}  # per helper (None: the rest of the module)
    tree = ast.parse(module) if isinstance(module, str) else module
    for node in tree.body:
        names = _defined_names(node)
        index = next((owner[n] for n in names if n in owner), None)
        reads.setdefault(index, set()).update(
            n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
        )
    kept: set[int] = set()
    frontier = [None]
    while frontier:
        for name in reads.get(frontier.pop(), set()):
            index = owner.get(name)
            if index is not None and index not in kept:
                kept.add(index)
                frontier.append(index)
    return [h for i, h in enumerate(helpers) if i in kept]


@functools.lru_cache(maxsize=256)
def _helper_names(source: str) -> tuple[str, ...]:
    """The names a helper's source binds (the same few helpers recur in every module)."""
    return tuple(name for node in ast.parse(source).body for name in _defined_names(node))


def _defined_names(node: ast.stmt) -> list[str]:
    """The names a top-level statement binds: a function's or class's, an assignment's."""
    if isinstance(node, ast.FunctionDef | ast.ClassDef):
        return [node.name]
    if isinstance(node, ast.Assign):
        return [t.id for t in node.targets if isinstance(t, ast.Name)]
    return []


#: Context keys holding display text (they reach docstrings and comments only).
DISPLAY_KEYS = ("title", "spec_file", "per_unit_source", "gradient_source")


def _code_shape(module: str | ast.Module, module_docstring: bool = True) -> list:
    """The module's code (its text, or its tree, which this changes) as a flat list: each
    node's type, then its fields in order (a list's length before its items, a value with
    its type, so that 1 and 1.0 differ); docstrings are removed, and comments are not in
    the tree. Two parsed modules have the same list exactly where ``ast.dump`` (without
    positions) gives the same text for both; the list costs less than half as much.
    With ``module_docstring`` false, the tree holds statements from the middle of a
    module: a string first among them is code, not the module's docstring."""
    tree = ast.parse(module) if isinstance(module, str) else module
    # A docstring is the first statement of a module's, a class's or a function's body:
    # only statements are visited (an expression holds no statement).
    statements: list[ast.AST] = [tree]
    while statements:
        node = statements.pop()
        body = getattr(node, "body", None)
        if (
            isinstance(node, _WITH_DOCSTRING)
            and (module_docstring or node is not tree)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            body[0] = ast.Pass()
        for field in _STATEMENT_LISTS:
            statements.extend(getattr(node, field, ()))
    return _flat(tree, [])


def _flat(node: ast.AST, out: list) -> list:
    """``node`` in pre-order, appended to ``out`` (see ``_code_shape``)."""
    out.append(type(node))
    for field in node._fields:
        value = getattr(node, field, None)
        if isinstance(value, ast.AST):
            _flat(value, out)
        elif isinstance(value, list):
            out.append(len(value))
            for item in value:
                if isinstance(item, ast.AST):
                    _flat(item, out)
                else:
                    out.append((type(item), item))
        else:
            out.append((type(value), value))
    return out


_WITH_DOCSTRING = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
#: The fields that hold statements (``handlers`` and ``cases`` hold nodes with bodies).
_STATEMENT_LISTS = ("body", "orelse", "finalbody", "handlers", "cases")


def _check_code_ignores_display_text(
    template, context: dict, text: str, tree: ast.Module, model
) -> None:
    """A structural guard: the module rendered with every display text replaced by a
    placeholder must be the same code, docstrings and comments aside. If a title or an
    equation as written could change a single statement, that is a template bug.

    Display text reaches a few lines (the banner, the docstrings, some comments): only
    the top-level statements that hold a line where the two renders differ are parsed
    again and compared (:func:`_same_code_where_texts_differ`); where that cannot show
    the two are the same code, the whole placeholder module is parsed and compared."""
    plain = dict(context)
    for key in DISPLAY_KEYS:
        if key in plain:
            plain[key] = "TEXT"
    if "equations" in plain:
        plain["equations"] = [dict(eq, source="TEXT") for eq in plain["equations"]]
    other = template.render(**plain)
    if _same_code_where_texts_differ(text, tree, other):
        return
    if _code_shape(tree) != _code_shape(_parsed(other, model)):
        raise TemplateBug(
            f"{model.path}: the generated code depends on display text (a title, a file "
            "name or an equation as written): a template bug"
        )


def _same_code_where_texts_differ(text: str, tree: ast.Module, other: str) -> bool:
    """Whether ``other`` is shown to be the same code as ``text`` (whose tree is ``tree``)
    by comparing only the top-level statements that hold a line where they differ; false
    where it is not shown (the caller then compares the whole modules).

    The lines where the texts differ are widened to whole top-level statements of
    ``text`` (and the comments and blank lines between them). Between such regions the
    texts are the same, and each region of ``text`` starts and ends between top-level
    statements, where the tokenizer holds no open bracket, string or block. Where the
    matching region of ``other`` parses on its own, it too is whole statements, so the
    text after it is read as in ``text``: the modules are the same code exactly where
    each pair of regions is."""
    if "\r" in text or "\r" in other:
        return False  # lines are counted at "\n" below, as the parser counts them here
    lines, others = text.split("\n"), other.split("\n")
    spans = [_span(node) for node in tree.body]
    shift = len(others) - len(lines)  # nonzero only with one region (see _differing_lines)
    first = spans[0][0] if spans else len(lines)
    for lo, hi in _widened(_differing_lines(lines, others), spans):
        try:
            theirs = ast.parse("\n".join(others[lo : hi + shift]))
        except SyntaxError:
            return False
        held = [node for node, (a, b) in zip(tree.body, spans, strict=True) if a < hi and b > lo]
        ours = ast.Module(body=held, type_ignores=[])
        at_start = first >= lo  # the region holds the module's first statement
        if _code_shape(ours, at_start) != _code_shape(theirs, at_start):
            return False
    return True


def _span(node: ast.stmt) -> tuple[int, int]:
    """The lines of a top-level statement, decorators included (0-based, end excluded)."""
    first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", ()))])
    return first - 1, node.end_lineno


def _differing_lines(lines: list[str], others: list[str]) -> list[tuple[int, int]]:
    """The runs of lines of ``lines`` that differ from ``others``: line by line where the
    two have as many lines, else one run between their common first and last lines (which
    may be empty: lines only added in ``others``)."""
    if len(lines) == len(others):
        runs: list[tuple[int, int]] = []
        for index, (mine, theirs) in enumerate(zip(lines, others, strict=True)):
            if mine != theirs:
                if runs and runs[-1][1] == index:
                    runs[-1] = (runs[-1][0], index + 1)
                else:
                    runs.append((index, index + 1))
        return runs
    shortest = min(len(lines), len(others))
    lo = 0
    while lo < shortest and lines[lo] == others[lo]:
        lo += 1
    tail = 0
    while tail < shortest - lo and lines[-1 - tail] == others[-1 - tail]:
        tail += 1
    return [(lo, len(lines) - tail)]


def _widened(runs: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The runs widened to whole top-level statements (``spans``), those that then touch
    merged: regions that start and end between statements."""
    regions: list[tuple[int, int]] = []
    for lo, hi in runs:
        # the statements are disjoint: those the run touches cover every one between
        touched = [(a, b) for a, b in spans if a < max(hi, lo + 1) and b > lo]
        lo = min([lo, *(a for a, _ in touched)])
        hi = max([hi, *(b for _, b in touched)])
        while regions and lo <= regions[-1][1]:
            before = regions.pop()
            lo, hi = min(lo, before[0]), max(hi, before[1])
        regions.append((lo, hi))
    return regions


class TemplateBug(RuntimeError):
    """A template that renders code depending on display text, or no code at all."""


__all__ = ["Module", "UnsupportedSpec", "layout", "render"]
