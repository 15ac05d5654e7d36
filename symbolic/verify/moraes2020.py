"""The formulas of "Neural Networks Derivatives" (W. Moraes, 2020), transcribed.

The paper ships with the package (``symbolic/papers/neural-networks-derivatives.md``,
byte for byte the shared copy); every :class:`~symbolic.verify.engine.Formula` below
names the line on which it starts there, and its ``source`` is the text of its lines
exactly as printed. Hold this module next to the paper: the formulas come in the
paper's order, one entry per chain-rule row, per ``&=`` row of an aligned block (with
its ``&+`` / ``&\\quad +`` continuation rows) and per restatement. Plain definitions (C,
a = sigma(z), z, sigma, the GRN forward equations) are the models of
:mod:`symbolic.verify.unrolled`, not formulas.

This module is the transcription only: the keys in the paper's notation, the models
each formula speaks of (several sizes; T = 1, 2, 3; stacked GRN layers where it speaks
of layer l-1), its readings and its corrected form, and the paper's words for what a
formula that holds only locally leaves out. :data:`PAPER` hands them to the engine
(:mod:`symbolic.verify.engine`), which decides every verdict; :func:`verify_paper` is
the result.
"""

# ruff: noqa: E741 (l is the paper's layer index throughout)

from __future__ import annotations

import functools
from collections.abc import Callable
from importlib import resources

import sympy as sp

from symbolic.primitives import PRIMITIVES
from symbolic.verify.engine import (
    FD_TOLERANCE,
    Formula,
    Paper,
    ReadingResult,
    relative_difference,
)
from symbolic.verify.unrolled import (
    Context,
    Key,
    Shape,
    Unrolled,
    check_primitive_rules,
    grn,
    mlp,
    time_of,
)
from symbolic.verify.verdict import HOLDS, UNDECIDED, Finding

PAPER_FILE = "symbolic/papers/neural-networks-derivatives.md"


@functools.cache
def paper_lines() -> tuple[str, ...]:
    """The paper's lines (``paper_lines()[k - 1]`` is line ``k``), from package data."""
    path = resources.files("symbolic").joinpath("papers", "neural-networks-derivatives.md")
    return tuple(path.read_text(encoding="utf-8").split("\n"))


# -------------------------------------------------------------------------- keys
# Keys in the paper's notation (see symbolic.verify.unrolled), so that a transcription
# reads like the paper: c.v(a(2, 0)) is a_0^2, c.dC(W(1, 0, 0)) is dC/dW_{00}^1.


def W(l: int, i: int, j: int) -> Key:
    """W_{ij}^l, the MLP weight into neuron i of layer l+1 (paper line 15)."""
    return ("W", l, i, j)


def B(l: int, i: int) -> Key:
    """B_i^l, the MLP bias of neuron i of layer l (paper line 15)."""
    return ("B", l, i)


def z(l: int, i: int) -> Key:
    """z_i^l (paper line 15)."""
    return ("z", l, i)


def y(*idx: int) -> Key:
    """y_i (MLP, paper line 11) or ^t y_i (GRN, the target of step t)."""
    return ("y", *idx)


def a(*idx: int) -> Key:
    """a_i^l (MLP, paper line 13) or ^t a_i^l (GRN, paper line 47)."""
    return ("a", *idx)


def Zu(t: int, l: int, i: int) -> Key:
    """^t Zu_i^l (paper line 53)."""
    return ("Zu", t, l, i)


def Zc(t: int, l: int, i: int) -> Key:
    """^t Zc_i^l (paper line 55)."""
    return ("Zc", t, l, i)


def G(t: int, l: int, i: int) -> Key:
    """^t Gamma_i^l (paper line 49)."""
    return ("G", t, l, i)


def ac(t: int, l: int, i: int) -> Key:
    """^t ac_i^l, the paper's a-tilde (line 51)."""
    return ("ac", t, l, i)


def P(name: str, *idx: int) -> Key:
    """A GRN parameter: ``P("WTc", l, j)`` is WTc_j^l, ``P("WXu", l - 1, j, i)`` is
    WXu_{ji}^{l-1} (paper lines 53-55)."""
    return (name, *idx)


# --------------------------------------------------------------- model families


def _mlp_example() -> list[Unrolled]:
    # The worked example's shape (paper lines 20-34 name neurons 0 and 1 of layers 0-2
    # and sum over two outputs): three layers, two outputs, in two sizes.
    return [mlp((2, 2, 2)), mlp((3, 4, 2))]


def _mlp_all() -> list[Unrolled]:
    return [*_mlp_example(), mlp((2, 3, 3, 2))]


def _grn_top2() -> list[Unrolled]:
    # Paper lines 60-77 speak of neuron 0 of layer 2, the cost layer: layer 2 fed by a
    # plain input (numbered 1) or by a GRN layer 1 (stacked), for T = 1, 2, 3.
    return [m for T in (1, 2, 3) for m in (grn((2, 2), T, 1), grn((2, 2, 2), T, 0))]


def _grn_all() -> list[Unrolled]:
    # Every layer l of these: a top layer fed by the input (2 or 3 neurons), and both
    # layers of a stack, so that layer l-1 is the input or itself a GRN layer.
    return [
        m for T in (1, 2, 3) for m in (grn((2, 2), T, 1), grn((2, 2, 2), T, 0), grn((2, 3), T, 0))
    ]


def _steps(shape: Shape) -> list[dict]:
    return [{"t": t} for t in range(1, shape.T + 1)]


def _grn_units(shape: Shape, with_t: bool = True) -> list[dict]:
    # Neuron j of GRN layer l (at every step t): the left sides dC/dBc_j^l and so on.
    steps = range(1, shape.T + 1) if with_t else [None]
    return [
        {"l": l, "j": j} | ({"t": t} if with_t else {})
        for t in steps
        for l in shape.layers
        for j in range(shape.n(l))
    ]


def _grn_weights(shape: Shape, with_t: bool = True) -> list[dict]:
    # WX_{ji}^{l-1}: neuron j of layer l, neuron i of layer l-1.
    return [{**u, "i": i} for u in _grn_units(shape, with_t) for i in range(shape.n(u["l"] - 1))]


def _grn_inputs(shape: Shape) -> list[dict]:
    # ^t a_i^{l-1}: neuron i of the layer below GRN layer l, at step t.
    return [
        {"t": t, "l": l, "i": i}
        for t in range(1, shape.T + 1)
        for l in shape.layers
        for i in range(shape.n(l - 1))
    ]


def _neurons_of_l(shape: Shape, idx: dict) -> range:
    return range(shape.n(idx["l"]))


# ----------------------------------------------------- shared transcription pieces


def d(c: Context, u: Key, v: Key):
    """The paper's partial du/dv (see SymbolicContext.d)."""
    return c.d(u, v)


def sp_(c: Context, key: Key):
    """sigma'(key's value), e.g. sigma'(z_0^2)."""
    return c.sigma_prime(c.v(key))


# The paper's GRN terms at step t, neuron j of layer l (c is the context).


def _adj(c: Context, t: int, l: int, j: int):
    # dC/d^t a_j^l: the total derivative (the adjoint), as the paper writes it.
    return c.dC(a(t, l, j))


def _c_path(c: Context, t: int, l: int, j: int):
    # ^t Gamma_j^l . tanh'(^t Zc_j^l): d^t a / d^t Zc.
    return c.v(G(t, l, j)) * c.tanh_prime(c.v(Zc(t, l, j)))


def _u_path(c: Context, t: int, l: int, j: int):
    # (^t ac_j^l - ^{t-1} a_j^l) . sigma'(^t Zu_j^l): d^t a / d^t Zu.
    return (c.v(ac(t, l, j)) - c.v(a(t - 1, l, j))) * c.sigma_prime(c.v(Zu(t, l, j)))


def _one_step(c: Context, t: int, l: int, j: int):
    # d^t a_j^l / d^{t-1} a_j^l through all three paths (line 94 with its bracket
    # closed after the WTu term).
    return (
        (1 - c.v(G(t, l, j)))
        + _c_path(c, t, l, j) * c.v(P("WTc", l, j))
        + _u_path(c, t, l, j) * c.v(P("WTu", l, j))
    )


def _through_layer(c: Context, t: int, l: int, i: int, last: int):
    # sum_{j=0}^{last} dC/d^t a_j^l (Gamma tanh' WXc_{ji} + (ac - a) sigma' WXu_{ji}):
    # the paths from ^t a_i^{l-1} through layer l at step t.
    return sum(
        _adj(c, t, l, j)
        * (
            _c_path(c, t, l, j) * c.v(P("WXc", l - 1, j, i))
            + _u_path(c, t, l, j) * c.v(P("WXu", l - 1, j, i))
        )
        for j in range(last + 1)
    )


def _sum_t(c: Context, term: Callable[[int], object]):
    return sum(term(t) for t in range(1, c.shape.T + 1))


def _input_adjoint(c: Context, t: int, l: int, i: int):
    # The corrected dC/d^t a_i^{l-1}: through layer l at step t, plus, when layer l-1 is
    # itself a GRN layer and t < T, through its own next step ^{t+1} a_i^{l-1}.
    total = _through_layer(c, t, l, i, c.shape.n(l) - 1)
    if c.shape.is_grn(l - 1) and t < c.shape.T:
        total += _adj(c, t + 1, l - 1, i) * _one_step(c, t + 1, l - 1, i)
    return total


def _previous_adjoint(c: Context, t: int, l: int, j: int):
    # The corrected dC/d^{t-1} a_j^l: through step t, plus (for t >= 2) the cost term at
    # step t-1 on the top layer, or the paths through layer l+1 at step t-1 below it.
    total = _adj(c, t, l, j) * _one_step(c, t, l, j)
    if t >= 2:
        if l == c.shape.L:
            total += 2 * (c.v(a(t - 1, l, j)) - c.v(y(t - 1, j)))
        else:
            total += _through_layer(c, t - 1, l + 1, j, c.shape.n(l + 1) - 1)
    return total


def _chain_in(c: Context, t: int, l: int, i: int, last: int):
    # Line 84: sum_{j=0}^{last} of the two chain-rule paths from ^t a_i^{l-1}.
    d, below = c.d, a(t, l - 1, i)
    return sum(
        c.dC(a(t, l, j))
        * d(a(t, l, j), ac(t, l, j))
        * d(ac(t, l, j), Zc(t, l, j))
        * d(Zc(t, l, j), below)
        + c.dC(a(t, l, j))
        * d(a(t, l, j), G(t, l, j))
        * d(G(t, l, j), Zu(t, l, j))
        * d(Zu(t, l, j), below)
        for j in range(0, last + 1)
    )


def _factor_in(c: Context, t: int, l: int, i: int, last: int):
    # Lines 87-88 and 106-108: the sum over j that follows dC/d^t a_j^l.
    return sum(
        _c_path(c, t, l, j) * c.v(P("WXc", l - 1, j, i))
        + _u_path(c, t, l, j) * c.v(P("WXu", l - 1, j, i))
        for j in range(0, last + 1)
    )


def _prev_early_close(c: Context, t: int, l: int, j: int):
    # Lines 94-95 as printed: dC/d^t a ((1 - Gamma) + Gamma tanh' WTc) + (ac - a) sigma' WTu.
    return c.dC(a(t, l, j)) * (
        (1 - c.v(G(t, l, j))) + _c_path(c, t, l, j) * c.v(P("WTc", l, j))
    ) + _u_path(c, t, l, j) * c.v(P("WTu", l, j))


# ------------------------------------------------------------ corrected forms


_INPUT_CORRECTED = (
    r"\frac{\partial C}{\partial^t a_i^{l-1}} = \sum_{j=0}^{n^l-1} "
    r"\frac{\partial C}{\partial^t a_j^l} \left( {}^t\Gamma_j^l \cdot \tanh'({}^tZc_j^l) "
    r"\cdot WXc_{ji}^{l-1} + ({}^tac_j^l - {}^{t-1}a_j^l) \cdot \sigma'({}^tZu_j^l) "
    r"\cdot WXu_{ji}^{l-1} \right) + [l-1 \text{ is a GRN layer}, t < T] "
    r"\frac{\partial C}{\partial^{t+1} a_i^{l-1}} \left( (1 - {}^{t+1}\Gamma_i^{l-1}) "
    r"+ {}^{t+1}\Gamma_i^{l-1} \cdot \tanh'({}^{t+1}Zc_i^{l-1}) \cdot WTc_i^{l-1} "
    r"+ ({}^{t+1}ac_i^{l-1} - {}^{t}a_i^{l-1}) \cdot \sigma'({}^{t+1}Zu_i^{l-1}) "
    r"\cdot WTu_i^{l-1} \right)"
)

_PREVIOUS_CORRECTED = (
    r"\frac{\partial C}{\partial^{t-1} a_j^l} = \frac{\partial C}{\partial^t a_j^l} "
    r"\left( (1 - {}^t\Gamma_j^l) + {}^t\Gamma_j^l \cdot \tanh'({}^tZc_j^l) \cdot WTc_j^l "
    r"+ ({}^tac_j^l - {}^{t-1}a_j^l) \cdot \sigma'({}^tZu_j^l) \cdot WTu_j^l \right) "
    r"+ [t \ge 2] \begin{cases} 2({}^{t-1}a_j^l - {}^{t-1}y_j) & l = L \\ "
    r"\sum_{k=0}^{n^{l+1}-1} \frac{\partial C}{\partial^{t-1} a_k^{l+1}} \left( "
    r"{}^{t-1}\Gamma_k^{l+1} \cdot \tanh'({}^{t-1}Zc_k^{l+1}) \cdot WXc_{kj}^{l} "
    r"+ ({}^{t-1}ac_k^{l+1} - {}^{t-2}a_k^{l+1}) \cdot \sigma'({}^{t-1}Zu_k^{l+1}) "
    r"\cdot WXu_{kj}^{l} \right) & l < L \end{cases}"
)

_ADJOINT_NOTE = (
    r" \quad \text{with } \frac{\partial C}{\partial^t a} \text{ the total derivative "
    r"(at the top layer } 2({}^ta - {}^ty) \text{ plus the path through } {}^{t+1}a \text{)}"
)


def _param_fix(id_: str, line: int, latex: str, models, indices, wrt, term) -> Formula:
    # The corrected form of a per-step parameter formula: its step-t term summed over t.
    return Formula(
        id=f"{id_}.corrected",
        line=line,
        last=line,
        models=models,
        indices=indices,
        wrt=wrt,
        readings={"corrected": lambda c, **k: _sum_t(c, lambda t: term(c, t=t, **k))},
        latex=latex + _ADJOINT_NOTE,
    )


def _input_fix(id_: str, line: int) -> Formula:
    return Formula(
        id=f"{id_}.corrected",
        line=line,
        last=line,
        models=_grn_all,
        indices=_grn_inputs,
        wrt=lambda t, l, i: a(t, l - 1, i),
        readings={"corrected": _input_adjoint},
        latex=_INPUT_CORRECTED,
    )


def _previous_fix(id_: str, line: int) -> Formula:
    return Formula(
        id=f"{id_}.corrected",
        line=line,
        last=line,
        models=_grn_all,
        indices=_grn_units,
        wrt=lambda t, l, j: a(t - 1, l, j),
        readings={"corrected": _previous_adjoint},
        latex=_PREVIOUS_CORRECTED,
    )


_MLP_ADJOINT_CORRECTED = (
    r"\frac{\partial C}{\partial a_i^l} = \sum_{j=0}^{n^{l+1}-1} \sigma'(z_j^{l+1})W_{ji}^l "
    r"\frac{\partial C}{\partial a_j^{l+1}} \quad (n^{l+1} \text{ neurons in layer } l+1)"
)


# ------------------------------------------------------------ MLP (lines 11-40)


def _sigmoid_prime(formula: Formula) -> Finding:
    """Paper line 19: sigma'(x) = sigma(x)(1 - sigma(x)), sigma as defined on line 18."""
    x = sp.Symbol("x", real=True)
    s = 1 / (1 + sp.exp(-x))  # line 18
    exact = sp.cancel(sp.diff(s, x) - s * (1 - s)) == 0  # a rational function of e^-x
    ref = PRIMITIVES["sigmoid"].reference
    xs = [-6.0 + 0.75 * k for k in range(17)]
    h = 1e-6
    errors = [
        relative_difference((ref(v + h) - ref(v - h)) / (2 * h), ref(v) * (1 - ref(v))) for v in xs
    ]
    checks = [
        "exact: d/dx 1/(1+e^{-x}) - sigma(1-sigma) cancels to 0 (sympy.cancel in e^{-x})",
        f"FD of the NumPy sigmoid at {len(xs)} points in [-6, 6]: max rel err {max(errors):.1e}",
        *(f"primitives: {line}" for line in check_primitive_rules()),
    ]
    verdict = HOLDS if exact and max(errors) < FD_TOLERANCE else UNDECIDED
    return Finding(
        formula.id, formula.line, formula.source, verdict, checks=checks, file=PAPER_FILE
    )


def _mlp_neurons_below_top(shape: Shape) -> list[dict]:
    return [{"l": l, "i": i} for l in range(shape.L) for i in range(shape.n(l))]


def _mlp_adjoint(c: Context, l: int, i: int, last: int):
    # Line 38: sum_{j=0}^{last} sigma'(z_j^{l+1}) W_{ji}^l dC/da_j^{l+1}.
    return sum(
        sp_(c, z(l + 1, j)) * c.v(W(l, j, i)) * c.dC(a(l + 1, j)) for j in range(0, last + 1)
    )


def _mlp_last_layer() -> list[Formula]:
    """Lines 19-23: sigma', then the last layer of the worked example."""
    return [
        Formula("mlp.sigmoid_prime", 19, 19, custom=_sigmoid_prime),
        Formula(
            "mlp.dC_dW1_00.chain",
            20,
            20,
            _mlp_example,
            wrt=lambda: W(1, 0, 0),
            readings={
                "as printed": lambda c: (
                    c.dC(a(2, 0)) * d(c, a(2, 0), z(2, 0)) * d(c, z(2, 0), W(1, 0, 0))
                )
            },
        ),
        Formula(
            "mlp.dC_dW1_00.value",
            21,
            21,
            _mlp_example,
            wrt=lambda: W(1, 0, 0),
            readings={
                "as printed": lambda c: (
                    2 * (c.v(a(2, 0)) - c.v(y(0))) * sp_(c, z(2, 0)) * c.v(a(1, 0))
                )
            },
        ),
        Formula(
            "mlp.dC_dB2_1.chain",
            22,
            22,
            _mlp_example,
            wrt=lambda: B(2, 1),
            readings={
                "as printed": lambda c: (
                    c.dC(a(2, 1)) * d(c, a(2, 1), z(2, 1)) * d(c, z(2, 1), B(2, 1))
                )
            },
        ),
        Formula(
            "mlp.dC_dB2_1.value",
            23,
            23,
            _mlp_example,
            wrt=lambda: B(2, 1),
            readings={"as printed": lambda c: 2 * (c.v(a(2, 1)) - c.v(y(1))) * sp_(c, z(2, 1)) * 1},
        ),
    ]


def _mlp_first_layer_paths() -> list[Formula]:
    """Lines 27-30: a weight of the first layer, through both outputs."""
    return [
        Formula(
            "mlp.dC_dW0_11.paths",
            27,
            28,
            _mlp_example,
            wrt=lambda: W(0, 1, 1),
            readings={
                "as printed": lambda c: sum(
                    c.dC(a(2, k))
                    * d(c, a(2, k), z(2, k))
                    * d(c, z(2, k), a(1, 1))
                    * d(c, a(1, 1), z(1, 1))
                    * d(c, z(1, 1), W(0, 1, 1))
                    for k in (0, 1)
                )
            },
        ),
        Formula(
            "mlp.dC_dW0_11.factored",
            29,
            29,
            _mlp_example,
            wrt=lambda: W(0, 1, 1),
            readings={
                "as printed": lambda c: (
                    (d(c, a(1, 1), z(1, 1)) * d(c, z(1, 1), W(0, 1, 1)))
                    * (
                        c.dC(a(2, 0)) * d(c, a(2, 0), z(2, 0)) * d(c, z(2, 0), a(1, 1))
                        + c.dC(a(2, 1)) * d(c, a(2, 1), z(2, 1)) * d(c, z(2, 1), a(1, 1))
                    )
                )
            },
        ),
        Formula(
            "mlp.dC_dW0_11.value",
            30,
            30,
            _mlp_example,
            wrt=lambda: W(0, 1, 1),
            readings={
                "as printed": lambda c: (
                    sp_(c, z(1, 1))
                    * c.v(a(0, 1))
                    * (
                        2 * (c.v(a(2, 0)) - c.v(y(0))) * sp_(c, z(2, 0)) * c.v(W(1, 0, 1))
                        + 2 * (c.v(a(2, 1)) - c.v(y(1))) * sp_(c, z(2, 1)) * c.v(W(1, 1, 1))
                    )
                )
            },
        ),
    ]


def _mlp_first_layer_adjoint() -> list[Formula]:
    """Lines 31-34: the same weight (and a bias) through the adjoint dC/da_1^1."""
    return [
        Formula(
            "mlp.dC_dW0_11.through_a",
            31,
            31,
            _mlp_example,
            wrt=lambda: W(0, 1, 1),
            readings={"as printed": lambda c: d(c, a(1, 1), W(0, 1, 1)) * c.dC(a(1, 1))},
        ),
        Formula(
            "mlp.dC_da1_1.value",
            32,
            32,
            _mlp_example,
            wrt=lambda: a(1, 1),
            readings={
                "as printed": lambda c: sum(
                    2 * (c.v(a(2, j)) - c.v(y(j))) * sp_(c, z(2, j)) * c.v(W(1, j, 1))
                    for j in range(0, 1 + 1)
                )
            },
        ),
        Formula(
            "mlp.dC_dW0_11.adjoint",
            33,
            33,
            _mlp_example,
            wrt=lambda: W(0, 1, 1),
            readings={"as printed": lambda c: sp_(c, z(1, 1)) * c.v(a(0, 1)) * c.dC(a(1, 1))},
        ),
        Formula(
            "mlp.dC_dB1_1.adjoint",
            34,
            34,
            _mlp_example,
            wrt=lambda: B(1, 1),
            readings={"as printed": lambda c: sp_(c, z(1, 1)) * 1 * c.dC(a(1, 1))},
        ),
    ]


def _mlp_general() -> list[Formula]:
    """Lines 38-40: the general recursions, every layer of every size."""
    return [
        Formula(
            "mlp.dC_da.recursion",
            38,
            38,
            _mlp_all,
            indices=_mlp_neurons_below_top,
            wrt=lambda l, i: a(l, i),
            readings={
                "n^{l+1} is the last index of layer l+1": lambda c, l, i: _mlp_adjoint(
                    c, l, i, c.shape.n(l + 1) - 1
                ),
                "n^{l+1} is the number of neurons of layer l+1": lambda c, l, i: _mlp_adjoint(
                    c, l, i, c.shape.n(l + 1)
                ),
            },
            corrected=_MLP_ADJOINT_CORRECTED,
            fix=Formula(
                "mlp.dC_da.recursion.corrected",
                38,
                38,
                _mlp_all,
                indices=_mlp_neurons_below_top,
                wrt=lambda l, i: a(l, i),
                readings={"corrected": lambda c, l, i: _mlp_adjoint(c, l, i, c.shape.n(l + 1) - 1)},
                latex=_MLP_ADJOINT_CORRECTED,
            ),
        ),
        Formula(
            "mlp.dC_dW.general",
            39,
            39,
            _mlp_all,
            indices=lambda s: [
                {"l": l, "j": j, "i": i}
                for l in range(s.L)
                for j in range(s.n(l + 1))
                for i in range(s.n(l))
            ],
            wrt=lambda l, j, i: W(l, j, i),
            readings={
                "as printed": lambda c, l, j, i: (
                    sp_(c, z(l + 1, j)) * c.v(a(l, i)) * c.dC(a(l + 1, j))
                )
            },
        ),
        Formula(
            "mlp.dC_dB.general",
            40,
            40,
            _mlp_all,
            indices=lambda s: [{"l": l, "i": i} for l in range(1, s.L + 1) for i in range(s.n(l))],
            wrt=lambda l, i: B(l, i),
            readings={"as printed": lambda c, l, i: sp_(c, z(l, i)) * 1 * c.dC(a(l, i))},
        ),
    ]


# ------------------------------------------------------------ GRN (lines 43-112)

L2 = 2  # the layer of lines 60-77: neuron 0 of layer 2, the cost layer

# Lines 60-77: the per-step terms of neuron 0 of layer 2.


def _wtc2(c: Context, t: int):
    return _adj(c, t, L2, 0) * _c_path(c, t, L2, 0) * c.v(a(t - 1, L2, 0))


def _wtu2(c: Context, t: int):
    return _adj(c, t, L2, 0) * _u_path(c, t, L2, 0) * c.v(a(t - 1, L2, 0))


def _bc2(c: Context, t: int):
    return _adj(c, t, L2, 0) * _c_path(c, t, L2, 0)


def _bu2(c: Context, t: int):
    return _adj(c, t, L2, 0) * _u_path(c, t, L2, 0)


def _fix2(name: str, line: int, latex: str, term) -> Formula:
    # The corrected form of a per-step formula of neuron 0 of layer 2.
    return _param_fix(
        f"grn.dC_d{name}2_0", line, latex, _grn_top2, lambda s: [{}], lambda: P(name, L2, 0), term
    )


def _per_step(id_: str, line: int, name: str, reading, fix: Formula, note: str = "") -> Formula:
    # A formula of neuron 0 of layer 2 at step t, its left side a parameter.
    return Formula(
        id_,
        line,
        line,
        _grn_top2,
        _steps,
        wrt=lambda t: P(name, L2, 0),
        readings={"as printed": reading},
        corrected=fix.latex,
        fix=fix,
        note=note,
    )


# Lines 80-104: the general layer l, neuron j (and i of layer l-1).


def _wxu(c: Context, t: int, l: int, j: int, i: int):
    return _adj(c, t, l, j) * _u_path(c, t, l, j) * c.v(a(t, l - 1, i))


def _wxc(c: Context, t: int, l: int, j: int, i: int):
    return _adj(c, t, l, j) * _c_path(c, t, l, j) * c.v(a(t, l - 1, i))


def _bc(c: Context, t: int, l: int, j: int):
    return _adj(c, t, l, j) * _c_path(c, t, l, j) * 1


def _bu(c: Context, t: int, l: int, j: int):
    return _adj(c, t, l, j) * _u_path(c, t, l, j) * 1


def _wtc(c: Context, t: int, l: int, j: int):
    return _adj(c, t, l, j) * _c_path(c, t, l, j) * c.v(a(t - 1, l, j))


def _wtu(c: Context, t: int, l: int, j: int):
    return _adj(c, t, l, j) * _u_path(c, t, l, j) * c.v(a(t - 1, l, j))


def _general(
    id_: str, line: int, name: str, term, latex: str, weights: bool = False, note: str = ""
) -> Formula:
    # A parameter's formula at step t for every neuron j of every layer l (and neuron i
    # of layer l-1 for the input weights), with its corrected form summed over t.
    indices = _grn_weights if weights else _grn_units

    def wrt(t=None, l=None, j=None, i=None):
        return P(name, l - 1, j, i) if weights else P(name, l, j)

    fix = _param_fix(id_, line, latex, _grn_all, lambda s: indices(s, with_t=False), wrt, term)
    return Formula(
        id_,
        line,
        line,
        _grn_all,
        indices,
        wrt=wrt,
        readings={"as printed": term},
        corrected=fix.latex,
        fix=fix,
        note=note,
    )


_SPELLED = "{0} is read as {1}, the only parameter of that name."
_WXC_NOTE = _SPELLED.format("WXC", "WXc")


def _grn_top_recurrent_weights() -> list[Formula]:
    """Lines 60-67: dC/dWTc_0^2 and dC/dWTu_0^2, at step t."""
    wtc2_fix = _fix2(
        "WTc",
        60,
        r"\frac{\partial C}{\partial WTc_0^2} = \sum_{t=1}^{T} "
        r"\frac{\partial C}{\partial^t a_0^2} \cdot {}^t \Gamma_0^2 \cdot "
        r"\tanh'({}^t Zc_0^2) \cdot {}^{t-1} a_0^2",
        _wtc2,
    )
    wtu2_fix = _fix2(
        "WTu",
        66,
        r"\frac{\partial C}{\partial WTu_0^2} = \sum_{t=1}^{T} "
        r"\frac{\partial C}{\partial^t a_0^2} \cdot ({}^t ac_0^2 - {}^{t-1} a_0^2) \cdot "
        r"\sigma'({}^t Zu_0^2) \cdot {}^{t-1} a_0^2",
        _wtu2,
    )
    return [
        # Lines 60-62.
        _per_step(
            "grn.dC_dWTc2_0.chain",
            60,
            "WTc",
            lambda c, t: (
                c.dC(a(t, L2, 0))
                * d(c, a(t, L2, 0), ac(t, L2, 0))
                * d(c, ac(t, L2, 0), Zc(t, L2, 0))
                * d(c, Zc(t, L2, 0), P("WTc", L2, 0))
            ),
            wtc2_fix,
        ),
        _per_step(
            "grn.dC_dWTc2_0.cost_term",
            61,
            "WTc",
            lambda c, t: (
                2
                * (c.v(a(t, L2, 0)) - c.v(y(t, 0)))
                * c.v(G(t, L2, 0))
                * c.tanh_prime(c.v(Zc(t, L2, 0)))
                * c.v(a(t - 1, L2, 0))
            ),
            wtc2_fix,
            note="y_0 is read as the target of step t, {}^t y_0.",
        ),
        _per_step("grn.dC_dWTc2_0.value", 62, "WTc", _wtc2, wtc2_fix),
        # Lines 66-67.
        _per_step(
            "grn.dC_dWTu2_0.chain",
            66,
            "WTu",
            lambda c, t: (
                c.dC(a(t, L2, 0))
                * d(c, a(t, L2, 0), G(t, L2, 0))
                * d(c, G(t, L2, 0), Zu(t, L2, 0))
                * d(c, Zu(t, L2, 0), P("WTu", L2, 0))
            ),
            wtu2_fix,
        ),
        _per_step("grn.dC_dWTu2_0.value", 67, "WTu", _wtu2, wtu2_fix),
    ]


def _grn_top_biases() -> list[Formula]:
    """Lines 71-77: dC/dBc_0^2 and dC/dBu_0^2, at step t."""
    bc2_fix = _fix2(
        "Bc",
        71,
        r"\frac{\partial C}{\partial Bc_0^2} = \sum_{t=1}^{T} "
        r"\frac{\partial C}{\partial^t a_0^2} \cdot {}^t \Gamma_0^2 \cdot "
        r"\tanh'({}^t Zc_0^2)",
        _bc2,
    )
    bu2_fix = _fix2(
        "Bu",
        76,
        r"\frac{\partial C}{\partial Bu_0^2} = \sum_{t=1}^{T} "
        r"\frac{\partial C}{\partial^t a_0^2} \cdot ({}^t ac_0^2 - {}^{t-1} a_0^2) \cdot "
        r"\sigma'({}^t Zu_0^2)",
        _bu2,
    )
    return [
        # Lines 71-72.
        _per_step(
            "grn.dC_dBc2_0.chain",
            71,
            "Bc",
            lambda c, t: (
                c.dC(a(t, L2, 0))
                * d(c, a(t, L2, 0), ac(t, L2, 0))
                * d(c, ac(t, L2, 0), Zc(t, L2, 0))
                * d(c, Zc(t, L2, 0), P("Bc", L2, 0))
            ),
            bc2_fix,
        ),
        _per_step("grn.dC_dBc2_0.value", 72, "Bc", lambda c, t: _bc2(c, t) * 1, bc2_fix),
        # Lines 76-77.
        _per_step(
            "grn.dC_dBu2_0.chain",
            76,
            "Bu",
            lambda c, t: (
                c.dC(a(t, L2, 0))
                * d(c, a(t, L2, 0), G(t, L2, 0))
                * d(c, G(t, L2, 0), Zu(t, L2, 0))
                * d(c, Zu(t, L2, 0), P("Bu", L2, 0))
            ),
            bu2_fix,
        ),
        _per_step("grn.dC_dBu2_0.value", 77, "Bu", lambda c, t: _bu2(c, t) * 1, bu2_fix),
    ]


def _grn_input_weights() -> list[Formula]:
    """Lines 80-82: the input weights of neuron j of layer l."""
    return [
        _general(
            "grn.dC_dWXu.value",
            80,
            "WXu",
            _wxu,
            weights=True,
            latex=(
                r"\frac{\partial C}{\partial WXu_{ji}^{l-1}} = \sum_{t=1}^{T} "
                r"\frac{\partial C}{\partial^t a_j^l} \cdot ({}^t ac_j^l - {}^{t-1} a_j^l) "
                r"\cdot \sigma'({}^t Zu_j^l) \cdot {}^t a_i^{l-1}"
            ),
        ),
        _general(
            "grn.dC_dWXc.value",
            82,
            "WXc",
            _wxc,
            weights=True,
            note=_WXC_NOTE,
            latex=(
                r"\frac{\partial C}{\partial WXc_{ji}^{l-1}} = \sum_{t=1}^{T} "
                r"\frac{\partial C}{\partial^t a_j^l} \cdot {}^t \Gamma_j^l \cdot "
                r"\tanh'({}^t Zc_j^l) \cdot {}^t a_i^{l-1}"
            ),
        ),
    ]


def _grn_input_adjoint() -> list[Formula]:
    """Lines 84-88: dC/d^t a_i^{l-1}, through layer l."""
    input_fix = _input_fix("grn.dC_da_in", 84)
    return [
        # Line 84: dC/d^t a_i^{l-1} through layer l, as a chain rule.
        Formula(
            "grn.dC_da_in.chain",
            84,
            84,
            _grn_all,
            _grn_inputs,
            wrt=lambda t, l, i: a(t, l - 1, i),
            readings={
                "bound l is the layer index, as printed": lambda c, t, l, i: _chain_in(
                    c, t, l, i, l
                ),
                "bound l stands for the last neuron of layer l": lambda c, t, l, i: _chain_in(
                    c, t, l, i, c.shape.n(l) - 1
                ),
            },
            corrected=input_fix.latex,
            fix=input_fix,
            # the layer letter as a unit bound: a symbol against its meaning (fails)
            against=frozenset({"bound l stands for the last neuron of layer l"}),
        ),
        # Lines 87-88: the same, evaluated, with dC/d^t a_j^l outside the sum over j.
        Formula(
            "grn.dC_da_in.value",
            87,
            88,
            _grn_all,
            _grn_inputs,
            wrt=lambda t, l, i: a(t, l - 1, i),
            readings={
                "bound l is the layer index, as printed": lambda c, t, l, i, j: (
                    _adj(c, t, l, j) * _factor_in(c, t, l, i, l)
                ),
                "bound l stands for the last neuron of layer l": lambda c, t, l, i, j: (
                    _adj(c, t, l, j) * _factor_in(c, t, l, i, c.shape.n(l) - 1)
                ),
            },
            free={"j": _neurons_of_l},
            corrected=input_fix.latex,
            fix=input_fix,
            note=_WXC_NOTE,
            against=frozenset({"bound l stands for the last neuron of layer l"}),
        ),
    ]


def _grn_previous_adjoint() -> list[Formula]:
    """Lines 91-95: dC/d^{t-1} a_j^l, through step t."""
    previous_fix = _previous_fix("grn.dC_da_prev", 91)
    return [
        # Line 91: dC/d^{t-1} a_j^l through step t, as a chain rule.
        Formula(
            "grn.dC_da_prev.chain",
            91,
            91,
            _grn_all,
            _grn_units,
            wrt=lambda t, l, j: a(t - 1, l, j),
            readings={
                "as printed": lambda c, t, l, j: (
                    c.dC(a(t, l, j))
                    * (
                        d(c, a(t, l, j), a(t - 1, l, j))
                        + d(c, a(t, l, j), ac(t, l, j))
                        * d(c, ac(t, l, j), Zc(t, l, j))
                        * d(c, Zc(t, l, j), a(t - 1, l, j))
                        + d(c, a(t, l, j), G(t, l, j))
                        * d(c, G(t, l, j), Zu(t, l, j))
                        * d(c, Zu(t, l, j), a(t - 1, l, j))
                    )
                )
            },
            corrected=previous_fix.latex,
            fix=previous_fix,
        ),
        # Lines 94-95: the same, evaluated; the bracket closes before the WTu term.
        Formula(
            "grn.dC_da_prev.value",
            94,
            95,
            _grn_all,
            _grn_units,
            wrt=lambda t, l, j: a(t - 1, l, j),
            readings={"as printed": _prev_early_close},
            corrected=previous_fix.latex,
            fix=previous_fix,
        ),
    ]


def _grn_restated_parameters() -> list[Formula]:
    """Lines 98-104: the parameters' formulas restated for neuron j of layer l."""
    return [
        _general(
            "grn.dC_dBc.restated",
            98,
            "Bc",
            _bc,
            latex=(
                r"\frac{\partial C}{\partial Bc_j^l} = \sum_{t=1}^{T} "
                r"\frac{\partial C}{\partial^t a_j^l} \cdot {}^t\Gamma_j^l \cdot "
                r"\tanh'({}^tZc_j^l)"
            ),
        ),
        _general(
            "grn.dC_dBu.restated",
            100,
            "Bu",
            _bu,
            latex=(
                r"\frac{\partial C}{\partial Bu_j^l} = \sum_{t=1}^{T} "
                r"\frac{\partial C}{\partial^t a_j^l} \cdot ({}^tac_j^l - {}^{t-1}a_j^l) "
                r"\cdot \sigma'({}^tZu_j^l)"
            ),
        ),
        _general(
            "grn.dC_dWTc.restated",
            102,
            "WTc",
            _wtc,
            note=_SPELLED.format("WTC", "WTc"),
            latex=(
                r"\frac{\partial C}{\partial WTc_j^l} = \sum_{t=1}^{T} "
                r"\frac{\partial C}{\partial^t a_j^l} \cdot {}^t\Gamma_j^l \cdot "
                r"\tanh'({}^tZc_j^l) \cdot {}^{t-1}a_j^l"
            ),
        ),
        _general(
            "grn.dC_dWTu.restated",
            104,
            "WTu",
            _wtu,
            note=_SPELLED.format("WTU", "WTu"),
            latex=(
                r"\frac{\partial C}{\partial WTu_j^l} = \sum_{t=1}^{T} "
                r"\frac{\partial C}{\partial^t a_j^l} \cdot ({}^tac_j^l - {}^{t-1}a_j^l) "
                r"\cdot \sigma'({}^tZu_j^l) \cdot {}^{t-1}a_j^l"
            ),
        ),
    ]


def _grn_restated_adjoints() -> list[Formula]:
    """Lines 106-112: lines 87 and 94 restated, each over two displays."""
    input_fix = _input_fix("grn.dC_da_in", 84)
    previous_fix = _previous_fix("grn.dC_da_prev", 91)
    return [
        # Lines 106-108: line 87 restated over two displays, bound n^l.
        Formula(
            "grn.dC_da_in.restated",
            106,
            108,
            _grn_all,
            _grn_inputs,
            wrt=lambda t, l, i: a(t, l - 1, i),
            readings={
                "n^l is the last index of layer l": lambda c, t, l, i, j: (
                    _adj(c, t, l, j) * _factor_in(c, t, l, i, c.shape.n(l) - 1)
                ),
                "n^l is the number of neurons of layer l": lambda c, t, l, i, j: (
                    _adj(c, t, l, j) * _factor_in(c, t, l, i, c.shape.n(l))
                ),
            },
            free={"j": _neurons_of_l},
            corrected=input_fix.latex,
            fix=input_fix,
            note=_WXC_NOTE,
            against=frozenset({"bound l stands for the last neuron of layer l"}),
        ),
        # Lines 110-112: line 94 restated over two displays.
        Formula(
            "grn.dC_da_prev.restated",
            110,
            112,
            _grn_all,
            _grn_units,
            wrt=lambda t, l, j: a(t - 1, l, j),
            readings={
                "the first display's last ')' closes the bracket, as in line 94": _prev_early_close,
                "the second display's stray ')' closes the bracket": lambda c, t, l, j: (
                    c.dC(a(t, l, j)) * _one_step(c, t, l, j)
                ),
            },
            corrected=previous_fix.latex,
            fix=previous_fix,
            note=_SPELLED.format("WTC", "WTc") + " " + _SPELLED.format("WTU", "WTu"),
        ),
    ]


# ------------------------------------------------------------------ the paper


def _lhs_kind(formula: Formula) -> str:
    # What the left side differentiates by, from its key at the first index values.
    model = formula.models()[0]
    idx = formula.indices(model.shape)[0]
    key = formula.wrt(**idx)
    if time_of(key) is None:
        return "parameter"
    return "input" if key[1] == idx["t"] else "previous"


_LOCAL_DETAIL = {
    ("step", "parameter"): (
        "The formula is the contribution of time step t alone (it is the total derivative "
        "at T = 1). The parameter is shared by all steps: the total derivative is the sum "
        "over t = 1..T of this term, with dC/d^t a the total adjoint (which includes the "
        "path through ^{t+1}a)."
    ),
    ("direct", "parameter"): (
        "The formula is the single path from step t's use of the parameter to the cost of "
        "step t (it is the total derivative at T = 1). The total replaces 2(^ta - ^ty) by "
        "the total adjoint dC/d^t a, which adds the path through ^{t+1}a, and sums over "
        "t = 1..T."
    ),
    ("step", "input"): (
        "The formula is the path through layer l at step t. Where layer l-1 is itself a "
        "GRN layer, the total adds, for t < T, the path through that layer's own next "
        "step: dC/d^{t+1}a_i^{l-1} times d^{t+1}a_i^{l-1}/d^t a_i^{l-1}."
    ),
    ("step", "previous"): (
        "The formula is the path through step t (it is the total derivative at t = 1, "
        "where ^0 a is the initial state). For t >= 2 the total adds the direct cost term "
        "2(^{t-1}a_j^l - ^{t-1}y_j) at the top layer or, below it, the paths through layer "
        "l+1 at step t-1."
    ),
}


def _local_detail(formula: Formula, r: ReadingResult) -> str:
    # What a formula that holds locally leaves out of the total derivative.
    detail = _LOCAL_DETAIL[r.notion, _lhs_kind(formula)]
    if r.last_step:
        detail += (
            " At the last step t = T it is the whole contribution of step T (there "
            "dC/d^T a = 2(^T a - ^T y))."
        )
    return detail


def _transcription() -> list[Formula]:
    # Every derivative formula of the paper, in the paper's order.
    return [
        *_mlp_last_layer(),
        *_mlp_first_layer_paths(),
        *_mlp_first_layer_adjoint(),
        *_mlp_general(),
        *_grn_top_recurrent_weights(),
        *_grn_top_biases(),
        *_grn_input_weights(),
        *_grn_input_adjoint(),
        *_grn_previous_adjoint(),
        *_grn_restated_parameters(),
        *_grn_restated_adjoints(),
    ]


PAPER = Paper(PAPER_FILE, paper_lines, _transcription, _local_detail)
"""The paper as the engine checks it."""


def formulas() -> tuple[Formula, ...]:
    """Every derivative formula of the paper, in the paper's order."""
    return PAPER.formulas()


def formula(formula_id: str) -> Formula:
    """A formula of the paper, or a corrected form (``<id>.corrected``), by id."""
    return PAPER.formula(formula_id)


def verify_formula(formula_id: str) -> Finding:
    """The finding for one formula or corrected form (computed once; a fresh copy)."""
    return PAPER.verify_formula(formula_id)


def verify_paper() -> list[Finding]:
    """Check every derivative formula of the paper, in the paper's order.

    Returns:
        One :class:`~symbolic.verify.verdict.Finding` per formula, its verdict computed by
        the exact and numeric checks (:mod:`symbolic.verify.engine`), with the corrected
        formula (itself verified) for every verdict but ``holds``.
    """
    return PAPER.verify()
