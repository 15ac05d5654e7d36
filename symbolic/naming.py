"""Every naming rule of generated code, in the paper's notation, in one place.

Deterministic names only: golden files depend on them.
"""

from __future__ import annotations


def adjoint(symbol: str) -> str:
    """The adjoint of ``symbol``: dC/d<symbol> is ``d<symbol>`` (dZu, dG, dh ...)."""
    return "d" + symbol


def upstream(output: str) -> str:
    """The gradient arriving from above for the output at this step (``da_in``)."""
    return adjoint(output) + "_in"


def carried(state: str) -> str:
    """The adjoint of a state arriving from step t+1 (``dh_next``)."""
    return adjoint(state) + "_next"


def matvec_adjoint(arg: str, matrix: str) -> str:
    """The path of ``arg`` through ``matrix`` (``_dh_U``: sum_i U_ij dP_i)."""
    return f"_{adjoint(arg)}_{matrix}"


def input_lane_adjoint(input_name: str) -> str:
    """An elementwise input's adjoint as a lane value (``_elem_dx``: its uses outside
    products; ``dx`` adds the products' terms to it)."""
    return "_elem_" + adjoint(input_name)


def temporary(index: int, prefix: str = "_t") -> str:
    """A temporary: lifted intermediates ``_t0, _t1 ...``; CSE temporaries ``_c0 ...``."""
    return f"{prefix}{index}"


def sequence(symbol: str) -> str:
    """The buffer holding ``symbol`` for every time step (``Zu_seq``, shape (T, B, n))."""
    return symbol + "_seq"


def param_array(param: str) -> str:
    """A parameter's array inside a compiled kernel (``_p_WTu``)."""
    return "_p_" + param


def grad_array(param: str) -> str:
    """A parameter's per-lane gradient accumulator inside a compiled kernel (``_g_WTu``)."""
    return "_g_" + param


def buffer(symbol: str) -> str:
    """The buffer holding ``symbol`` for every lane of a batch (``_buf_z``, (B, n))."""
    return "_buf_" + symbol


def state_array(state: str) -> str:
    """The working array of a state inside a compiled kernel (``_s_h``, (B, n))."""
    return "_s_" + state


def work(symbol: str) -> str:
    """A (B, n) buffer holding ``symbol`` between the kernels of one time step (``_w_dG``;
    a temporary's keeps its underscore, ``_w__t0``, so that it never meets a spec
    name's)."""
    return "_w_" + symbol


def coefficient(adjoint: str, seed: str) -> str:
    """An adjoint's coefficient in a seed of the backward scan (``_dG_per_da``:
    dG = _dG_per_da * da)."""
    return f"_{adjoint}_per_{seed}"


def block(symbol: str) -> str:
    """A (block of steps, B, n) buffer of the NumPy backward scan (``_bk_dG``)."""
    return "_bk_" + symbol


def scratch(symbol: str) -> str:
    """A lane block's scratch array inside a compiled kernel (``_k_G``)."""
    return "_k_" + symbol


def row(array: str) -> str:
    """A 1-D view of one row of ``array`` inside a compiled kernel (``_r_G_seq``)."""
    return "_r_" + array


# Numbered buffers and symbols of the NumPy plan (no spec name starts with "_").


def step_scratch(index: int) -> str:
    """The ``index``-th (B, n) scratch buffer of one step's ufunc calls (``_w0``)."""
    return f"_w{index}"


def whole_scratch(index: int) -> str:
    """The ``index``-th (T, B, n) scratch buffer of the work done for every step at
    once (``_ws0``)."""
    return f"_ws{index}"


def block_scratch(index: int) -> str:
    """The ``index``-th (block, B, n) scratch buffer of the backward scan (``_bw0``)."""
    return f"_bw{index}"


def coupled_scratch(index: int) -> str:
    """The ``index``-th scratch buffer of a matrix-coupled step (``_cw0``)."""
    return f"_cw{index}"


def fused_gate(group: int, member: int) -> str:
    """The view of the ``member``-th gate in the ``group``-th set of fused gates
    (``_f0_1``)."""
    return f"_f{group}_{member}"


def coupled_common(index: int) -> str:
    """The ``index``-th common subexpression of a matrix-coupled step (``_u0``)."""
    return f"_u{index}"


def hoisted_constant(index: int) -> str:
    """The ``index``-th loop-invariant product of parameters (``_k0 = WTu/2``)."""
    return f"_k{index}"


def hoisted_sequence(index: int) -> str:
    """The ``index``-th state-free sum computed for every step at once (``_s0``)."""
    return f"_s{index}"


def size(name: str) -> str:
    """A width in generated code: ``n_in`` -> ``_n_in``, ``n_out`` -> ``_n_out``, a named
    size ``hidden`` -> ``_n_hidden``."""
    return f"_{name}" if name in ("n_in", "n_out") else f"_n_{name}"
