"""The Numba backend's layout: compiled kernels over lanes.

Input: a :class:`~symbolic.ir.Kernel` and the keys every module shares
(:func:`symbolic.render.shared_keys`). Output: the template to render and its keys.

- a feedforward cell: one compiled kernel per pass over the batch's rows; one that
  reduces over the units: the elementwise work between two reductions (NumPy) as one
  compiled kernel each (:func:`segmented_context`);
- a diagonal recurrence: one kernel per pass, parallel over blocks of lanes, sequential
  over time, each step split into loops LLVM vectorizes (:func:`diagonal_context`);
- a matrix-coupled recurrence (or one that reduces over the units): time in Python, the
  elementwise work between two matrix products or reductions as one compiled kernel per
  segment (:func:`coupled_context`).

The whole-array work around the kernels (input projections, gradient sums) is NumPy code,
planned by the NumPy backend's plan.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

import sympy as sp

from symbolic import ir, naming, primitives, reductions, sizes
from symbolic.backends.base import statement
from symbolic.backends.numba.primitives import FORMS
from symbolic.backends.numba.primitives import helpers as numba_helpers
from symbolic.backends.numba.printer import code
from symbolic.backends.numpy import plan
from symbolic.backends.numpy import primitives as numpy_primitives
from symbolic.backends.numpy import printer as numpy_printer
from symbolic.ir import COUPLED, Assign, CostDerivation, Kernel, MatVec, names
from symbolic.model import RECURRENT, ROW

#: The Numba modules' matrix product (templates/numba/_threads.py.j2): ``a @ b``, its rows
#: or columns split across the cores where the call keeps BLAS on one thread.
MATMUL = "_matmul"

#: The caller's copy of the forward pass's output where the cache holds the output too
#: (see :func:`_returned`).
RETURNED = "_returned"


def cell(kernel: Kernel, keys: dict) -> tuple[str, dict]:
    """The template and the layout keys of a cell module."""
    model = kernel.cell
    if model.kind != RECURRENT and _segmented(kernel):
        return "feedforward_segments.py.j2", segmented_context(kernel, keys)
    if model.kind != RECURRENT:
        extra = input_keys(kernel) | _returned(kernel, keys)
        if extra["returned"] == RETURNED:
            extra["stores"] = [*keys["stores"], {"name": model.output, "array": RETURNED}]
        return "feedforward.py.j2", extra
    if kernel.recurrence == COUPLED:
        return "recurrent_coupled.py.j2", coupled_context(kernel, keys)
    return "recurrent.py.j2", diagonal_context(kernel, keys) | input_keys(kernel)


def cost(derivation: CostDerivation, keys: dict) -> tuple[str, dict]:
    """The template and the layout keys of a cost module: one compiled loop over the
    rows (:func:`cost_loop_context`), or whole-array NumPy code for a cost that calls a
    function LLVM cannot vectorize (erf: a C call per element; with math.log, such a call,
    the cross-entropy's loop took 27 ms in float32 at (T, B, n) = (200, 64, 256), against
    NumPy's 10.6) or the internal ``max_share`` (the adjoint of a cost's own ``max``)."""
    per_unit, gradient = derivation.per_unit, derivation.gradient
    used = set().union(
        *(f(e) for f in (primitives.used, reductions.used) for e in (per_unit, gradient))
    )
    scalar = any(not FORMS[name].vectorizes for name in used if name in FORMS)
    if scalar or reductions.MAX_SHARE in used:
        return "cost.py.j2", plan.cost_context(per_unit, gradient, derivation.cost.prediction)
    return "cost_loop.py.j2", cost_loop_context(derivation, used)


#: How the row loop reduces a row, by reduction: the helper over the row's values (None:
#: no pass, the value is the count of units) and what divides its result.
_ROW_REDUCERS = {
    reductions.SUM: ("_row_sum", None),
    reductions.MEAN: ("_row_sum", "_n"),
    reductions.MAX: ("_row_max", None),
    reductions.COUNT: (None, None),
}


def _staged(
    exprs: list[sp.Expr],
) -> tuple[list[sp.Expr], list[tuple[sp.Symbol, str, sp.Expr, int]]]:
    """``exprs`` with every reduction over the units replaced by a symbol, innermost
    first, and the reductions: ``(symbol, function, argument, level)``, the argument in
    the symbols of the reductions inside it, the level 1 + the deepest of those (0 for
    none): the reductions of one level are computed in one pass over the row."""
    found: list[tuple[sp.Symbol, str, sp.Expr, int]] = []
    level: dict[sp.Symbol, int] = {}
    counter = itertools.count()
    while True:
        inner = sorted(
            {
                node
                for e in exprs
                for node in sp.preorder_traversal(e)
                if reductions.is_reduction(node) and not reductions.has_reduction(node.args[0])
            },
            key=sp.default_sort_key,
        )
        if not inner:
            return exprs, found
        held = {}
        for call in inner:
            symbol = sp.Symbol(f"_s{next(counter)}")
            arg = call.args[0]
            level[symbol] = 1 + max((level[s] for s in arg.free_symbols if s in level), default=0)
            found.append((symbol, type(call).__name__, arg, level[symbol]))
            held[call] = symbol
        exprs = [e.xreplace(held) for e in exprs]


def _row_passes(found, symbols, rows_of) -> tuple[list[dict], dict[sp.Expr, sp.Symbol]]:
    """The passes over a row before the elementwise one: per level, a loop writing each
    reduction's argument into a row of the scratch array of its own, then each reduced
    (an argument that is an input's row, ``rows_of``, is reduced where it lies). Also
    ``{argument: symbol}``: what a later pass reads back from the scratch row instead of
    computing it again (the softmax's exp(a - max(a)), summed in one pass and used in the
    gradient)."""
    passes, kept = [], {}
    slots = {f[0]: index for index, f in enumerate(found)}
    looped_all = [
        f for f in found if _ROW_REDUCERS[f[1]][0] is not None and str(f[2]) not in rows_of
    ]
    rows = {f[0]: index for index, f in enumerate(looped_all)}
    for depth in sorted({f[3] for f in found}):
        level = [f for f in found if f[3] == depth]
        looped = [f for f in level if f in looped_all]
        args = [f[2].xreplace(kept) for f in looped]
        read = sorted({s for arg in args for s in arg.free_symbols if s in kept.values()}, key=str)
        shared, args = sp.cse(args, symbols=symbols) if looped else ([], [])
        reduce = []
        for symbol, name, arg, _ in level:
            helper, divisor = _ROW_REDUCERS[name]
            value = "_n"
            if helper is not None:
                row = rows_of.get(str(arg), f"_scratch[{rows.get(symbol)}]")
                value = f"{helper}({row}, _n)" + (f" / {divisor}" if divisor else "")
            reduce.append({"symbol": str(symbol), "slot": slots[symbol], "value": value})
        stores = []
        for f, arg in zip(looped, args, strict=True):
            stores.append({"row": rows[f[0]], "value": code(arg)})
            if not isinstance(f[2], sp.Symbol | sp.Number):
                kept[f[2]] = _kept_symbol(rows[f[0]])
        passes.append(
            {
                "body": [_read_back(k) for k in read]
                + [f"{sym} = {code(expr)}" for sym, expr in shared],
                "stores": stores,
                "reduce": reduce,
            }
        )
    return passes, kept


def _kept_symbol(row: int) -> sp.Symbol:
    """The symbol of the argument a pass wrote into scratch row ``row``."""
    return sp.Symbol(f"_k{row}")


def _read_back(symbol: sp.Symbol) -> str:
    """The line that reads a kept argument (:func:`_kept_symbol`) back from its row."""
    return f"{symbol} = _scratch[{str(symbol).removeprefix('_k')}, _u]"


def _hoisted(exprs, scalars, symbols) -> tuple[list[sp.Expr], list[tuple[sp.Symbol, sp.Expr]]]:
    """``exprs`` with their parts that depend on the row's reduced values alone (no
    element) computed once per row: ``(exprs, [(symbol, part)])``. In a product, the
    factors of the row alone are gathered first (``sum(y)*exp(...)/S``: ``sum(y)/S``)."""
    hoisted: dict[sp.Expr, sp.Symbol] = {}

    def row_only(e: sp.Expr) -> bool:
        return not e.is_Atom and e.free_symbols <= scalars

    def visit(e: sp.Expr) -> sp.Expr:
        if e.is_Atom:
            return e
        if row_only(e):
            if e not in hoisted:
                hoisted[e] = next(symbols)
            return hoisted[e]
        if isinstance(e, sp.Mul):
            outer = [f for f in e.args if f.free_symbols <= scalars]
            if len(outer) > 1 and any(not f.is_Number for f in outer):
                rest = [visit(f) for f in e.args if f not in outer]
                return sp.Mul(visit(sp.Mul(*outer)), *rest, evaluate=False)
        return e.func(*[visit(a) for a in e.args])

    out = [visit(e) for e in exprs]
    return out, [(symbol, e) for e, symbol in hoisted.items()]


def cost_loop_context(derivation: CostDerivation, used: set[str]) -> dict:
    """The loop of a cost, row by row. Where the cost reduces over a row's units (a
    softmax's sum and max), passes over the row come first: each writes the arguments of
    the reductions of one level into a scratch row (a loop LLVM vectorizes) and reduces
    them (a sum vectorized, in float64); the reduced values are then constants of the
    row. The last pass adds each element's cost to its unit's running sum (float64; a sum
    per unit keeps the adds independent, so LLVM vectorizes them) and writes its
    gradient, in one pass over the prediction and the target instead of NumPy's several.
    The shared subexpressions of a pass are computed once. ``used``: the primitives and
    functions the cost calls."""
    cost = derivation.cost
    gradient = sp.factor_terms(derivation.gradient)
    (value, grad_expr), found = _staged([derivation.per_unit, gradient])
    symbols = (sp.Symbol(f"_e{i}") for i in itertools.count())
    # the rows a reduction may read where they lie: the prediction's, the target's, a
    # unit input (a row input is one value per row, not a row of values)
    rows_of = {cost.prediction: "_pa[_r]", cost.target: "_ya[_r]"}
    rows_of |= {name: f"_in_{name}" for name, kind in cost.inputs.items() if kind != ROW}
    passes, kept = _row_passes(found, symbols, rows_of)
    scalars = {f[0] for f in found}
    (value, grad_expr), per_row = _hoisted(
        [value.xreplace(kept), grad_expr.xreplace(kept)], scalars, symbols
    )
    # what the last pass reads back from the scratch rows
    read = {s for e in (value, grad_expr) for s in e.free_symbols} & set(kept.values())
    loads_kept = [_read_back(k) for k in sorted(read, key=str)]
    shared, (value, grad_expr) = sp.cse([value, grad_expr], symbols=symbols)
    body = [f"{sym} = {code(expr)}" for sym, expr in shared]
    helpers = numba_helpers(used)
    value_code = code(value)
    grad_code = code(grad_expr)
    loads = [
        {"name": cost.prediction, "array": "_pa", "index": "_r, _u"},
        {"name": cost.target, "array": "_ya", "index": "_r, _u"},
    ]
    for name, kind in cost.inputs.items():
        index = "_r" if kind == ROW else "_u"
        loads.append({"name": name, "array": f"_in_{name}", "index": index})
    row_body = [f"{sym} = {code(expr)}" for sym, expr in per_row]
    printed = body + row_body + [value_code, grad_code]
    printed += [line for p in passes for line in p["body"] + [s["value"] for s in p["stores"]]]
    return {
        "loop_loads": loads,
        "row_body": row_body,
        "loop_body": loads_kept + body,
        "loop_value": value_code,
        "loop_gradient": grad_code,
        "row_passes": passes,
        "scratch_rows": sum(len(p["stores"]) for p in passes),
        "reduced": len(found),
        # the compiled helpers the reductions call (a count calls none)
        "row_helpers": sorted({_ROW_REDUCERS[f[1]][0] for f in found} - {None}),
        "helpers": helpers,
        # NumPy code calls the NumPy helpers: this module has none
        "numpy_helpers": [],
        "uses_math": any("math." in text for text in printed + helpers),
    }


def _returned(kernel: Kernel, keys: dict) -> dict:
    """``returned``: what the forward pass returns, the output as the caller's own array.

    Where the cache holds the output as well (the caller may edit what it gets), the
    kernel that computes the output stores it twice: in its cached buffer and in
    :data:`RETURNED`. A copy made after the kernel would read the whole output back
    from memory. Measured on 2 cores, the GRN at (T, B, D, H) = (200, 64, 64, 256), the
    two forms alternating in one process, median ratio of the step's time, the second
    store against the copy: 0.977 (float64) and 0.978 (float32); with the two modules'
    places swapped, the copy against the second store: 1.027 and 1.022.

    The output's statement must be one the kernels compute (not a matrix product, which
    NumPy writes); otherwise the forward pass returns a copy (``a_seq.copy()``).
    """
    output = kernel.cell.output
    if not keys["output_shared"]:
        return {"returned": keys["output_array"]}
    if any(st.target == output and not isinstance(st, MatVec) for st in kernel.forward):
        return {"returned": RETURNED}
    return {"returned": f"{keys['output_array']}.copy()"}


def _segments(stmts, place, writes_extra=None, widths=None) -> list[dict]:
    """Split a step into lane segments (one compiled kernel each) at matrix products.

    Args:
        stmts: The step's statements.
        place: ``name -> (array, index)``: where a symbol lives between kernels.
        writes_extra: ``name -> [(array, index)]``: further places a target is written
            (a state's next value, for the next step).
        widths: ``name -> size name`` of a cell with named sizes (None: every value has
            n_out units): a segment's values have one width, its loop's length ``n``.
    """
    writes_extra = writes_extra or {}
    segments: list[dict] = []
    current: list = []

    def close():
        if not current:
            return
        defined = {st.target for st in current}
        reads = sorted({n for st in current for n in ir.reads(st, matrices=True)} - defined)
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
                "reduce": False,
                "n": naming.size(widths[current[0].target]) if widths else None,
                "index": len(segments),
                "statements": [statement(st, code) for st in current],
                "loads": loads,
                "stores": stores,
                "arrays": arrays,
            }
        )
        current.clear()

    for st in stmts:
        if _is_reduction(st):
            close()
            segments.append(_reduction_segment(st, place, writes_extra, len(segments)))
        elif isinstance(st, MatVec):
            close()
            segments.append(
                {
                    "matvec": True,
                    "reduce": False,
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
            if widths and current and widths[current[0].target] != widths[st.target]:
                close()
            current.append(st)
    close()
    return segments


def _is_reduction(st) -> bool:
    return isinstance(st, Assign) and reductions.is_reduction(st.expr)


def _segmented(kernel: Kernel) -> bool:
    """True when a feedforward cell's step is split into segments: it reduces over the
    units, multiplies an intermediate by a matrix, or has values of several widths."""
    cell = kernel.cell
    inner = any(p.arg != cell.input for p in cell.projections)
    return _reduces(kernel) or inner or bool(cell.sizes)


def _reduces(kernel: Kernel) -> bool:
    """True when a step of the kernel reduces over the units."""
    return any(_is_reduction(st) for st in kernel.forward + kernel.backward)


def _view(array: str, index: str) -> str:
    """The whole-array view of a place for this step: ``array[_t]`` (``array[_t + 1]``)
    for a value kept for every step, the array itself for one of this step (``_b, _i``)
    or a parameter (``_i``)."""
    if index.startswith("_t"):
        return f"{array}[{index.split(', _b')[0]}]"
    return array


def _reduction_segment(st, place, writes_extra, index: int) -> dict:
    """A reduction over the units between two kernels, in NumPy over the step's lanes
    (lowering made it a statement of its own, reducing a symbol)."""
    arg = _view(*place[st.expr.args[0].name])
    out = _view(*place[st.target])
    form = numpy_primitives.REDUCTIONS[type(st.expr).__name__]
    lines = [form.out.format(i=arg, o=out)]
    lines += [f"np.copyto({_view(a, i)}, {out})" for a, i in writes_extra.get(st.target, [])]
    return {
        "matvec": False,
        "reduce": True,
        "index": index,
        "comment": st.comment,
        "lines": lines,
    }


def _input_place(kernel: Kernel, lane: str) -> dict[str, tuple[str, str]]:
    """Where a kernel reads an elementwise input: the input array ``_x`` itself."""
    if not kernel.cell.input_elementwise:
        return {}
    return {kernel.cell.input: ("_x", lane)}


def input_keys(kernel: Kernel) -> dict:
    """The array of an elementwise input the forward (``numba_forward_input``) and the
    backward (``numba_backward_input``) kernel of a feedforward cell or a diagonal
    recurrence read: ``_x``, or "" when the pass does not read it."""
    model = kernel.cell
    elementwise = model.input_elementwise
    reads_back = ir.reads_all(kernel.backward)
    reads_back |= {n for _, e in kernel.vector_grads for n in names(e)}
    return {
        "input_name": model.input,
        "numba_forward_input": "_x"
        if elementwise and model.input in ir.reads_all(kernel.forward)
        else "",
        "numba_backward_input": "_x" if elementwise and model.input in reads_back else "",
    }


def segmented_context(kernel: Kernel, context: dict) -> dict:
    """Layout of a feedforward cell that reduces over the units, for the Numba backend:
    the elementwise work between two reductions is one compiled kernel, parallel over
    lanes; every value lives in a (B, n) buffer."""
    lane = "_b, _i"
    widths = sizes.kernel_widths(kernel, naming.adjoint) if kernel.cell.sizes else None
    place: dict[str, tuple[str, str]] = {}
    for p in context["vector_params"]:
        place[p["name"]] = (p["array"], "_i")
    for st in kernel.pre + kernel.forward:
        place[st.target] = (naming.buffer(st.target), lane)
    place |= _input_place(kernel, lane)
    returned = _returned(kernel, context)
    copied = returned["returned"] == RETURNED
    extra = {kernel.cell.output: [(RETURNED, lane)]} if copied else {}
    forward = _segments(kernel.forward, place, extra, widths=widths)
    bplace: dict[str, tuple[str, str]] = {}
    for p in context["vector_params"]:
        bplace[p["name"]] = (p["array"], "_i")
    for name in kernel.cached:
        bplace[name] = (naming.buffer(name), lane)
    bplace[naming.upstream(kernel.cell.output)] = ("_dout", lane)
    bplace |= _input_place(kernel, lane)
    for st in kernel.backward:
        bplace.setdefault(st.target, (naming.buffer(st.target), lane))
    backward = _segments(kernel.backward, bplace, widths=widths)
    buffers = _buffers(kernel.forward, widths)
    if copied:
        buffers.append({"name": RETURNED, "size": "_n_out"})
    return returned | {
        "forward_segments": forward,
        "forward_buffers": buffers,
        "backward_segments": backward,
        "backward_buffers": _buffers(kernel.backward, widths),
    }


def _buffers(stmts, widths) -> list[dict]:
    """The (B, n) buffer of each statement's target: its name and its width in code."""
    found = {naming.buffer(st.target): st.target for st in stmts}
    return [
        {"name": name, "size": naming.size(widths[found[name]]) if widths else "_n_out"}
        for name in sorted(found)
    ]


#: The index prefix of a value kept for every step: ``array[_t, _b, _i]``.
STEP_LANE = "_t, _b, "


@dataclass(frozen=True)
class Lane:
    """A lane's element of ``array``: ``array[<prefix>_i]`` (prefix ``""``, ``"_b, "`` or
    ``"_t, _b, "``), which a lane block's loop reads through a 1-D view of the block's
    lanes, ``_r_array[_k]``: one view per job (no ``_t``) or per step."""

    array: str
    prefix: str

    @property
    def view(self) -> str:
        return naming.row(self.array)

    @property
    def when(self) -> str:
        return "step" if self.prefix.startswith("_t") else "job"

    def bind(self, rows: dict[str, dict[str, str]]) -> str:
        """Record the view in ``rows`` and return the element read through it."""
        rows[self.when][self.view] = f"{self.view} = {self.array}[{self.prefix}_i0:_i1]"
        return f"{self.view}[_k]"


def _phases(
    stmts, place, final_stores, sums=()
) -> tuple[list[dict], list[str], dict[str, list[str]]]:
    """Split one lane block's step into loops a compiler can vectorize.

    The statements run in the loops :func:`_call_groups` makes (over the block, ``_k``);
    a value one loop defines and a later one reads passes through a small block-local
    scratch array, in the arrays' dtype.

    Args:
        stmts: The step's statements (elementwise only).
        place: ``name -> Lane`` (``Lane("p_Bu", "")``, ``Lane("Zu_seq", "_t, _b, ")``).
        final_stores: ``(Lane, op, rhs expr)`` written at the end of the step (stores
            of cached values, states), in order.
        sums: ``(Lane, "+=", rhs expr)`` added up after the step, in a loop of their
            own (see :func:`_diagonal_backward`).

    Returns:
        The phases, the scratch arrays they use, and the row views their loops read
        (``{"job": [...], "step": [...]}``).
    """
    written = {lane.array for lane, _, _ in final_stores}
    if any(place[n].array in written for _, _, rhs in sums for n in names(rhs) if n in place):
        # a sum reads what the step's stores overwrite (a carried state): in their loop
        final_stores, sums = [*final_stores, *sums], ()
    groups = _call_groups(stmts)
    defined_in = {st.target: index for index, (_, group) in enumerate(groups) for st in group}
    last = len(groups) - 1
    ends = [()] * last + [final_stores]
    # the sums' loop: no statements, only the sums, which read a value the step stores
    # from where it is stored (not from scratch)
    stored = {rhs.name: lane for lane, op, rhs in final_stores if op == "=" and rhs.is_Symbol}
    summed = {n for _, _, rhs in sums for n in names(rhs)}
    if sums:
        groups.append((False, []))
        ends.append(sums)
    reads_by_phase: list[set[str]] = []
    for index, (_, group) in enumerate(groups):
        reads = {n for st in group for n in ir.reads(st, matrices=True)}
        for _, _, rhs in ends[index]:
            reads |= names(rhs)
        own = {st.target for st in group} | (stored.keys() if index > last else set())
        reads_by_phase.append(reads - own)
    crossing = sorted({n for reads in reads_by_phase for n in reads if n in defined_in})
    scratch = {n: naming.scratch(n) for n in crossing}
    rows: dict[str, dict[str, str]] = {"job": {}, "step": {}}
    phases = []
    for index, (call, group) in enumerate(groups):
        loads = [
            _load(n, index, scratch, defined_in, place, rows) for n in sorted(reads_by_phase[index])
        ]
        if index > last:
            loads += [
                {"name": n, "source": stored[n].bind(rows)} for n in sorted(summed & stored.keys())
            ]
        stores = [
            {"lhs": f"{scratch[st.target]}[_k]", "op": "=", "rhs": st.target}
            for st in group
            if st.target in scratch
            and any(st.target in reads_by_phase[later] for later in range(index + 1, len(groups)))
        ]
        stores += [
            {"lhs": lhs.bind(rows), "op": op, "rhs": code(rhs)} for lhs, op, rhs in ends[index]
        ]
        phases.append(
            {
                "call": call,
                "loads": loads,
                "statements": [statement(st, code) for st in group],
                "stores": stores,
            }
        )
    return phases, sorted(scratch.values()), {k: sorted(v.values()) for k, v in rows.items()}


def _load(name, index, scratch, defined_in, place, rows) -> dict:
    """How phase ``index`` reads ``name``: from scratch where an earlier phase defines
    it, else from its place."""
    if name in scratch and defined_in[name] < index:
        return {"name": name, "source": f"{scratch[name]}[_k]"}
    if name in place:
        return {"name": name, "source": place[name].bind(rows)}
    raise KeyError(f"{name} has no place in the kernel")


def _call_groups(stmts) -> list[tuple[bool, list]]:
    """``(holds a primitive call, statements)``: the loops of one lane block's step.

    A primitive call joins the loop of the statements before it (and of the calls before
    it) where those statements have no number in them; statements after a call start a
    new loop. A number would make the loop mixed-precision in float32 (Numba types
    ``1 - x`` as float64 for a float32 ``x``): a call reading such a value would run in
    float64, and LLVM vectorizes a mixed loop at float64's width. So such statements keep
    a loop of their own and store the value in the arrays' dtype before the call reads
    it. Measured on one core, the GRN's forward loop over a lane block at (B, n) =
    (64, 256), its data in the cache: 2.19-2.23 ns a lane in float64 with the calls and
    the pre-activations in one loop, against 2.48-2.50 with each call in a loop of its
    own; 0.94-0.97 against 1.07-1.09 in float32. (The whole step in one loop was slower
    in float32, 1.20-1.23: its last statement, ``h * (1 - G)``, is mixed.)
    """
    groups: list[tuple[bool, list]] = []
    for st in stmts:
        call = primitives.is_primitive_call(st.expr)
        if not groups:
            groups.append((call, [st]))
        elif call and (groups[-1][0] or not any(_has_number(s) for s in groups[-1][1])):
            groups[-1] = (True, [*groups[-1][1], st])
        elif not call and not groups[-1][0]:
            groups[-1][1].append(st)
        else:
            groups.append((call, [st]))
    return groups or [(False, [])]


def _has_number(st) -> bool:
    """Whether ``st``'s code has a number in it (a literal, not part of a name)."""
    return re.search(r"(?<![\w.])\.?\d", code(st.expr)) is not None


def _stacks(info: dict) -> dict[str, tuple[str, int, int]]:
    """``name -> (buffer, j, k)`` for the projections and the stored adjoints that are
    block j of k in one buffer (``_P`` or ``_dP``, (T, B, k * n)).

    The kernels take such a buffer as (T, B, k, n) and read block j's lanes as
    ``buffer[_t, _b, j, _i0:_i1]``: a row Numba knows to be contiguous. (A view
    ``_P[:, :, j * n:(j + 1) * n]`` has strides Numba only knows at run time, and LLVM
    then loads and stores each lane on its own.) ``info``: :func:`plan.stacking`'s."""
    found: dict[str, tuple[str, int, int]] = {}
    k = len(info["pre"])
    if info["stacked"]:
        for j, st in enumerate(info["pre"]):
            found[st.target] = ("_P", j, k)
    if info["backward_stacked"]:
        for j, adj in enumerate(info["adjoints"]):
            found[adj] = ("_dP", j, k)
    return found


def _step_lane(name: str, stacks: dict[str, tuple[str, int, int]]) -> str:
    """The index prefix of ``name``'s (T, B, n) values, as its kernel argument holds them."""
    return f"{STEP_LANE}{stacks[name][1]}, " if name in stacks else STEP_LANE


def _kernel_arguments(entries: list[dict], stacks, chunked: bool = False) -> list[dict]:
    """``entries`` (with their ``name`` or ``target`` and ``array``), each with ``passed``:
    what the kernel's caller passes (a stacked buffer as (T, B, k, n); in a chunk of
    steps, the chunk's buffer, or the chunk's steps of a (T, B, n) array)."""
    out = []
    for entry in entries:
        name = entry.get("target", entry.get("name"))
        arg = entry["array"]
        if name in stacks:
            buffer, _, k = stacks[name]
            steps = "_t1 - _t0" if chunked else "_T"
            arg = f"{buffer}.reshape({steps}, _B, {k}, _n_out)"
        elif chunked:
            arg = f"{arg}[_t0:_t1]"
        out.append(dict(entry, passed=arg))
    return out


def _chunkable(kernel: Kernel, stacks, info: dict, unread: set[str]) -> bool:
    """Whether the passes run a chunk of steps at a time: the input's projections of a
    chunk computed just before the kernel reads them, the adjoints' products and sums
    just after it writes them, so that these blocks stay in the cache. That needs every
    projection and its adjoint in the stacked buffers and read by nothing else (the
    cache, the gradients), and an input that only enters through the products."""
    cell = kernel.cell
    return (
        info["stacked"]
        and info["backward_stacked"]
        and not cell.input_elementwise
        and kernel.input_adjoint is None
        and unread == {naming.sequence(n) for n in stacks}
    )


def _diagonal_forward(kernel: Kernel, context: dict, stacks):
    """The forward kernel's loops of a diagonal recurrence, and the buffers it writes:
    ``(phases, scratch, rows, allocations)``."""
    cell = kernel.cell
    place: dict[str, Lane] = {}
    for p in context["vector_params"]:
        place[p["name"]] = Lane(p["array"], "")
    for st in kernel.pre:
        place[st.target] = Lane(naming.sequence(st.target), _step_lane(st.target, stacks))
    for state in cell.states:
        place[state] = Lane(naming.state_array(state), "_b, ")
    if cell.input_elementwise:
        place[cell.input] = Lane("_x", STEP_LANE)
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
        (Lane(naming.sequence(name), STEP_LANE), "=", sp.Symbol(name))
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
    if _returned(kernel, context)["returned"] == RETURNED:
        final.append((Lane(RETURNED, STEP_LANE), "=", sp.Symbol(cell.output)))
        alloc.append(f"{RETURNED} = np.empty((_T, _B, _n_out), _dtype)")
    final += [
        (Lane(naming.state_array(state), "_b, "), "=", sp.Symbol(target))
        for state, target in cell.states.items()
    ]
    forward, scratch, rows = _phases(kernel.forward, place, final)
    return forward, scratch, rows, alloc


def _diagonal_backward(kernel: Kernel, context: dict, stacks):
    """The backward kernel's loops of a diagonal recurrence: ``(phases, scratch, rows)``."""
    cell = kernel.cell
    bplace: dict[str, Lane] = {}
    for p in context["backward_vector_params"]:
        bplace[p["name"]] = Lane(p["array"], "")
    for entry in context["backward_loads"]:
        bplace[entry["name"]] = Lane(entry["array"], STEP_LANE)
    bplace[naming.upstream(cell.output)] = Lane("_dout", STEP_LANE)
    if cell.input_elementwise:
        bplace[cell.input] = Lane("_x", STEP_LANE)
    for state in cell.states:
        carried = naming.carried(state)
        bplace[carried] = Lane(naming.state_array(carried), "_b, ")
    bfinal = [
        (Lane(naming.sequence(name), _step_lane(name, stacks)), "=", sp.Symbol(name))
        for name in kernel.stored
    ]
    # The per-lane sums of the vector parameters' gradients, in float64, run in a loop
    # of their own after the step's loops, reading the stored adjoints from their rows:
    # in the step's last loop, beside its stores in the arrays' dtype, the conversions
    # kept LLVM from vectorizing that loop well in float32. Measured on 2 cores, the
    # GRN's backward loop alone (one process, the two forms alternating, fastest of
    # 300), float32: 0.45 ms against 1.04 at (T, B, D, H) = (1000, 8, 8, 32) on one
    # thread, 0.072 against 0.129 at (50, 16, 16, 64), 2.11 against 2.51 at
    # (200, 64, 64, 256) on two threads; float64 0.57 against 0.60, 0.075 against
    # 0.090 and 4.18 against 4.47.
    # A bias's gradient, a stored adjoint summed, is added up here too, while the adjoint
    # is in the cache, rather than summed from the stored adjoints after the kernel, which
    # read them again. Old and new GRN module alternating in one process, median ratio
    # new/old of the step, both orders: B2 (200, 64, 64, 256) float64 0.929 and 0.943,
    # float32 0.986 and 0.940; B3 (1000, 8, 8, 32) float64 1.063 and 0.953, float32 1.062
    # and 0.988 (noise of +-6% there); B1 (50, 16, 16, 64) float32 0.997.
    vector = dict(kernel.vector_grads)
    sums = [
        (Lane(g["array"], "_b, "), "+=", vector[g["param"]])
        for g in context["grads"]
        if g["kind"] == "vector"
    ]
    bfinal += [
        (
            Lane(naming.state_array(naming.carried(state)), "_b, "),
            "=",
            sp.Symbol(naming.adjoint(state)),
        )
        for state in cell.states
    ]
    return _phases(kernel.backward, bplace, bfinal, sums)


def diagonal_context(kernel: Kernel, context: dict) -> dict:
    """Layout of a diagonal recurrence for the Numba backend: one kernel per pass,
    parallel over blocks of lanes, sequential over time, each step of a block split
    into vectorizable loops (see :func:`_phases`)."""
    info = plan.stacking(kernel)
    stacks = _stacks(info)
    forward, forward_scratch, forward_rows, alloc = _diagonal_forward(kernel, context, stacks)
    backward, backward_scratch, backward_rows = _diagonal_backward(kernel, context, stacks)
    stored_code, stored = plan.stored_buffers(kernel, info)

    # every vector gradient, a bias's too, is summed per lane in the backward kernel
    accumulated = {g["param"] for g in context["grads"] if g["kind"] == "vector"}
    whole = plan.whole_place(kernel, stored)
    grads = plan.gradients(kernel, whole, "_T * _B", "(0, 1)", accumulated)
    # The kernels read a stacked block through its buffer: its view is bound only where
    # other code reads it (the cache, the gradients).
    cached = {naming.sequence(n) for n in kernel.cached}
    forward_read = {naming.sequence(st.target) for st in kernel.pre if st.target not in stacks}
    grad_reads = {n for node in grads for n in node.reads()}
    unread = {naming.sequence(n) for n in stacks} - cached - grad_reads
    chunked = _chunkable(kernel, stacks, info, unread)
    if chunked:
        grads = plan.gradients(kernel, whole, "_T * _B", "(0, 1)", accumulated, stacked_done=True)
        stored_code = [n for n in stored_code if "_dP" not in n.writes() | n.reads()]
    else:
        stored_code = [
            n for n in stored_code if not (n.writes() & unread and not n.reads() - {"_dP"})
        ]
    projections = plan.projections(
        kernel,
        "_T * _B",
        "_t1 - _t0, _B, {}" if chunked else "_T, _B, {}",
        read=forward_read | cached,
        source_rows="_t0 * _B : _t1 * _B" if chunked else None,
    )
    returned = _returned(kernel, context)
    stores = context["stores"]
    if returned["returned"] == RETURNED:
        stores = [*stores, {"name": kernel.cell.output, "array": RETURNED}]
    return returned | {
        "stores": stores,
        "pre": _kernel_arguments(context["pre"], stacks, chunked),
        "stored": _kernel_arguments(context["stored"], stacks, chunked),
        "chunked": chunked,
        "stack_width": len(info["pre"]),
        "projections": numpy_printer.lines(
            [n for n in projections if not (chunked and "_P" in n.writes())], MATMUL
        ),
        "chunk_projection": numpy_printer.lines(
            [n for n in projections if chunked and "_P" in n.writes()], MATMUL
        ),
        "forward_alloc": alloc,
        "stored_alloc": numpy_printer.lines(stored_code, MATMUL),
        "grad_lines": numpy_printer.lines(grads, MATMUL),
        "forward_phases": forward,
        "forward_scratch": forward_scratch,
        "forward_job_rows": forward_rows["job"],
        "forward_step_rows": forward_rows["step"],
        "backward_phases": backward,
        "backward_scratch": backward_scratch,
        "backward_job_rows": backward_rows["job"],
        "backward_step_rows": backward_rows["step"],
    }


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
    place |= _input_place(kernel, lane)
    extra: dict[str, list] = {}
    for s, t in cell.states.items():  # several states may take one value
        extra.setdefault(t, []).append((naming.sequence(s), "_t + 1, _b, _i"))
    returned = _returned(kernel, context)
    forward_buffers = sorted(
        {naming.sequence(st.target) for st in kernel.forward}
        - {naming.sequence(s) for s in cell.states}
    )
    if returned["returned"] == RETURNED:
        extra.setdefault(cell.output, []).append((RETURNED, lane))
        forward_buffers.append(RETURNED)
    forward = _segments(kernel.forward, place, extra)

    bplace: dict[str, tuple[str, str]] = {}
    for p in context["vector_params"]:
        bplace[p["name"]] = (p["array"], "_i")
    for name in kernel.cached:
        bplace[name] = (naming.sequence(name), lane)
    bplace[naming.upstream(cell.output)] = ("_dout", lane)
    bplace |= _input_place(kernel, lane)
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
    backward = _segments(kernel.backward, bplace, bextra)
    return returned | {
        "forward_segments": forward,
        "forward_buffers": forward_buffers,
        "backward_segments": backward,
        "work": sorted(set(work)),
    }
