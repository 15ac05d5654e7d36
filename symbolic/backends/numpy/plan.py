"""Kernel IR -> the NumPy modules' statements (as nodes), ufunc calls into buffers.

The NumPy backend's plan (pipeline stage 4, ``plan``). What it
decides, for a cell's :class:`~symbolic.ir.Kernel`:

- **One product for every input projection.** The matrices that multiply the input are
  stacked, so the projections of every step are one matrix product (and their gradients
  and the input's gradient one product each after the loop).
- **Nothing computed twice, nothing allocated in the loop.** Every value lives in a
  buffer allocated once: forward values the backward reads are written straight into
  their (T, B, n) arrays, the states into one (T + 1, B, n) array whose rows are also the
  output; other values into (B, n) work buffers. Each statement is a few ufunc calls
  with ``out=`` (:mod:`symbolic.backends.numpy.ufuncs`).
- **What does not change stays out of the loop.** Products of parameters are computed
  once, and the state-free part of each step (``WXu@x + Bu``) for every step at once.
- **The backward recurrence as a scan.** Reverse mode is linear in the adjoints: for a
  diagonal recurrence, every adjoint of a step is a coefficient (a function of forward
  values only) times the output's adjoint. The coefficients are computed for blocks of
  steps at once; the sequential part is two calls a step (``da = da_in + dh_next``,
  ``dh_next = _dh_per_da * da``).

The code is built as nodes (:mod:`.nodes`: allocations, ufunc calls, views, bindings,
gradient sums), each knowing the names it reads and writes, so only the values the code
reads are bound; the backend's printer (:mod:`.printer`) turns them into the lines the
templates receive. Every name that reaches the code is a checked identifier or one made
here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

from symbolic import ir, naming, passes, recurrence, reductions, sizes
from symbolic.backends.numpy import printer, ufuncs
from symbolic.backends.numpy.nodes import (
    Alloc,
    Apply,
    Call,
    Comment,
    Copy,
    Expr,
    Fill,
    Grouped,
    If,
    Index,
    Let,
    MultiLet,
    Name,
    Node,
    Op,
    Paren,
    Primitive,
    Raw,
    Reduce,
    Str,
    Sym,
    Tuple,
    at,
    mentioned,
    method,
    transposed,
)
from symbolic.ir import AdjointScan, Assign, Kernel, MatVec

# Bytes of one (block of steps, B, n) buffer of the backward: a block's coefficient
# arrays (about eight) stay in the L2 cache while the scan reads them, and each buffer
# is under glibc's 128 KiB threshold, so it comes from the heap, not a fresh mapping.
# Measured (GRN backward, ms, 16/32/64/128 KiB): B1 float64 1.13/1.00/0.88/1.09,
# float32 0.68/0.58/0.64/0.89; B3 float64 5.8/4.9/4.4/4.2; B2 equal within 4%.
BLOCK_BYTES = 1 << 16


@dataclass
class Code:
    """Statements (:mod:`.nodes`) with one comment before each group."""

    nodes: list[Node] = field(default_factory=list)

    def comment(self, text: str) -> None:
        self.nodes.extend(Comment(line) for line in text.split("\n"))

    def add(self, lines) -> None:
        self.nodes.extend(lines)


def let(target: str, value: Expr) -> Let:
    """``target = value``."""
    return Let(Name(target), value)


def grad(param: str, value: Expr, op: str = "=") -> Let:
    """``grads["param"] = value`` (or ``+=``)."""
    return Let(Index(Name("grads"), Str(param)), value, op)


#: The shape of a work buffer of one step (every lane).
LANES = "(_B, _n_out)"


def alloc(target: str, shape: str = "(_T, _B, _n_out)") -> Alloc:
    """A new buffer, by default one value for every step and lane."""
    return Alloc(target, shape)


def constant(name: str, expr: sp.Expr) -> Let:
    """A hoisted constant: ``_k0 = WTu/2``."""
    return let(name, Sym(expr))


def _uses(expr: sp.Expr, name: str) -> int:
    symbol = sp.Symbol(name)
    return sum(1 for s in sp.preorder_traversal(expr) if s == symbol)


def _emit(expr, out, place, scratch, alias=None) -> tuple[list[Node], int]:
    emitter = ufuncs.Emitter(place, scratch)
    lines = emitter.into(ufuncs.cheapest(expr, once=alias), out, alias)
    return lines, emitter.scratch_used


def stacking(kernel: Kernel) -> dict:
    """The input projections: one product for all of them (stacked matrices)."""
    cell = kernel.cell
    pre = kernel.pre
    by_matrix = dict((m, adj) for adj, m in kernel.input_grads)
    adjoints = [by_matrix.get(s.matrix) for s in pre]
    stacked = len(pre) > 1
    backward_stacked = (
        stacked
        and None not in adjoints
        and len(set(adjoints)) == len(adjoints)
        and all(a in kernel.stored for a in adjoints)
        and len(kernel.input_grads) == len(pre)
    )
    return {
        "pre": pre,
        "adjoints": adjoints,
        "stacked": stacked,
        "backward_stacked": backward_stacked,
        "input": cell.input,
    }


def _slice(j: int, k: int) -> str:
    lo = "" if j == 0 else ("_n_out" if j == 1 else f"{j} * _n_out")
    hi = "" if j == k - 1 else ("_n_out" if j == 0 else f"{j + 1} * _n_out")
    return f"{lo}:{hi}"


def _affine_in(expr: sp.Expr, name: str, params: set[str]):
    """``(c, v)`` when ``expr`` is ``c*name + v`` with c and v made of parameters and
    numbers only, else None."""
    if reductions.has_reduction(expr):
        return None
    symbol = sp.Symbol(name)
    c = sp.diff(expr, symbol)
    v = expr.xreplace({symbol: sp.S.Zero})
    if not (ir.names(c) <= params and ir.names(v) <= params):
        return None
    if sp.expand(expr - c * symbol - v) != 0:
        return None
    return c, v


def projections(
    kernel: Kernel,
    rows: str,
    shape: str,
    folds=None,
    read: set[str] | None = None,
    source_rows: str | None = None,
) -> list[Node]:
    """The forward products of the input (``_x2`` is (rows, n_in)), reshaped by
    ``shape`` (a format string taking the width).

    ``folds``: projection -> ``(c, v)``: that block of the product computes c*P + v
    (its matrix's rows scaled by c, and v as a bias column against a column of ones).
    ``read``: the names the code reads, when known: a view of a block nobody reads is
    not bound.
    ``source_rows``: the product of these rows of the input only (a chunk of steps).
    """
    pre = kernel.pre
    if not pre:
        return []
    k = len(pre)
    code: list[Node] = [Comment(s.comment) for s in pre]
    weights, biases = _weights(pre, folds or {})
    if k > 1:
        code.append(Comment("(the matrices stacked: one product for all of them)"))
        code.append(let("_W_in", Apply("np.concatenate", (Tuple(weights),))))
    else:
        code.append(let("_W_in", weights[0]))
    source = "_x2"
    if any(v != 0 for v in biases):
        code += _bias_column(biases, rows)
        source = "_x1"
    width = f"{k} * _n_out" if k > 1 else "_n_out"
    operand = Name(source) if source_rows is None else at(source, source_rows)
    product = Paren(Op("@", (operand, transposed("_W_in"))))
    code.append(let("_P", method(product, "reshape", Raw(shape.format(width)))))
    for j, s in enumerate(pre):
        if read is not None and naming.sequence(s.target) not in read:
            continue
        index = ", ".join([":"] * (shape.count(",")) + [_slice(j, k)]) if k > 1 else "..."
        code.append(let(naming.sequence(s.target), at("_P", index)))
    return code


def _weights(pre, folds) -> tuple[list[Expr], list[sp.Expr]]:
    """The stacked matrices (rows scaled by a fold's c) and the bias of each block."""
    weights: list[Expr] = []
    biases = []
    for s in pre:
        c, v = folds.get(s.target, (sp.S.One, sp.S.Zero))
        if c == 1:
            weights.append(Name(s.matrix))
        elif c.is_number:
            weights.append(Op("*", (Sym(c), Name(s.matrix))))
        else:
            weights.append(Op("*", (at(Paren(Sym(c)), ":, None"), Name(s.matrix))))
        biases.append(v)
    return weights, biases


def _bias_column(biases: list[sp.Expr], rows: str) -> list[Node]:
    """The constant terms as a bias column of ``_W_in``, against a column of ones."""
    parts = [
        Apply("np.broadcast_to", (Sym(v), Raw("(_n_out,)")))
        if ir.names(v)
        else Apply("np.full", (Raw("_n_out"), Raw(repr(float(v))), Raw("_dtype")))
        for v in biases
    ]
    bias = parts[0] if len(parts) == 1 else Apply("np.concatenate", (Tuple(tuple(parts)),))
    stacked = Tuple((Name("_W_in"), at(bias, ":, None")))
    return [
        Comment("(with the constant terms as a bias column, against a column of ones)"),
        let("_W_in", Apply("np.concatenate", (stacked,), (("axis", Raw("1")),))),
        alloc("_x1", f"({rows}, _n_in + 1)"),
        Let(at("_x1", ":, :_n_in"), Name("_x2")),
        Let(at("_x1", ":, _n_in"), Raw("1.0")),
    ]


def gradients(
    kernel: Kernel,
    place,
    rows: str,
    sum_axes: str,
    vector_done: set[str],
    stacked_done: bool = False,
):
    """Matrix gradients, vector gradients not accumulated already, and dx.

    ``stacked_done``: the stacked adjoints' products (``_dW_in``, ``_dx``) were
    accumulated already, a chunk of steps at a time: only read here; a vector
    gradient that is a stacked adjoint's sum must be in ``vector_done``."""
    cell = kernel.cell
    info = stacking(kernel)
    code: list[Node] = []
    matrix = dict(kernel.matrix_grads)
    vector = dict(kernel.vector_grads)
    from_stack: dict[str, Expr] = {}
    summed: dict[str, Expr] = {}
    if info["backward_stacked"]:
        stacked = _stacked_gradients(kernel, info, rows, vector_done, from_stack, summed)
        code += [] if stacked_done else stacked
    for name, kind in cell.params.items():
        if kind == "vector":
            if name in vector_done:
                continue
            value = summed[name] if name in summed else _vector_sum(vector[name], place, sum_axes)
            code.append(grad(name, value))
            continue
        terms = []
        for adj, arg in matrix[name]:
            if arg == cell.input and name in from_stack:
                terms.append(from_stack[name])
                continue
            arg_size = "_n_in" if arg == cell.input else "_n_out"
            arg_code = (
                Name("_x2")
                if arg == cell.input
                else method(place(arg), "reshape", Raw(rows), Raw(arg_size))
            )
            adj_code = method(place(adj), "reshape", Raw(rows), Raw("_n_out"))
            terms.append(transposed(Paren(Op("@", (transposed(arg_code), adj_code)))))
        code.append(grad(name, Op("+", tuple(terms))))
    if not (stacked_done and info["backward_stacked"]):
        code.append(If(Name("need_dx"), tuple(_input_gradient(kernel, info, place, rows))))
    return code


def _stacked_gradients(kernel, info, rows, vector_done, from_stack, summed) -> list[Node]:
    """The stacked input matrices' gradients as one product (into ``from_stack``), and
    the sums of the stacked adjoints that are vector gradients (into ``summed``)."""
    pre = info["pre"]
    k = len(pre)
    vector = dict(kernel.vector_grads)
    code: list[Node] = [
        Comment("the input matrices' gradients: one product for all of them"),
        let("_dP2", method("_dP", "reshape", Raw(rows), Raw(f"{k} * _n_out"))),
        # (x^T dP)^T rather than dP^T x: OpenBLAS runs the tall-skinny product twice as
        # fast in this orientation
        let("_dW_in", transposed(Paren(Op("@", (transposed("_x2"), Name("_dP2")))))),
    ]
    for j, s in enumerate(pre):
        from_stack[s.matrix] = at("_dW_in", _slice(j, k))
    bare = {
        str(vector[n]): n
        for n, kind in kernel.cell.params.items()
        if kind == "vector" and n not in vector_done and isinstance(vector[n], sp.Symbol)
    }
    if any(adj in bare for adj in info["adjoints"]):
        code.append(Comment("the sums of the stacked adjoints over every step and lane, at once"))
        code.append(let("_dP_sum", method("_dP2", "sum", axis=Raw("0"))))
        for j, adj in enumerate(info["adjoints"]):
            if adj in bare:
                summed[bare[adj]] = at("_dP_sum", _slice(j, k))
    return code


def _input_gradient(kernel: Kernel, info: dict, place, rows: str) -> list[Node]:
    """``_dx``: the adjoints of the input's projections times their matrices."""
    lane = _input_lane_term(kernel, place, rows)
    if info["backward_stacked"]:
        matrices = Tuple(tuple(Name(s.matrix) for s in info["pre"]))
        product = Op("@", (Name("_dP2"), Name("_W_in")))
        return [
            let("_W_in", Apply("np.concatenate", (matrices,))),
            let("_dx", Op("+", (product, *lane)) if lane else product),
        ]
    terms = [
        Op("@", (method(place(adj), "reshape", Raw(rows), Raw("_n_out")), Name(m)))
        for adj, m in kernel.input_grads
    ]
    return [let("_dx", Op("+", tuple(terms + lane)))]


def _input_lane_term(kernel: Kernel, place, rows: str) -> list[Expr]:
    """An elementwise input's own adjoint (its uses outside products), the term of
    ``dx`` beside the products'; none for an input used in products only."""
    if kernel.input_adjoint is None:
        return []
    return [method(place(kernel.input_adjoint), "reshape", Raw(rows), Raw("_n_out"))]


def _vector_sum(expr: sp.Expr, place, sum_axes: str, width: str = "_n_out") -> Expr:
    """A vector parameter's gradient: ``expr`` summed over every lane (and step); zeros
    of ``width`` when the parameter does not reach the cost (``B - B``)."""
    if expr == 0:
        return Apply("np.zeros", (Raw(width), Raw("_dtype")))
    rename = tuple((n, _name_of(place(n))) for n in sorted(ir.names(expr)))
    return Reduce(Grouped(Sym(expr, rename)), sum_axes)


def _name_of(array: Expr) -> str:
    """The name of an array given as a :class:`Name`."""
    if not isinstance(array, Name):
        raise TypeError(f"expected a name, got {array!r}")
    return array.id


def _all(state: str) -> str:
    """The array of a state's value at every step (row t + 1 is step t's value)."""
    return f"_{state}_all"


# --- recurrent cells --------------------------------------------------------------------


def recurrent_context(kernel: Kernel) -> dict:
    """Template keys of a recurrent NumPy module: the lines of each part."""
    fwd = _recurrent_forward(kernel)
    allocs = fwd.place_sequences()
    fwd.early_lines()
    fwd.sequence_lines()
    scratch_alloc = [alloc(naming.whole_scratch(i)) for i in range(fwd.whole_scratch)]
    before = fwd.before.nodes
    fused = _fuse_calls(fwd.step, fwd.step_exprs, fwd.states, fwd.block_of, len(kernel.pre))

    # The step: bind this step's rows, then the ufunc calls.
    bind, work = fwd.step_bind()
    step, work_alloc = fwd.step_lines(work, fused)

    used = mentioned(before + step + fused["before"])
    constants = [constant(k.name, e) for e, k in fwd.hoister.constants.items() if k.name in used]
    constants += fused["before"]
    forward_used = mentioned(constants + before + step + bind + work_alloc)
    context = {
        "projections": projections(kernel, "_T * _B", "_T, _B, {}", fwd.folds, forward_used),
        "before": constants + before,
        "alloc": allocs + scratch_alloc + work_alloc,
        "bind": bind,
        "step": step,
    }
    context = {key: printer.lines(value) for key, value in context.items()}
    context |= {
        "cache_entries": fwd.cache_entries(),
        "final_states": [
            {"name": s, "array": printer.expression(at(_all(s), "-1"))} for s in fwd.states
        ],
        "output_array": printer.expression(fwd.output_array()),
    }
    return context | _recurrent_backward(kernel)


def _recurrent_backward(kernel: Kernel) -> dict:
    """Template keys of a recurrent module's backward: the lines of each part, the
    parameters and cached values they read."""
    info = stacking(kernel)
    if kernel.adjoint_scan is None:  # a matrix-coupled recurrence
        parts = _backward_per_step(kernel, info)
    else:
        parts = _backward_scan(kernel, info)
    block_scan = parts.pop("block_scan")
    used = mentioned(sum(parts.values(), []))
    cached = _cache_reads(kernel)
    context = {key: printer.lines(parts.get(key, [])) for key in BACKWARD_KEYS}
    return context | {
        "block_scan": block_scan,
        "bptt_params": [p for p in kernel.cell.params if p in used],
        "cache_reads": printer.lines(node for node in cached if node.writes() <= used),
    }


def _recurrent_forward(kernel: Kernel) -> _RecurrentForward:
    """The forward split into the statements free of the state and the loop's."""
    cell = kernel.cell
    params = set(cell.params)
    states = dict(cell.states)
    # A value that is the next value of several states lives in the first one's buffer;
    # the others copy it at the end of each step.
    state_of_target: dict[str, str] = {}
    for s, t in states.items():
        state_of_target.setdefault(t, s)
    cached = set(kernel.cached)
    keep = cached | {cell.output} | set(states.values())
    forward = passes.inline_single_use(kernel.forward, keep)
    projections = {s.target for s in kernel.pre}

    # The statements free of the state: whole statements computed before the loop.
    early, step = recurrence.state_free(forward, set(states))
    varying = projections | {st.target for st in early}
    if cell.input_elementwise:  # a lane value of every step, free of the state
        varying.add(cell.input)
    hoister = ufuncs.Hoister(params, varying)
    step_exprs = {}
    for st in step:
        if isinstance(st, Assign):
            step_exprs[st.target] = hoister(ufuncs.numpy_form(st.expr))
    early_exprs = {st.target: hoister.constants_of(ufuncs.numpy_form(st.expr)) for st in early}
    return _RecurrentForward(
        kernel,
        params,
        states,
        state_of_target,
        cached,
        projections,
        early,
        step,
        hoister,
        step_exprs,
        early_exprs,
    )


def _whole_scratch(i: int) -> str:
    return naming.whole_scratch(i)


@dataclass
class _RecurrentForward:
    """The forward of a recurrent cell as the NumPy module lays it out: what is free of
    the state computed for every step at once before the loop, the rest in the loop;
    each value in an array that holds it for every step, or in a work buffer of one step.

    Attributes:
        kernel: The cell's kernel.
        params: The parameters' names.
        states: ``state -> its next value``.
        state_of_target: A next value -> the state whose buffer holds it.
        cached: The forward values the backward reads.
        projections: The products of the input.
        early: The statements free of the state.
        step: The statements of the loop.
        hoister: The state-free parts of the loop's expressions (computed before it).
        step_exprs: The loop's elementwise expressions, with those parts hoisted.
        early_exprs: The expressions of the early statements.
        seq: ``name -> the array holding it for every step``.
        before: The code before the loop.
        whole_scratch: How many (T, B, n) scratch buffers ``before`` uses.
        folds: ``projection -> (c, v)``: that block of the product computes c*P + v.
        block_of: A sequence the product computes -> its block.
    """

    kernel: Kernel
    params: set[str]
    states: dict[str, str]
    state_of_target: dict[str, str]
    cached: set[str]
    projections: set[str]
    early: list
    step: list
    hoister: ufuncs.Hoister
    step_exprs: dict[str, sp.Expr]
    early_exprs: dict[str, sp.Expr]
    seq: dict[str, Expr] = field(default_factory=dict)
    before: Code = field(default_factory=Code)
    whole_scratch: int = 0
    folds: dict[str, tuple[sp.Expr, sp.Expr]] = field(default_factory=dict)
    block_of: dict[str, int] = field(default_factory=dict)

    def place_sequences(self) -> list[Node]:
        """Where each value lives for the whole sequence; the allocations."""
        seq = self.seq
        for name in self.projections:
            seq[name] = Name(naming.sequence(name))
        if self.kernel.cell.input_elementwise:
            seq[self.kernel.cell.input] = Name("_x")
        allocs: list[Node] = []
        for s in self.states:
            allocs.append(alloc(_all(s), "(_T + 1, _B, _n_out)"))
            allocs.append(Let(at(_all(s), "0"), Index(Name("_state0"), Str(s))))
        for target, s in self.state_of_target.items():
            # the next value of a state, every step: rows 1.. of the state's buffer
            seq[target] = at(_all(s), "1:")
        early = [st.target for st in self.early]
        for name in sorted((self.cached | {self.kernel.cell.output}) - set(self.states)) + early:
            if name in seq:  # a projection (a view of the product) or a state's next value
                continue
            seq[name] = Name(naming.sequence(name))
            allocs.append(alloc(naming.sequence(name)))
        return allocs

    def sequence_of(self, name: str) -> Expr:
        return self.seq.get(name, Name(name))

    def emit_before(self, expr: sp.Expr, out: str, place, alias=None) -> None:
        lines, used = _emit(expr, out, place, _whole_scratch, alias=alias)
        self.whole_scratch = max(self.whole_scratch, used)
        self.before.add(lines)

    def early_lines(self) -> None:
        """The statements free of the state, every step at once."""
        for st in self.early:
            self.before.comment(st.comment + " (every step at once)")
            self.emit_before(self.early_exprs[st.target], self.seq[st.target], self.sequence_of)

    def sequence_lines(self) -> None:
        """The hoisted parts of the loop's expressions, every step at once: in place in
        the buffer of a projection nothing else reads, or computed by the product when
        affine in it."""
        # Uses of each projection, to know which buffers a sequence may take over.
        all_exprs = list(self.step_exprs.values()) + list(self.early_exprs.values())
        all_exprs += list(self.hoister.sequences)
        reads_back = set()
        for st in self.kernel.backward:
            reads_back |= ir.reads(st)
        inverse = {k: e for e, k in self.hoister.constants.items()}
        projection_order = [s.target for s in self.kernel.pre]
        for expr, sym in self.hoister.sequences.items():
            alias = self.free_buffer(expr, all_exprs, reads_back)
            fold = _affine_in(expr.xreplace(inverse), alias, self.params) if alias else None
            if fold is not None:
                # c*P + v: the product computes it (rows scaled by c, v as a bias column)
                self.folds[alias] = fold
                self.block_of[sym.name] = projection_order.index(alias)
                self.seq[sym.name] = self.seq[alias]
                self.before.comment(
                    f"{sym.name} = {sp.sstr(expr.xreplace(inverse))}: computed by the product"
                )
                continue
            self.sequence_line(expr, sym, alias)

    def free_buffer(self, expr: sp.Expr, all_exprs: list, reads_back: set[str]) -> str | None:
        """A projection in ``expr`` read nowhere else, whose buffer it may take over."""
        for name in sorted(ir.names(expr) & self.projections):
            uses = sum(_uses(e, name) for e in all_exprs)
            if uses == 1 and name not in reads_back and name not in self.cached:
                return name
        return None

    def sequence_line(self, expr: sp.Expr, sym: sp.Symbol, alias: str | None) -> None:
        seq = self.seq
        if alias:
            seq[sym.name] = seq[alias]
            self.before.comment(f"{sym.name} = {sp.sstr(expr)}, every step at once (in place)")
        else:
            seq[sym.name] = Name(naming.sequence(sym.name))
            self.before.comment(f"{sym.name} = {sp.sstr(expr)}, every step at once")
            self.before.add([alloc(naming.sequence(sym.name))])
        place = {alias: seq[alias]} if alias else {}
        self.emit_before(
            expr, seq[sym.name], lambda n: place.get(n, self.sequence_of(n)), alias=alias
        )

    def step_bind(self) -> tuple[list[Node], list[str]]:
        """This step's rows of the arrays the loop writes and reads; the values the loop
        keeps in work buffers instead."""
        bind: list[Node] = []
        for s in self.states:
            bind.append(let(s, at(_all(s), "_t")))
        step_targets = {st.target for st in self.step}
        work = []
        for st in self.step:
            t = st.target
            if t in self.state_of_target:
                bind.append(let(t, at(_all(self.state_of_target[t]), "_t + 1")))
            elif t in self.seq:
                bind.append(let(t, at(self.seq[t], "_t")))
            else:
                work.append(t)
        read_in_step = set()
        for e in self.step_exprs.values():
            read_in_step |= ir.names(e)
        read_in_step |= {st.arg for st in self.step if isinstance(st, MatVec)}
        for name in sorted(read_in_step - step_targets - set(self.states) - self.params):
            if name in self.seq:
                bind.append(let(name, at(self.seq[name], "_t")))
        return bind, work

    def step_lines(self, work: list[str], fused: dict) -> tuple[list[Node], list[Node]]:
        """The loop's ufunc calls (the fused gates first); the buffers they need."""
        body = Code()
        body.add(fused["step"])
        step_scratch = 0
        for st in self.step:
            out = st.target if st.target not in work else naming.work(st.target)
            body.comment(st.comment)
            if isinstance(st, MatVec):
                body.add([Call("np.matmul", (Name(st.arg), transposed(st.matrix)), Name(out))])
                continue
            lines, used = _emit(self.step_exprs[st.target], out, _work_place(work), _step_scratch)
            step_scratch = max(step_scratch, used)
            body.add(lines)
        owners = self.state_of_target
        followers = [(s, owners[t]) for s, t in self.states.items() if owners[t] != s]
        for s, owner in followers:
            body.comment(f"{s} takes the same next value as {owner}")
            body.add([Copy(at(_all(s), "_t + 1"), at(_all(owner), "_t + 1"))])
        work_alloc = [alloc(naming.work(w), LANES) for w in work]
        work_alloc += [alloc(naming.step_scratch(i), LANES) for i in range(step_scratch)]
        work_alloc += fused["alloc"]
        return body.nodes, work_alloc

    def cache_entries(self) -> list[dict]:
        """The arrays of the forward values the backward reads."""
        cache_entries = []
        for name in sorted(self.cached):
            if name in self.states:
                array = at(_all(name), ":-1")
            elif name in self.state_of_target:
                array = at(_all(self.state_of_target[name]), "1:")
            else:
                array = self.seq[name]
            cache_entries.append({"name": name, "array": printer.expression(array)})
        return cache_entries

    def output_array(self) -> Expr:
        output = self.kernel.cell.output
        if output in self.state_of_target:
            return at(_all(self.state_of_target[output]), "1:")
        return self.seq[output]


BACKWARD_KEYS = (
    "backward_alloc",
    "backward_before",
    "block_bind",
    "coefficients",
    "scan_lines",
    "adjoint_lines",
    "sum_lines",
    "backward_bind",
    "backward_step",
    "grad_lines",
)


def _fuse_calls(step, step_exprs, states, block_of: dict[str, int], blocks: int) -> dict:
    """One set of calls for several gates of the same form (horizontal fusion).

    Calls ``f(c_i*h + s_i)`` of one primitive on one state, where each s_i is a block of
    the stacked input projection and the blocks are neighbours (``tanh(wu*h + _s0)`` and
    ``tanh(wc*h + _s1)``), become three calls for all of them on a (B, m, n) buffer: the
    constants stacked times h, plus the projection's blocks, then f. Each gate then reads
    its row of the buffer. The expressions in ``step_exprs`` are rewritten in place.

    Returns:
        ``before`` (lines before the loop), ``alloc`` (buffers), ``step`` (lines at the
        start of each step).
    """
    found = _fusible_calls(step, step_exprs, states, block_of)
    out = {"before": [], "alloc": [], "step": []}
    replace: dict[sp.Expr, sp.Symbol] = {}
    index = 0
    for (name, h), members in sorted(found.items()):
        for run in _neighbour_runs(sorted(members)):
            if len(run) < 2:
                continue
            replace |= _fuse_run(out, index, name, h, [members[b] for b in run], run, blocks)
            index += 1
    if replace:
        for target in step_exprs:
            step_exprs[target] = step_exprs[target].xreplace(replace)
    out["alloc"] = sorted(set(out["alloc"]), key=out["alloc"].index)
    return out


def _fusible_calls(
    step, step_exprs, states, block_of: dict[str, int]
) -> dict[tuple[str, str], dict[int, tuple[sp.Expr, sp.Expr]]]:
    """``(primitive, state) -> {block: (call, c)}``: the first call ``f(c*h + s)`` of the
    step on each block ``s`` of the product."""
    found: dict[tuple[str, str], dict[int, tuple[sp.Expr, sp.Expr]]] = {}
    for st in step:
        if not isinstance(st, Assign):
            continue
        for call in sp.preorder_traversal(step_exprs[st.target]):
            gate = _gate(call, states, block_of)
            if gate is not None:
                name, h, block, coeff = gate
                found.setdefault((name, h.name), {}).setdefault(block, (call, coeff))
    return found


def _gate(call, states, block_of: dict[str, int]):
    """``(primitive, h, block, c)`` when ``call`` is ``f(c*h + s)`` with ``f`` computed in
    place, ``h`` a state, ``c`` one symbol or 1 and ``s`` a block of the product; else None."""
    name = ufuncs.primitive_name(call)
    if name not in ufuncs.INPLACE:
        return None
    terms = sp.Add.make_args(call.args[0])
    seqs = [t for t in terms if isinstance(t, sp.Symbol) and t.name in block_of]
    rest = [t for t in terms if t not in seqs]
    if len(seqs) != 1 or len(rest) != 1:
        return None
    coeff, state = rest[0].as_coeff_Mul()
    if coeff != 1 or not state.is_Mul:
        coeff, state = sp.S.One, rest[0]
    if isinstance(state, sp.Mul):
        factors = [f for f in state.args if isinstance(f, sp.Symbol)]
        if len(factors) != 2 or len(state.args) != 2:
            return None
        hs = [f for f in factors if f.name in states]
        if len(hs) != 1:
            return None
        h = hs[0]
        coeff = factors[0] if factors[1] == h else factors[1]
    elif isinstance(state, sp.Symbol) and state.name in states:
        h = state
    else:
        return None
    return name, h, block_of[seqs[0].name], coeff


def _neighbour_runs(ordered: list[int]) -> list[list[int]]:
    """Sorted block numbers grouped into runs of consecutive ones."""
    runs: list[list[int]] = []
    for block in ordered:
        if runs and block == runs[-1][-1] + 1:
            runs[-1].append(block)
        else:
            runs.append([block])
    return runs


def _fuse_run(out: dict, index: int, name: str, h: str, gates, run, blocks: int) -> dict:
    """The lines of one run of neighbouring gates (``(call, c)`` each) into ``out``;
    returns ``call -> the symbol of its row``."""
    buf, consts = Name(f"_F{index}"), f"_K{index}"
    m = len(run)
    stacked = tuple(
        Sym(c) if not c.is_number else Apply("np.full", (Raw("_n_out"), Raw(repr(float(c)))))
        for _, c in gates
    )
    out["before"].append(let(consts, Apply("np.stack", (Tuple(stacked),))))
    out["alloc"].append(alloc(buf.id, f"(_B, {m}, _n_out)"))
    out["alloc"].append(
        let("_P3", method("_P", "reshape", Raw("_T"), Raw("_B"), Raw(str(blocks)), Raw("_n_out")))
    )
    calls = [call for call, _ in gates]
    replace: dict[sp.Expr, sp.Symbol] = {}
    for i, call in enumerate(calls):
        sym = sp.Symbol(naming.fused_gate(index, i))
        replace[call] = sym
        out["alloc"].append(let(sym.name, at(buf, f":, {i}")))
    out["step"] += [
        Comment(f"{name} of {m} gates at once: " + "; ".join(sp.sstr(c) for c in calls)),
        Call("np.multiply", (Name(consts), at(h, ":, None, :")), buf),
        Call("np.add", (buf, at("_P3", f"_t, :, {run[0]}:{run[-1] + 1}")), buf),
        Primitive(name, buf, buf),
    ]
    return replace


def _work_place(work):
    def place(name: str) -> str:
        return naming.work(name) if name in work else name

    return place


def _step_scratch(i: int) -> str:
    return naming.step_scratch(i)


def stored_buffers(kernel: Kernel, info: dict) -> tuple[list[Node], dict[str, Name]]:
    """The (T, B, n) buffers of the adjoints the gradients read after the loop (views
    of one buffer ``_dP`` when the input's projections are stacked), and where each
    adjoint lives."""
    code: list[Node] = []
    where: dict[str, Name] = {}
    if info["backward_stacked"]:
        k = len(info["pre"])
        code.append(alloc("_dP", f"(_T, _B, {k} * _n_out)"))
        for j, adj in enumerate(info["adjoints"]):
            where[adj] = Name(naming.sequence(adj))
            code.append(let(naming.sequence(adj), at("_dP", f":, :, {_slice(j, k)}")))
    for name in kernel.stored:
        if name not in where:
            where[name] = Name(naming.sequence(name))
            code.append(alloc(naming.sequence(name)))
    return code, where


def whole_place(kernel: Kernel, stored: dict[str, Name]):
    """``name -> array`` holding it for every step: stored adjoints, cached values."""

    def place(name: str) -> Name:
        if name in stored:
            return stored[name]
        if name in kernel.cached:
            return Name(naming.sequence(name))
        if name == kernel.cell.input:  # an elementwise input, read whole
            return Name("_x")
        return Name(name)

    return place


def _cache_reads(kernel: Kernel) -> list[Node]:
    """The forward values the backward reads, bound to their (T, B, n) arrays."""
    return [let(naming.sequence(n), Index(Name("cache"), Str(n))) for n in kernel.cached]


def _backward_per_step(kernel: Kernel, info: dict) -> dict:
    """The adjoint step one step at a time (matrix-coupled recurrences: the recurrence
    analysis found no coefficients)."""
    cell = kernel.cell
    stored_code, stored = stored_buffers(kernel, info)
    hoister = ufuncs.Hoister(set(cell.params), ())
    exprs = {
        st.target: hoister.constants_of(ufuncs.numpy_form(st.expr))
        for st in kernel.backward
        if isinstance(st, Assign)
    }
    bind, work = _per_step_bind(kernel, exprs, stored)
    body, scratch = _per_step_body(kernel, exprs, stored, work)
    swap = [
        MultiLet(
            (naming.work(naming.adjoint(s)), naming.carried(s)),
            (Name(naming.carried(s)), Name(naming.adjoint(s))),
        )
        for s in cell.states
    ]
    allocs = stored_code + [alloc(naming.work(naming.adjoint(s)), LANES) for s in cell.states]
    allocs += [alloc(naming.work(w), LANES) for w in work]
    allocs += [alloc(naming.step_scratch(i), LANES) for i in range(scratch)]
    grads = gradients(kernel, whole_place(kernel, stored), "_T * _B", "(0, 1)", set())
    return {
        "backward_alloc": allocs,
        "backward_before": [constant(k.name, e) for e, k in hoister.constants.items()],
        "backward_bind": bind,
        "backward_step": body
        + [Comment("the adjoints of the states flow to the step before")]
        + swap,
        "block_scan": False,
        "grad_lines": grads,
    }


def _per_step_bind(kernel: Kernel, exprs: dict, stored: dict) -> tuple[list[Node], list[str]]:
    """This step's rows of what the adjoint step reads and writes; the adjoints it
    keeps in work buffers instead."""
    state_adjoints = {naming.adjoint(s) for s in kernel.cell.states}
    bind: list[Node] = [let(naming.upstream(kernel.cell.output), at("_dout", "_t"))]
    read = set()
    for e in exprs.values():
        read |= ir.names(e)
    read |= {st.arg for st in kernel.backward if isinstance(st, MatVec)}
    for name in kernel.cached:
        if name in read:
            bind.append(let(name, at(naming.sequence(name), "_t")))
    bind += _input_rows(kernel, read, "_t")
    work = []
    for st in kernel.backward:
        if st.target in state_adjoints:
            bind.append(let(st.target, Name(naming.work(st.target))))
        elif st.target in stored:
            bind.append(let(st.target, Index(stored[st.target], Raw("_t"))))
        else:
            work.append(st.target)
    return bind, work


def _per_step_body(kernel: Kernel, exprs: dict, stored: dict, work) -> tuple[list[Node], int]:
    """The ufunc calls of one adjoint step; how many scratch buffers they use."""
    body = Code()
    scratch = 0
    place = _work_place(work)
    for st in kernel.backward:
        out = Name(place(st.target))
        body.comment(st.comment)
        if isinstance(st, MatVec):
            body.add([Call("np.matmul", (Name(place(st.arg)), Name(st.matrix)), out)])
            continue
        lines, used = _emit(exprs[st.target], out, place, _step_scratch)
        scratch = max(scratch, used)
        body.add(lines)
    for s in kernel.cell.states:
        name = naming.adjoint(s)
        if name in stored:  # a state's adjoint a gradient also reads after the loop
            body.add([Copy(Index(stored[name], Raw("_t")), Name(name))])
    return body.nodes, scratch


def _input_rows(kernel: Kernel, read: set[str], rows: str) -> list[Node]:
    """An elementwise input the adjoint step reads: its ``rows`` of ``_x``."""
    name = kernel.cell.input
    if not kernel.cell.input_elementwise or name not in read:
        return []
    return [let(name, at("_x", rows))]


#: The shape of a buffer of one block of steps.
BLOCK = "(_block, _B, _n_out)"


def _backward_scan(kernel: Kernel, info: dict) -> dict:
    """The adjoint recurrence of a diagonal cell as coefficients and a scan: the
    coefficients and seeds are the kernel's :class:`~symbolic.ir.AdjointScan`."""
    cell = kernel.cell
    data = kernel.adjoint_scan
    programs = data.programs
    hoister = ufuncs.Hoister(set(cell.params), ())
    exprs = {st.target: hoister.constants_of(ufuncs.numpy_form(st.expr)) for st in programs}
    stored_code, stored = stored_buffers(kernel, info)
    code = _ScanCode(kernel, data)
    block_vals = [st.target for st in programs]
    seed_bufs = [s for s in data.seeds if s != data.upstream]
    allocs = stored_code + [alloc(naming.block(v), BLOCK) for v in block_vals + seed_bufs]
    bind = code.block_bind(exprs, block_vals, seed_bufs)
    coefficients = code.coefficient_lines(programs, exprs)
    scan, scan_scratch = code.scan_lines()
    adjoints = code.adjoint_lines()
    bind += [let(name, Index(stored[name], Raw("_lo:_hi"))) for name in kernel.stored]
    sums, accumulated, acc_alloc, sum_buffer = code.sum_lines()
    if sum_buffer:
        allocs.append(alloc("_bw_sum", BLOCK))
    allocs += [alloc(naming.block_scratch(i), BLOCK) for i in range(code.scratch)]
    if scan_scratch:
        allocs.append(alloc("_wscan", LANES))

    grads = gradients(kernel, whole_place(kernel, stored), "_T * _B", "(0, 1)", accumulated)
    return {
        "block_scan": True,
        "backward_alloc": allocs + acc_alloc,
        "backward_before": [constant(k.name, e) for e, k in hoister.constants.items()],
        "block_bind": bind,
        "coefficients": coefficients,
        "scan_lines": scan,
        "adjoint_lines": adjoints,
        "sum_lines": sums,
        "grad_lines": grads,
    }


def _block_scratch(i: int) -> Expr:
    return at(naming.block_scratch(i), ":_m")


@dataclass
class _ScanCode:
    """The lines of a block of the scanned backward, part by part.

    Attributes:
        kernel: The cell's kernel.
        scan: Its adjoint step as coefficients times seeds.
        scratch: How many (block, B, n) scratch buffers the lines use so far.
    """

    kernel: Kernel
    scan: AdjointScan
    scratch: int = 0

    def place(self, name: str) -> Expr:
        """Where a seed is read in the block's code."""
        scan = self.scan
        if name == scan.upstream:
            return at("_dout", "_lo:_hi")
        if name == scan.seed_out and scan.combined is not None:
            return Name(name)
        return Name("_S_" + name if name in scan.seeds else name)

    def emit(self, expr: sp.Expr, out: str | Expr, place) -> list[Node]:
        lines, used = _emit(expr, out, place, _block_scratch)
        self.scratch = max(self.scratch, used)
        return lines

    def block_bind(self, exprs: dict, block_vals: list[str], seed_bufs: list[str]) -> list[Node]:
        """The block's rows of the forward values read, of the coefficients and seeds."""
        cell = self.kernel.cell
        bind: list[Node] = []
        read = set()
        for e in exprs.values():
            read |= ir.names(e)
        vector = dict(self.kernel.vector_grads)
        for name, kind in cell.params.items():
            if kind == "vector":
                read |= ir.names(vector[name])
        for per_seed in self.scan.coeff.values():  # a coefficient may be a forward value itself
            for value in per_seed.values():
                read |= ir.names(value)
        for name in self.kernel.cached:
            if name in read:
                bind.append(let(name, at(naming.sequence(name), "_lo:_hi")))
        bind += _input_rows(self.kernel, read, "_lo:_hi")
        for v in block_vals:
            bind.append(let(v, at(naming.block(v), ":_m")))
        for v in seed_bufs:
            bind.append(Let(self.place(v), at(naming.block(v), ":_m")))
        return bind

    def coefficient_lines(self, programs: list[Assign], exprs) -> list[Node]:
        """The coefficients of the block's steps (a note for each adjoint whose
        coefficient is a value the code already has)."""
        coefficients = Code()
        for st, seed in self.scan.known:
            coefficients.comment(f"{st.comment}: {st.target} = {sp.sstr(st.expr)} * {seed}")
        for st in programs:
            coefficients.comment(st.comment)
            coefficients.add(self.emit(exprs[st.target], st.target, lambda n: n))
        return coefficients.nodes

    def scan_lines(self) -> tuple[list[Node], bool]:
        """The sequential part, one step of the block: the seeds, then each state's
        carried adjoint; and whether it needs the scratch buffer ``_wscan``."""
        data = self.scan
        states = list(self.kernel.cell.states)
        scan = Code()
        if data.combined is not None:
            carried_out = naming.carried(data.out_state)
            scan.comment(
                f"{data.combined.comment}: {data.seed_out} = {data.upstream} + {carried_out}"
            )
            scan.add(
                [
                    Call(
                        "np.add",
                        (at("_dout", "_lo + _k"), Name(carried_out)),
                        at(data.seed_out, "_k"),
                    )
                ]
            )
        for s in states:
            c = naming.carried(s)
            if c in data.seeds:
                scan.add([Copy(Index(self.place(c), Raw("_k")), Name(c))])
        scan_scratch = False
        for s in states:
            scan_scratch |= self.carry(scan, s)
        return scan.nodes, scan_scratch

    def carry(self, scan: Code, s: str) -> bool:
        """The state's adjoint of this step, carried to the step before, as a sum of
        coefficient x seed; whether it used ``_wscan``."""
        data = self.scan
        params = set(self.kernel.cell.params)
        target = naming.adjoint(s)
        c = naming.carried(s)
        scan.comment(f"{c} = {target} of this step, for the step before")
        terms = [
            (data.coeff[target][seed], seed) for seed in data.seeds if data.coeff[target][seed] != 0
        ]
        if not terms:
            scan.add([Fill(Name(c), "0")])
            return False
        first = True
        for k, seed in terms:
            sv = (
                Index(self.place(seed), Raw("_k"))
                if seed != data.upstream
                else at("_dout", "_lo + _k")
            )
            # a coefficient per step of the block, or a parameter (the same every step)
            kv = None
            if isinstance(k, sp.Symbol):
                kv = Name(k.name) if k.name in params else at(k.name, "_k")
            dest = Name(c if first else "_wscan")
            if kv is None and k == 1:
                node = Copy(dest, sv)
            elif kv is None:
                node = Call("np.multiply", (sv, ufuncs.number(k)), dest)
            else:
                node = Call("np.multiply", (kv, sv), dest)
            scan.add([node])
            if not first:
                scan.add([Call("np.add", (Name(c), Name("_wscan")), Name(c))])
            first = False
        return len(terms) > 1

    def adjoint_lines(self) -> list[Node]:
        """The adjoints the gradients read, for the block."""
        adjoints = Code()
        for name in self.kernel.stored:
            coeff = self.scan.coeff[name]
            expr = sp.Add(*[coeff[seed] * sp.Symbol(seed) for seed in self.scan.seeds])
            adjoints.comment(f"{name} = {sp.sstr(expr)}")
            adjoints.add(self.emit(expr, name, self.place))
        return adjoints.nodes

    def sum_lines(self) -> tuple[list[Node], set[str], list[Node], bool]:
        """Vector gradients that are not a stored adjoint summed: accumulated per block.
        The lines, the parameters accumulated, their allocations, and whether the lines
        use the buffer ``_bw_sum``."""
        cell = self.kernel.cell
        params = set(cell.params)
        vector = dict(self.kernel.vector_grads)
        sums = Code()
        accumulated = set()
        acc_alloc = []
        sum_buffer = False
        for name, kind in cell.params.items():
            if kind != "vector":
                continue
            expr = vector[name]
            if isinstance(expr, sp.Symbol):
                continue
            accumulated.add(name)
            acc_alloc.append(grad(name, Apply("np.zeros", (Raw("_n_out"), Raw("_dtype")))))
            if expr == 0:  # the parameter does not reach the cost
                continue
            factors = sp.Mul.make_args(expr)
            if (
                expr.is_Mul
                and len(factors) == 2
                and all(isinstance(f, sp.Symbol) and f.name not in params for f in factors)
            ):
                a, b = factors
                einsum = Apply("np.einsum", (Str("tbj,tbj->j"), Name(a.name), Name(b.name)))
                sums.add([grad(name, einsum, "+=")])
            else:
                buffer = at("_bw_sum", ":_m")
                lines = self.emit(expr, buffer, lambda n: n)
                sums.add(lines + [grad(name, Reduce(buffer, "(0, 1)"), "+=")])
                sum_buffer = True
        return sums.nodes, accumulated, acc_alloc, sum_buffer


# --- costs ------------------------------------------------------------------------------


def cost_context(per_unit: sp.Expr, gradient: sp.Expr, prediction: str) -> dict:
    """The lines of a cost's ``loss``: shared subexpressions once, the sum of the
    per-unit cost (a dot product when it is a square), the gradient scaled by 1/B,
    all into buffers of the prediction's shape."""
    scale = sp.Symbol("_scale")
    per_unit = ufuncs.numpy_form(per_unit, distribute=False)
    gradient = ufuncs.numpy_form(sp.factor_terms(gradient), distribute=False)
    (shared, (value, grad_expr)) = sp.cse([per_unit, gradient * scale], symbols=_cse_names())
    lines = Code()
    owned = []
    scratch = 0  # buffers the ufunc calls need beyond their targets
    for sym, expr in shared:
        lines.comment(f"{sym} = {sp.sstr(expr)}")
        lines.add([Alloc(sym.name, like=prediction)])
        emitted, used = _emit(expr, sym.name, str, _cost_scratch)
        scratch = max(scratch, used)
        lines.add(emitted)
        owned.append(sym.name)
    scratch = max(scratch, _cost_sum(lines, value, prediction))
    hoister = ufuncs.Hoister({"_scale"}, ())
    grad_expr = hoister.constants_of(grad_expr)
    lines.add(constant(k.name, e) for e, k in hoister.constants.items())
    # the gradient takes over a shared buffer read once by it (and never again)
    alias = next(
        (n for n in owned if _uses(grad_expr, n) == 1),
        None,
    )
    out = alias if alias else "_grad"
    if not alias:
        lines.add([Alloc("_grad", like=prediction)])
    emitted, used = _emit(grad_expr, out, str, _cost_scratch, alias=alias)
    scratch = max(scratch, used)
    lines.add(emitted)
    buffers = [Alloc(s, like=prediction) for s in sorted(_cost_scratch(i) for i in range(scratch))]
    return {"cost_lines": printer.lines(buffers + lines.nodes), "cost_grad": out}


def _cost_sum(lines: Code, value: sp.Expr, prediction: str) -> int:
    """``_sum``: the per-unit cost summed (a dot product when it is a square); how many
    scratch buffers that needs."""
    if value.is_Pow and value.exp == 2 and isinstance(value.base, sp.Symbol):
        flat = method(value.base.name, "reshape", Raw("-1"))
        # (einsum, not np.dot: a BLAS dot over more than about ten thousand numbers
        # wakes BLAS's threads, which then spin for 0.1 s beside the next compiled loop)
        total = Apply("np.einsum", (Str("i,i->"), flat, flat))
        lines.add([let("_sum", Apply("float", (total,)))])
        return 0
    lines.add([Alloc("_buf", like=prediction)])
    emitted, used = _emit(value, "_buf", str, _cost_scratch)
    lines.add(emitted + [let("_sum", Apply("float", (Apply("np.sum", (Name("_buf"),)),)))])
    return used


def _cse_names():
    index = 0
    while True:
        yield sp.Symbol(naming.coupled_common(index))
        index += 1


def _cost_scratch(i: int) -> str:
    return naming.coupled_scratch(i)


# --- feedforward cells ------------------------------------------------------------------


def _flat(
    stmts,
    exprs,
    owned: set[str],
    keep: set[str],
    live_after: set[str],
    place,
    scratch,
    lanes,
    widths: dict[str, str] | None = None,
):
    """Straight-line code for whole-batch statements: each into a new (B, n_out) buffer,
    or into the buffer of an operand nobody reads afterwards (``owned``: buffers this
    code allocated; ``keep``: values that must survive). With ``widths`` (a cell with
    named sizes: target -> size name), each buffer has its target's width and each
    width its own scratch buffers; ``used`` is then ``{width: count}``."""
    code = Code()
    used = 0 if widths is None else {}
    owned = set(owned)
    # values with a lane axis (B, n): anything else (a parameter, a constant) is copied
    # into a buffer of its own, broadcast over the batch
    lanes = set(lanes)
    # several names may hold one array (``e1 = Wa_x``): name -> the first one
    root: dict[str, str] = {}

    def names_of(name: str) -> set[str]:
        first = root.get(name, name)
        return {n for n in (*root, first) if root.get(n, n) == first}

    last_read: dict[str, int] = {}  # name -> the last statement reading it
    for index, st in enumerate(stmts):
        for name in ir.reads(st):
            last_read[name] = index
    live_after = set(live_after)

    def read_after(name: str, index: int) -> bool:
        return name in live_after or last_read.get(name, -1) > index

    for index, st in enumerate(stmts):
        code.comment(st.comment)
        if isinstance(st, MatVec):
            matrix = Name(st.matrix) if st.transpose else transposed(st.matrix)
            code.add([let(st.target, Op("@", (Name(place(st.arg)), matrix)))])
            owned.add(st.target)
            lanes.add(st.target)
            continue
        expr = exprs[st.target]
        if isinstance(expr, sp.Symbol) and expr.name in lanes:  # a second name, same array
            code.add([let(st.target, Name(place(expr.name)))])
            if expr.name in owned:
                owned.add(st.target)
            lanes.add(st.target)
            root[st.target] = root.get(expr.name, expr.name)
            continue
        lanes.add(st.target)
        alias = None
        for name in sorted(ir.names(expr) & owned):
            # written over only if no name of its array is kept, read later, or read
            # twice here
            same = names_of(name)
            if (
                not same & keep
                and not any(read_after(n, index) for n in same)
                and sum(_uses(expr, n) for n in same) == 1
            ):
                alias = name
                break
        out = place(alias) if alias else st.target
        width = widths[st.target] if widths is not None else None
        if not alias:
            code.add([alloc(st.target, LANES if width is None else _lanes(width))])
        lines, n = _emit(expr, out, place, _sized_scratch(scratch, width), alias=alias)
        used = _count_scratch(used, width, n)
        code.add(lines)
        if alias:
            code.add([let(st.target, Name(out))])
            root[st.target] = root.get(alias, alias)
        owned.add(st.target)
    return code.nodes, used


def _lanes(width: str) -> str:
    """The (B, n) shape of a value of ``width`` (a size name)."""
    return f"(_B, {naming.size(width)})"


def _count_scratch(used, width: str | None, n: int):
    """The scratch buffers used so far: a count (no named sizes), or ``{width: count}``."""
    if width is None:
        return max(used, n)
    return used | {width: max(used.get(width, 0), n)}


def _sized_scratch(scratch, width: str | None):
    """Scratch buffer names for values of ``width``: ``_w0`` for n_out (or no named
    sizes), ``_w0_hidden`` for a named size."""
    if width in (None, "n_out"):
        return scratch
    return lambda i: f"{scratch(i)}_{width}"


def _scratch_allocs(used, scratch) -> list[Node]:
    """The scratch buffers ``_flat`` used: ``used`` a count, or ``{width: count}``."""
    if isinstance(used, int):
        return [alloc(scratch(i), LANES) for i in range(used)]
    return [
        alloc(_sized_scratch(scratch, width)(i), _lanes(width))
        for width in sorted(used)
        for i in range(used[width])
    ]


def _kernel_widths(kernel: Kernel) -> dict[str, str] | None:
    """Every kernel value's width for a cell with named sizes (None without)."""
    return sizes.kernel_widths(kernel, naming.adjoint) if kernel.cell.sizes else None


def _output_shares_an_array(output: str, exprs: dict, shared: set[str]) -> bool:
    """Whether the output is only another name of an array the cache holds (``a = e1``,
    or a projection of the input): then the module returns a copy, so that a caller
    editing its output in place cannot change what backward reads."""
    name = output
    while isinstance(exprs.get(name), sp.Symbol):
        name = exprs[name].name
        if name in shared:
            return True
    return False


def feedforward_context(kernel: Kernel) -> dict:
    """Template keys of a feedforward NumPy module: the lines of forward and backward."""
    cell = kernel.cell
    cached = set(kernel.cached)
    keep = cached | {cell.output}
    forward = passes.inline_single_use(kernel.forward, keep)
    hoister = ufuncs.Hoister(set(cell.params), ())
    exprs = {
        st.target: hoister.constants_of(ufuncs.numpy_form(st.expr, distribute=False))
        for st in forward
        if isinstance(st, Assign)
    }

    def place(name: str) -> str:
        return "_x" if name == cell.input else name

    projection, owned = _feedforward_projections(kernel)
    inputs = {cell.input} | {s.target for s in kernel.pre}
    widths = _kernel_widths(kernel)
    lines, used = _flat(forward, exprs, owned, keep, keep, place, _step_scratch, inputs, widths)
    constants = [constant(k.name, e) for e, k in hoister.constants.items()]
    scratch = _scratch_allocs(used, naming.step_scratch)
    backward, grads = _feedforward_backward(kernel, place)
    used_back = mentioned(backward + grads)
    return {
        "output_shared": cell.output in cached
        or _output_shares_an_array(cell.output, exprs, cached | inputs),
        "ff_projections": printer.lines(projection),
        "ff_forward": printer.lines(constants + scratch + lines),
        "ff_backward": printer.lines(backward),
        "ff_grads": printer.lines(grads),
        "ff_backward_params": [p for p in cell.params if p in used_back],
        "ff_cached": [n for n in kernel.cached if n in used_back],
    }


def _feedforward_projections(kernel: Kernel) -> tuple[list[Node], set[str]]:
    """The products of the input (one for all of them when there are several); the
    buffers the forward may write over (not the views of one product)."""
    code: list[Node] = []
    # (a cell with named sizes keeps its products apart: their widths may differ)
    if stacking(kernel)["stacked"] and not kernel.cell.sizes:
        k = len(kernel.pre)
        code += [Comment(s.comment) for s in kernel.pre]
        matrices = Tuple(tuple(Name(s.matrix) for s in kernel.pre))
        code.append(let("_W_in", Apply("np.concatenate", (matrices,))))
        code.append(let("_P", Op("@", (Name("_x"), transposed("_W_in")))))
        for j, s in enumerate(kernel.pre):
            code.append(let(s.target, at("_P", f":, {_slice(j, k)}")))
        return code, set()
    for s in kernel.pre:
        code.append(Comment(s.comment))
        code.append(let(s.target, Op("@", (Name("_x"), transposed(s.matrix)))))
    return code, {s.target for s in kernel.pre}


def _feedforward_backward(kernel: Kernel, place) -> tuple[list[Node], list[Node]]:
    """The adjoint program on whole arrays (constants and buffers first), then the
    gradients."""
    cell = kernel.cell
    hoister = ufuncs.Hoister(set(cell.params), ())
    exprs = {
        st.target: hoister.constants_of(ufuncs.numpy_form(st.expr))
        for st in kernel.backward
        if isinstance(st, Assign)
    }
    stored = set(kernel.stored) | {adj for adj, _ in kernel.input_grads}
    seeds = {naming.upstream(cell.output)} | set(kernel.cached) | {cell.input}
    widths = _kernel_widths(kernel)
    lines, used = _flat(
        kernel.backward, exprs, set(), stored, stored, place, _step_scratch, seeds, widths
    )
    constants = [constant(k.name, e) for e, k in hoister.constants.items()]
    scratch = _scratch_allocs(used, naming.step_scratch)
    grads: list[Node] = []
    vector = dict(kernel.vector_grads)
    matrix = dict(kernel.matrix_grads)

    def array(name: str) -> Name:
        return Name(place(name))

    for name, kind in cell.params.items():
        if kind == "vector":
            width = naming.size(cell.shapes[name][0]) if cell.sizes else "_n_out"
            grads.append(grad(name, _vector_sum(vector[name], array, "0", width)))
        else:
            terms = [Op("@", (transposed(array(adj)), array(arg))) for adj, arg in matrix[name]]
            grads.append(grad(name, Op("+", tuple(terms))))
    terms = [Op("@", (array(adj), Name(m))) for adj, m in kernel.input_grads]
    if kernel.input_adjoint is not None:
        lane = array(kernel.input_adjoint)
        # alone, it may be a view of an argument (da): dx is the caller's to edit
        terms.append(lane if terms else method(lane, "copy"))
    grads.append(If(Name("need_dx"), (let("dx", Op("+", tuple(terms))),)))
    return constants + scratch + lines, grads
