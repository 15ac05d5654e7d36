"""The torch backend's layout: the kernel's statements on whole tensors, time in Python,
the forward and the derived backward each one ``torch.library`` custom op.

Input: a :class:`~symbolic.ir.Kernel` and the keys every module shares
(:func:`symbolic.render.cell_context`). Output: the template to render and its keys.

Every statement of a step runs on (B, n_out) tensors: a product is one ``@``, an
assignment one printed expression. The values the backward reads are collected per step
and stacked into (T, B, n_out) tensors, the op's outputs; a value with no lane axis (a
constant, an expression of vector parameters) is broadcast to the lanes where it is
stored, so every stored value has the shape the op's fake implementation declares.
"""

from __future__ import annotations

import sympy as sp

from symbolic import ir, naming, primitives, reductions, sizes
from symbolic.backends.base import (
    UnsupportedSpec,
    lane_shaped,
    refuse_sized_broadcasts,
    statement,
)
from symbolic.backends.torch import primitives as torch_primitives
from symbolic.backends.torch.printer import code
from symbolic.ir import Assign, CostDerivation, Kernel
from symbolic.model import RECURRENT

#: The attributes of ``torch.nn.Module`` (torch 2.13, public ones and ``training``): a
#: parameter of the ``Cell`` module is an attribute named like it, so it may not be one.
MODULE_ATTRIBUTES = frozenset(
    """T_destination add_module apply bfloat16 buffers call_super_init children compile cpu
    cuda double dump_patches eval extra_repr float forward get_buffer get_extra_state
    get_parameter get_submodule half ipu load_state_dict modules mtia named_buffers
    named_children named_modules named_parameters parameters register_backward_hook
    register_buffer register_forward_hook register_forward_pre_hook
    register_full_backward_hook register_full_backward_pre_hook
    register_load_state_dict_post_hook register_load_state_dict_pre_hook register_module
    register_parameter register_state_dict_post_hook register_state_dict_pre_hook
    requires_grad_ set_extra_state set_submodule share_memory state_dict to to_empty train
    training type xpu zero_grad params n_in n_out""".split()
)


def cell(kernel: Kernel, keys: dict) -> tuple[str, dict]:
    """The template and the layout keys of a cell module."""
    model = kernel.cell
    clash = sorted(set(model.params) & MODULE_ATTRIBUTES)
    if clash:
        raise UnsupportedSpec(
            f"{model.path}: '{clash[0]}': the torch backend registers each parameter as an "
            "attribute of its nn.Module, and torch.nn.Module has an attribute of that name; "
            "rename the parameter"
        )
    refuse_sized_broadcasts(kernel, "torch")
    recurrent = model.kind == RECURRENT
    lanes = lane_shaped(kernel)
    pre = {s.target for s in kernel.pre}
    # The forward op's outputs: the output, the final states, then what backward reads.
    cached = [n for n in kernel.cached if n != model.output]
    extra = {
        "input": model.input,
        "stored_names": list(kernel.stored),
        "lane_template": _lane_template(kernel),
        "op_outputs": [model.output] + [naming.state_array(s) for s in model.states] + cached,
        "cached_out": cached,
        # a cell with named sizes: each op output's width, read from a parameter
        "fake_sizes": _fake_sizes(kernel, [model.output, *cached]),
        # backward reads the output too: the op's first output is saved with the cache
        "output_saved": model.output in kernel.cached,
        "saved": ([model.output] if model.output in kernel.cached else []) + cached,
        "per_step": [n for n in dict.fromkeys([model.output, *cached]) if n not in pre],
        "broadcast": sorted(
            n for n in {model.output, *kernel.cached, *kernel.stored} if n not in lanes
        ),
        "torch_forward": _statements(kernel.forward, lanes),
        "torch_backward": _statements(kernel.backward, lanes),
        "unassigned_adjoints": [
            a
            for a in kernel.derivation.state_adjoints.values()
            if a not in ir.targets(kernel.backward)
        ],
        "next_states": [
            # a next state of parameters only (a vector, a number) is broadcast to the lanes
            {"name": s, "value": t if t in lanes else f"_lanes({t}, _like)", "lanes": t in lanes}
            for s, t in model.states.items()
        ],
        "torch_grads": _grads(kernel, recurrent),
        "torch_input_grads": [
            {"adjoint": _seq(adj, recurrent), "matrix": m} for adj, m in kernel.input_grads
        ],
        "torch_input_adjoint": _seq(kernel.input_adjoint, recurrent)
        if kernel.input_adjoint
        else "",
    }
    extra |= _elementwise_input(kernel, keys["pre"])
    return ("recurrent.py.j2" if recurrent else "feedforward.py.j2"), extra


def _elementwise_input(kernel: Kernel, pre: list[dict]) -> dict:
    """A recurrent cell whose step reads its input as a lane value: the ops take the
    sequence as ``<input>_seq`` and bind the input's row at each step, in the forward
    (``forward_input``) and the backward (``backward_input``) loop that reads it."""
    model = kernel.cell
    if not model.input_elementwise or model.kind != RECURRENT:
        return {"forward_input": "", "backward_input": "", "clone_input": _aliases_input(kernel)}
    whole = naming.sequence(model.input)
    grads = _grads(kernel, True, whole)
    return {
        "clone_input": False,
        "input": whole,
        "pre": [dict(p, arg=whole) if p["arg"] == model.input else p for p in pre],
        "torch_grads": grads,
        "forward_input": model.input if model.input in ir.reads_all(kernel.forward) else "",
        "backward_input": model.input if model.input in ir.reads_all(kernel.backward) else "",
    }


def _aliases_input(kernel: Kernel) -> bool:
    """A feedforward step that may hand back its elementwise input itself (``a = x``, or
    a reduction of x over a layer of no units): the forward op works on a copy, since an
    op's outputs may not be its inputs."""
    model = kernel.cell
    if not model.input_elementwise:
        return False
    x = sp.Symbol(model.input)
    return any(
        isinstance(st, Assign)
        and (st.expr == x or (reductions.is_reduction(st.expr) and st.expr.args[0] == x))
        for st in kernel.forward
    )


def cost(derivation: CostDerivation, keys: dict) -> tuple[str, dict]:
    """The template and the layout keys of a cost module."""
    cost_model = derivation.cost
    lane = {cost_model.prediction, cost_model.target, *cost_model.inputs}
    used = (
        primitives.used(derivation.per_unit)
        | reductions.used(derivation.per_unit)
        | primitives.used(derivation.gradient)
        | reductions.used(derivation.gradient)
    )
    return "cost.py.j2", {
        "helpers": torch_primitives.helpers(used),
        "per_unit_code": code(derivation.per_unit),
        "per_unit_lanes": bool(ir.names(derivation.per_unit) & lane),
        "gradient_code": code(derivation.gradient),
        "gradient_lanes": bool(ir.names(derivation.gradient) & lane),
    }


def _seq(name: str, recurrent: bool) -> str:
    """Where a value of every step lives after the loop: ``name_seq`` (feedforward: the
    value itself, there is one step)."""
    return naming.sequence(name) if recurrent else name


def _statements(stmts, lanes: set[str]) -> list[dict]:
    """A step's statements as template keys; a product of a value that is not
    lane-shaped (a constant intermediate is a Python number) reads it broadcast."""
    out = []
    for stmt in stmts:
        keys = statement(stmt, code)
        if keys["matvec"] and stmt.arg not in lanes:
            keys["arg"] = f"_lanes({stmt.arg}, _like)"
        out.append(keys)
    return out


def _lane_template(kernel: Kernel) -> str:
    """A (B, n_out) tensor every forward op has at hand: a state, or a projection."""
    model = kernel.cell
    if model.kind == RECURRENT:
        return next(iter(model.states))
    if not kernel.pre:  # an elementwise input, never projected: a lane value itself
        return model.input
    if model.sizes:  # a projection n_out wide (another may have a named width)
        widths = sizes.kernel_widths(kernel, naming.adjoint)
        wide = [st.target for st in kernel.pre if widths.get(st.target) == sizes.N_OUT]
        if wide:
            return wide[0]
        if model.input_elementwise:
            return model.input
    return kernel.pre[0].target


def _grads(kernel: Kernel, recurrent: bool, whole_input: str = "") -> list[dict]:
    """Each parameter's gradient, in spec order: a vector's sum over steps and lanes of
    its expression on the stored tensors, a matrix's products of adjoints and arguments
    (the input read as ``whole_input``, by default its own name)."""
    model = kernel.cell
    stored = set(kernel.cached) | set(kernel.stored)
    names = {n: _seq(n, recurrent) for n in stored}
    names[model.input] = whole_input or model.input
    vector = dict(kernel.vector_grads)
    matrix = dict(kernel.matrix_grads)
    out = []
    for name, kind in model.params.items():
        if kind == "vector":
            expr = vector[name]
            out.append(
                {
                    "param": name,
                    "kind": kind,
                    "zero": expr == 0,
                    "code": code(expr, names),
                    "lanes": bool(ir.names(expr) & stored),
                    "terms": [],
                }
            )
            continue
        terms = [
            {
                "adjoint": names[adj],
                "arg": names[arg],
                "size": "_n_in" if arg == model.input else "_n_out",
            }
            for adj, arg in matrix[name]
        ]
        out.append({"param": name, "kind": kind, "zero": False, "code": "", "terms": terms})
    return out


def _fake_sizes(kernel: Kernel, outputs: list[str]) -> list[str]:
    """The width of each of a sized feedforward op's outputs as code (``W.shape[0]``),
    for its shape function; empty without named sizes (every output is (B, n_out))."""
    model = kernel.cell
    if not model.sizes:
        return []
    widths = sizes.kernel_widths(kernel, naming.adjoint)
    where = sizes.sources(model)
    return [f"{where[widths[n]][0]}.shape[{where[widths[n]][1]}]" for n in outputs]
