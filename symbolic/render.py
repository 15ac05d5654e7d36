"""Kernel IR -> module text (pipeline stage: print and render).

Input: a :class:`~symbolic.lower.Kernel` (or a cost) and a backend. Output: the text of
one generated module. Every expression is printed here by the backend's printer; the
Jinja templates in ``templates/`` receive strings only and hold layout, not logic.
"""

from __future__ import annotations

import ast
import importlib.resources
import re
from dataclasses import dataclass
from pathlib import Path

import jinja2
import sympy as sp

from symbolic import __version__, naming, numpy_plan, passes, primitives, printing
from symbolic.derive import Assign, MatVec, derive, derive_cost
from symbolic.lower import COUPLED, Kernel, lower
from symbolic.model import RECURRENT, Cell, Cost

BACKENDS = ("numpy", "numba")


def templates_dir() -> Path:
    """Where the templates are: the repository's ``templates/`` or the installed copy."""
    repo = Path(__file__).resolve().parent.parent / "templates"
    if repo.is_dir():
        return repo
    return Path(str(importlib.resources.files("symbolic") / "templates"))


def environment() -> jinja2.Environment:
    """The Jinja environment: strict (a missing key is an error), no stray whitespace."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
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


class UnsupportedSpec(ValueError):
    """A valid spec that a backend cannot generate code for yet (never wrong code)."""


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


def _stmt(stmt, backend: str, names: dict[str, str] | None = None) -> dict:
    if isinstance(stmt, MatVec):
        return {
            "matvec": True,
            "target": stmt.target,
            "matrix": stmt.matrix,
            "arg": stmt.arg,
            "transpose": stmt.transpose,
            "comment": stmt.comment,
            "code": "",
        }
    return {
        "matvec": False,
        "target": stmt.target,
        "code": printing.code(stmt.expr, backend, names),
        "comment": stmt.comment,
    }


def _names(stmt) -> set[str]:
    if isinstance(stmt, MatVec):
        return {stmt.arg, stmt.matrix}
    return {s.name for s in stmt.expr.free_symbols}


def cell_context(kernel: Kernel, backend: str) -> dict:
    """The template keys of a cell module: names and printed code, nothing else.

    Each vector symbol has a per-lane scalar (or, in NumPy, per-step array) named as in
    the spec, and a buffer holding it for every lane (and step): ``array``.
    """
    cell: Cell = kernel.cell
    recurrent = cell.kind == RECURRENT
    names = set(kernel.cached) | set(kernel.stored) | {cell.output}
    names |= {s.target for s in kernel.pre}
    if recurrent:
        arrays = {name: naming.sequence(name) for name in names}
    elif backend == "numba":
        arrays = {name: naming.buffer(name) for name in names}
    else:  # NumPy feedforward code works on whole arrays named like the symbols
        arrays = {name: name for name in names}
    arrays[cell.input] = "_x"

    def entry(name: str) -> dict:
        return {"name": name, "array": arrays[name]}

    shapes = {"in": "n_in", "out": "n_out"}
    params = []
    for name, kind in cell.params.items():
        if kind == "matrix":
            rows, cols = cell.matrix_shape(name)
            shape = f"({shapes[rows]}, {shapes[cols]})"
            fan_in = shapes[cols]
        else:
            shape, fan_in = "(n_out,)", "n_out"
        params.append(
            {
                "name": name,
                "kind": kind,
                "shape": shape,
                "fan_in": fan_in,
                "array": naming.param_array(name),
            }
        )
    vector = dict(kernel.vector_grads)
    matrix = dict(kernel.matrix_grads)
    grads = []
    for name, kind in cell.params.items():
        if kind == "vector":
            grads.append(
                {
                    "param": name,
                    "kind": kind,
                    "code": printing.code(
                        vector[name], backend if backend == "numpy" else "numpy", arrays
                    ),
                    # the parameter does not reach the cost (``B - B``): zeros
                    "zero": vector[name] == 0,
                    "local": printing.code(vector[name], backend),
                    "array": naming.grad_array(name),
                    # a gradient that is a stored adjoint summed needs no accumulator
                    "stored": arrays[vector[name].name]
                    if isinstance(vector[name], sp.Symbol) and vector[name].name in kernel.stored
                    else "",
                    "terms": [],
                }
            )
        else:
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
    read_back = {n for s in kernel.backward for n in _names(s)}
    grad_reads = {s.name for _, e in kernel.vector_grads for s in e.free_symbols}
    # Numba accumulates the vector gradients inside the step, NumPy after the loop.
    step_reads = set(read_back)
    if backend == "numba":
        step_reads |= grad_reads
    read_back |= {m for _, m in kernel.input_grads} | grad_reads
    vector_params = [p for p in params if p["kind"] == "vector"]
    forward = [_stmt(s, backend) for s in kernel.forward]
    backward = [_stmt(s, backend) for s in kernel.backward]
    printed = [s["code"] for s in forward + backward] + [g["local"] for g in grads]
    used = set()
    for stmt in kernel.forward + kernel.backward:
        if isinstance(stmt, Assign):
            used |= primitives.used(stmt.expr)
    for _, expr in kernel.vector_grads:
        used |= primitives.used(expr)
    helpers = primitives.numba_helpers(used) if backend == "numba" else []
    ops = passes.count_ops(kernel.forward + kernel.backward)
    return {
        # the thread policy's inputs: products of the input and in the step, and the
        # elementwise work per lane and step (a transcendental call counted as 10 flops)
        "input_products": len(kernel.pre),
        "state_products": sum(isinstance(s, MatVec) for s in kernel.forward),
        "lane_flops": max(1, ops["arithmetic"] + 10 * ops["calls"]),
        # a diagonal recurrence runs every step in one parallel loop
        "one_loop": recurrent and kernel.recurrence != COUPLED,
        "helpers": helpers,
        # the NumPy code of either backend (whole-array statements) calls these
        "numpy_helpers": primitives.numpy_helpers(used),
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
        "backward_params": [p["name"] for p in params if p["name"] in read_back],
        "vector_params": vector_params,
        "backward_vector_params": [p for p in vector_params if p["name"] in read_back],
        "state_names": list(cell.states),
        "states": [
            {
                "name": state,
                "target": target,
                "adjoint": naming.adjoint(state),
                "carried": naming.carried(state),
                "array": naming.state_array(state),
                "carried_array": naming.state_array(naming.carried(state)),
            }
            for state, target in cell.states.items()
        ],
        "equations": [
            {"name": eq.name, "source": eq.source} for eq in cell.equations if not eq.lifted
        ],
        "pre": [dict(_stmt(s, backend), array=arrays[s.target]) for s in kernel.pre],
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
        "scan": scan_context(kernel) if backend == "numpy" else None,
    }


def scan_context(kernel: Kernel) -> dict | None:
    """The parallel-scan functions of an affine recurrence: every statement runs on
    whole (T, B, n) arrays named like its symbols."""
    scan = kernel.scan
    if scan is None:
        return None
    cell = kernel.cell
    bare = {cell.input: "_x"}
    grads = []
    vector = dict(kernel.vector_grads)
    matrix = dict(kernel.matrix_grads)
    for name, kind in cell.params.items():
        if kind == "vector":
            grads.append(
                {
                    "param": name,
                    "kind": kind,
                    "code": printing.code(vector[name], "numpy", bare),
                    "zero": vector[name] == 0,
                    "terms": [],
                }
            )
        else:
            terms = [
                {
                    "adjoint": bare.get(adj, adj),
                    "arg": bare.get(arg, arg),
                    "arg_size": "_n_in" if arg == cell.input else "_n_out",
                }
                for adj, arg in matrix[name]
            ]
            grads.append({"param": name, "kind": kind, "code": "", "terms": terms})
    return {
        "state": scan.state,
        "state_adjoint": naming.adjoint(scan.state),
        "seed": naming.adjoint(cell.output),
        "coeff": printing.code(scan.coeff, "numpy"),
        "offset": printing.code(scan.offset, "numpy"),
        "coeff_source": sp.sstr(scan.coeff),
        "offset_source": sp.sstr(scan.offset),
        "before": [_whole(s, cell, "(_T, _B, _n_out)") for s in scan.before],
        "after": [_whole(s, cell, "(_T, _B, _n_out)") for s in scan.after],
        "backward": [_whole(s, cell, "_dout.shape") for s in scan.backward],
        "grads": grads,
        "input_grads": [{"adjoint": adj, "matrix": m} for adj, m in kernel.input_grads],
    }


def _whole(stmt, cell: Cell, shape: str) -> dict:
    """A statement on whole (T, B, n) arrays: a value with no lane axis (a constant, a
    parameter) is broadcast to the shape."""
    out = _stmt(stmt, "numpy")
    if not {s.name for s in stmt.expr.free_symbols} - set(cell.params):
        out["code"] = f"np.full({shape}, {out['code']}, _dtype)"
    return out


def _segments(stmts, backend, place, writes_extra=None) -> list[dict]:
    """Split a step into lane segments (one compiled kernel each) at matrix products.

    Args:
        stmts: The step's statements.
        backend: The printer.
        place: ``name -> (array, index)``: where a symbol lives between kernels.
        writes_extra: ``name -> [(array, index)]``: further places a target is written
            (a state's next value, for the next step).
    """
    writes_extra = writes_extra or {}
    segments: list[dict] = []
    current: list = []

    def close():
        if not current:
            return
        defined = {st.target for st in current}
        reads = sorted({n for st in current for n in _names(st)} - defined)
        loads = [
            {"name": n, "array": place[n][0], "index": place[n][1]} for n in reads if n in place
        ]
        stores = []
        for st in current:
            if st.target in place:
                stores.append(
                    {"name": st.target, "array": place[st.target][0], "index": place[st.target][1]}
                )
            for array, index in writes_extra.get(st.target, []):
                stores.append({"name": st.target, "array": array, "index": index})
        arrays = sorted({x["array"] for x in loads + stores})
        segments.append(
            {
                "matvec": False,
                "index": len(segments),
                "statements": [_stmt(st, backend) for st in current],
                "loads": loads,
                "stores": stores,
                "arrays": arrays,
            }
        )
        current.clear()

    for st in stmts:
        if isinstance(st, MatVec):
            close()
            segments.append(
                {
                    "matvec": True,
                    "index": len(segments),
                    "comment": st.comment,
                    "matrix": st.matrix,
                    "transpose": st.transpose,
                    "arg": place[st.arg][0] + ("[_t]" if place[st.arg][1].startswith("_t") else ""),
                    "out": place[st.target][0]
                    + ("[_t]" if place[st.target][1].startswith("_t") else ""),
                }
            )
        else:
            current.append(st)
    close()
    return segments


def _phases(stmts, backend, place, final_stores) -> tuple[list[dict], list[str]]:
    """Split one lane block's step into loops a compiler can vectorize.

    Each primitive call gets a loop of its own over the block (``_k``), reading and
    writing small block-local scratch arrays: with only those in it, the loop has no
    possible aliasing and LLVM vectorizes the call's arithmetic. The other statements
    are grouped between calls.

    Args:
        stmts: The step's statements (elementwise only).
        backend: The printer.
        place: ``name -> indexed global`` (``"p_Bu[_i]"``, ``"Zu_seq[_t, _b, _i]"``).
        final_stores: ``(lhs, op, rhs expr)`` written at the end of the step (stores
            of cached values, states, gradient sums), in order.

    Returns:
        The phases, and the scratch arrays they use.
    """
    groups: list[tuple[bool, list]] = []
    for st in stmts:
        call = primitives.is_primitive_call(st.expr)
        if call or not groups or groups[-1][0]:
            groups.append((call, [st]))
        else:
            groups[-1][1].append(st)
    if not groups:
        groups.append((False, []))
    defined_in: dict[str, int] = {}
    for index, (_, group) in enumerate(groups):
        for st in group:
            defined_in[st.target] = index
    last = len(groups) - 1
    reads_by_phase: list[set[str]] = []
    for index, (_, group) in enumerate(groups):
        reads = {n for st in group for n in _names(st)} - {st.target for st in group}
        if index == last:
            for _, _, rhs in final_stores:
                reads |= {s.name for s in rhs.free_symbols} - {st.target for st in group}
        reads_by_phase.append(reads)
    crossing = sorted({n for reads in reads_by_phase for n in reads if n in defined_in})
    scratch = {n: naming.scratch(n) for n in crossing}
    phases = []
    for index, (call, group) in enumerate(groups):
        loads = []
        for name in sorted(reads_by_phase[index]):
            if name in scratch and defined_in[name] < index:
                loads.append({"name": name, "source": f"{scratch[name]}[_k]"})
            elif name in place:
                loads.append({"name": name, "source": place[name]})
            else:
                raise KeyError(f"{name} has no place in the kernel")
        stores = [
            {"lhs": f"{scratch[st.target]}[_k]", "op": "=", "rhs": st.target}
            for st in group
            if st.target in scratch
            and any(st.target in reads_by_phase[later] for later in range(index + 1, len(groups)))
        ]
        if index == last:
            stores += [
                {"lhs": lhs, "op": op, "rhs": printing.code(rhs, backend)}
                for lhs, op, rhs in final_stores
            ]
        phases.append(
            {
                "call": call,
                "lane": any("_i]" in x["source"] for x in loads)
                or any("_i]" in x["lhs"] for x in stores),
                "loads": loads,
                "statements": [_stmt(st, backend) for st in group],
                "stores": stores,
            }
        )
    return phases, sorted(scratch.values())


def diagonal_context(kernel: Kernel, context: dict) -> dict:
    """Layout of a diagonal recurrence for the Numba backend: one kernel per pass,
    parallel over blocks of lanes, sequential over time, each step of a block split
    into vectorizable loops (see :func:`_phases`)."""
    cell = kernel.cell
    lane = "[_t, _b, _i]"
    place: dict[str, str] = {}
    for p in context["vector_params"]:
        place[p["name"]] = f"{p['array']}[_i]"
    for st in kernel.pre:
        place[st.target] = naming.sequence(st.target) + lane
    for state in cell.states:
        place[state] = f"{naming.state_array(state)}[_b, _i]"
    # A state that is the previous step's output (h = a_{t-1}) is stored once: the
    # output's buffer has one more row in front, state0, and h_seq is a view of it.
    # (one state at most: others with the same next value keep buffers of their own)
    shifted = {
        state
        for state, target in cell.states.items()
        if target == cell.output and state in kernel.cached
    }
    shifted = set(sorted(shifted)[:1])
    # the projections of the input are computed before the kernel, in arrays of their own
    values = sorted((set(kernel.cached) | {cell.output}) - {st.target for st in kernel.pre})
    final = [
        (f"{naming.sequence(name)}{lane}", "=", sp.Symbol(name))
        for name in values
        if name not in shifted
    ]
    alloc = []
    for name in values:
        if name in shifted:
            continue
        if name == cell.output and shifted:
            (state,) = sorted(shifted)
            alloc += [
                f"_{state}_all = np.empty((_T + 1, _B, _n_out), _dtype)",
                f'_{state}_all[0] = _state0["{state}"]',
                f"{naming.sequence(name)} = _{state}_all[1:]",
                f"{naming.sequence(state)} = _{state}_all[:-1]",
            ]
        else:
            alloc.append(f"{naming.sequence(name)} = np.empty((_T, _B, _n_out), _dtype)")
    final += [
        (f"{naming.state_array(state)}[_b, _i]", "=", sp.Symbol(target))
        for state, target in cell.states.items()
    ]
    forward, forward_scratch = _phases(kernel.forward, "numba", place, final)

    bplace: dict[str, str] = {}
    for p in context["backward_vector_params"]:
        bplace[p["name"]] = f"{p['array']}[_i]"
    for entry in context["backward_loads"]:
        bplace[entry["name"]] = f"{entry['array']}{lane}"
    bplace[naming.upstream(cell.output)] = "_dout" + lane
    for state in cell.states:
        carried = naming.carried(state)
        bplace[carried] = f"{naming.state_array(carried)}[_b, _i]"
    bfinal = [(f"{naming.sequence(name)}{lane}", "=", sp.Symbol(name)) for name in kernel.stored]
    vector = dict(kernel.vector_grads)
    for g in context["grads"]:
        if g["kind"] == "vector" and not g["stored"]:
            bfinal.append((f"{g['array']}[_b, _i]", "+=", vector[g["param"]]))
    bfinal += [
        (
            f"{naming.state_array(naming.carried(state))}[_b, _i]",
            "=",
            sp.Symbol(naming.adjoint(state)),
        )
        for state in cell.states
    ]
    backward, backward_scratch = _phases(kernel.backward, "numba", bplace, bfinal)
    info = numpy_plan.stacking(kernel)
    stored_lines, stored = numpy_plan.stored_buffers(kernel, info)

    accumulated = {
        g["param"] for g in context["grads"] if g["kind"] == "vector" and not g["stored"]
    }
    whole = numpy_plan.whole_place(kernel, stored)
    grad_lines = numpy_plan.gradient_lines(kernel, whole, "_T * _B", "(0, 1)", accumulated)
    forward, forward_rows = _row_views(forward)
    backward, backward_rows = _row_views(backward)
    return {
        "projections": numpy_plan.projection_lines(kernel, "_T * _B", "_T, _B, {}"),
        "forward_alloc": alloc,
        "stored_alloc": stored_lines,
        "grad_lines": grad_lines,
        "forward_phases": forward,
        "forward_scratch": forward_scratch,
        "forward_job_rows": forward_rows["job"],
        "forward_step_rows": forward_rows["step"],
        "backward_phases": backward,
        "backward_scratch": backward_scratch,
        "backward_job_rows": backward_rows["job"],
        "backward_step_rows": backward_rows["step"],
    }


_LANE_INDEX = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*)\[((?:_t, )?(?:_b, )?)_i\]")


def _row_views(phases: list[dict]) -> tuple[list[dict], dict[str, list[str]]]:
    """Every ``array[_t, _b, _i]`` (or ``[_b, _i]``, ``[_i]``) of a lane block's loops
    read through a 1-D view of the block's lanes, ``_r_array[_k]``: one view per job
    (arrays without ``_t``) or per step, and loops whose only index is ``_k``, which
    LLVM vectorizes."""
    rows: dict[str, dict[str, str]] = {"job": {}, "step": {}}

    def view(match: re.Match) -> str:
        array, prefix = match.group(1), match.group(2)
        name = naming.row(array)
        where = "step" if prefix.startswith("_t") else "job"
        rows[where][name] = f"{name} = {array}[{prefix}_i0:_i1]"
        return f"{name}[_k]"

    out = []
    for ph in phases:
        loads = [dict(x, source=_LANE_INDEX.sub(view, x["source"])) for x in ph["loads"]]
        stores = [dict(x, lhs=_LANE_INDEX.sub(view, x["lhs"])) for x in ph["stores"]]
        out.append(dict(ph, loads=loads, stores=stores, lane=False))
    return out, {k: sorted(v.values()) for k, v in rows.items()}


def coupled_context(kernel: Kernel, context: dict) -> dict:
    """Layout of a matrix-coupled recurrence for the Numba backend.

    Time runs in Python; inside each step the elementwise work between two matrix
    products is one compiled kernel, parallel over lanes. Forward values live in
    (T, B, n) buffers (states in (T + 1, B, n): the value at the start of each step),
    adjoints in (B, n) work buffers unless the gradients read them after the loop.
    """
    cell = kernel.cell
    lane = "_t, _b, _i"
    place: dict[str, tuple[str, str]] = {}
    for p in context["vector_params"]:
        place[p["name"]] = (p["array"], "_i")
    for st in kernel.pre + kernel.forward:
        place[st.target] = (naming.sequence(st.target), lane)
    for state in cell.states:
        place[state] = (naming.sequence(state), lane)
    extra: dict[str, list] = {}
    for s, t in cell.states.items():  # several states may take one value
        extra.setdefault(t, []).append((naming.sequence(s), "_t + 1, _b, _i"))
    forward_buffers = sorted(
        {naming.sequence(st.target) for st in kernel.forward}
        - {naming.sequence(s) for s in cell.states}
    )
    forward = _segments(kernel.forward, "numba", place, extra)

    bplace: dict[str, tuple[str, str]] = {}
    for p in context["vector_params"]:
        bplace[p["name"]] = (p["array"], "_i")
    for name in kernel.cached:
        bplace[name] = (naming.sequence(name), lane)
    bplace[naming.upstream(cell.output)] = ("_dout", lane)
    work = []
    for state in cell.states:
        carried = naming.carried(state)
        bplace[carried] = (naming.state_array(carried), "_b, _i")
        bplace[naming.adjoint(state)] = (naming.work(naming.adjoint(state)), "_b, _i")
    for st in kernel.backward:
        if st.target in bplace:
            continue
        if st.target in kernel.stored:
            bplace[st.target] = (naming.sequence(st.target), lane)
        else:
            bplace[st.target] = (naming.work(st.target), "_b, _i")
            work.append(naming.work(st.target))
    # a state's adjoint that a gradient also reads after the loop is stored as well
    bextra = {
        naming.adjoint(state): [(naming.sequence(naming.adjoint(state)), lane)]
        for state in cell.states
        if naming.adjoint(state) in kernel.stored
    }
    backward = _segments(kernel.backward, "numba", bplace, bextra)
    return {
        "forward_segments": forward,
        "forward_buffers": forward_buffers,
        "backward_segments": backward,
        "work": sorted(set(work)),
    }


def cost_context(cost: Cost, backend: str) -> dict:
    """The template keys of a cost module."""
    derived = derive_cost(cost)
    used = primitives.used(derived.per_unit) | primitives.used(derived.gradient)
    return {
        "numpy_helpers": primitives.numpy_helpers(used),
        "name": cost.name,
        "title": cost.title,
        "spec_file": spec_label(cost.path),
        "spec_sha256": cost.sha256,
        "version": __version__,
        "prediction": cost.prediction,
        "target": cost.target,
        "per_unit_source": cost.source,
        "gradient_source": sp.sstr(derived.gradient),
    } | numpy_plan.cost_context(derived.per_unit, derived.gradient, cost.prediction)


def render(model: Cell | Cost, backend: str) -> Module:
    """The generated module of ``model`` for ``backend``."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r} (expected one of {', '.join(BACKENDS)})")
    env = environment()
    if isinstance(model, Cost):
        context = cost_context(model, backend)
        template = env.get_template(f"{backend}_cost.py.j2")
    else:
        kernel = lower(derive(model))
        if backend == "numba" and model.kind != RECURRENT:
            inner = [p for p in model.projections if p.arg != model.input]
            if inner:
                raise UnsupportedSpec(
                    f"{model.path}:{inner[0].line}: '{inner[0].matrix}@{inner[0].arg}': the "
                    "numba backend does not compile a matrix product of an intermediate in a "
                    "feedforward cell yet (only W@input); generate this spec with "
                    "--backend numpy"
                )
        context = cell_context(kernel, backend)
        layout = f"{backend}_{model.kind}"
        if backend == "numba" and kernel.recurrence == COUPLED:
            context |= coupled_context(kernel, context)
            layout += "_coupled"
        elif backend == "numba" and model.kind == RECURRENT:
            context |= diagonal_context(kernel, context)
        elif backend == "numpy" and model.kind != RECURRENT:
            context |= numpy_plan.feedforward_context(kernel)
        elif model.kind == RECURRENT:
            context |= numpy_plan.recurrent_context(kernel)
            context["block_bytes"] = numpy_plan.BLOCK_BYTES
        template = env.get_template(f"{layout}.py.j2")
    text = template.render(**context)
    _check_code_ignores_display_text(template, context, text, model)
    return Module(f"{model.name}_{backend}.py", text)


#: Context keys holding display text (they reach docstrings and comments only).
DISPLAY_KEYS = ("title", "spec_file", "per_unit_source", "gradient_source")


def _code_shape(text: str) -> str:
    """The module's code as a tree, its docstrings removed (comments are not in it)."""
    tree = ast.parse(text)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            body[0] = ast.Pass()
    return ast.dump(tree, include_attributes=False)


def _check_code_ignores_display_text(template, context: dict, text: str, model) -> None:
    """A structural guard: the module rendered with every display text replaced by a
    placeholder must be the same code, docstrings and comments aside. If a title or an
    equation as written could change a single statement, that is a template bug."""
    plain = dict(context)
    for key in DISPLAY_KEYS:
        if key in plain:
            plain[key] = "TEXT"
    if "equations" in plain:
        plain["equations"] = [dict(eq, source="TEXT") for eq in plain["equations"]]
    try:
        same = _code_shape(text) == _code_shape(template.render(**plain))
    except SyntaxError as exc:
        raise TemplateBug(f"{model.path}: the rendered module is not Python: {exc}") from None
    if not same:
        raise TemplateBug(
            f"{model.path}: the generated code depends on display text (a title, a file "
            "name or an equation as written): a template bug"
        )


class TemplateBug(RuntimeError):
    """A template that renders code depending on display text, or no code at all."""


__all__ = ["BACKENDS", "Module", "UnsupportedSpec", "render"]
