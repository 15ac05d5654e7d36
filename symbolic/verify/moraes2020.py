"""Every derivative formula of "Neural Networks Derivatives" (W. Moraes, 2020), checked.

The paper ships with the package (``symbolic/papers/neural-networks-derivatives.md``,
byte for byte the shared copy); every :class:`Formula` below names the line on which
it starts there, and its ``source`` is the text of its lines exactly as printed. Hold
this module next to the paper: the formulas come in the paper's order, one entry per
chain-rule row, per ``&=`` row of an aligned block (with its ``&+`` / ``&\\quad +``
continuation rows) and per restatement. Plain definitions (C, a = sigma(z), z, sigma,
the GRN forward equations) are the models of :mod:`symbolic.verify.unrolled`, not formulas.

A formula is transcribed as one or more *readings* (where the notation allows several),
each a function of a context (:class:`~symbolic.verify.unrolled.SymbolicContext`, exact, or
:class:`~symbolic.verify.unrolled.NumericContext`, finite differences) and the formula's
indices. Its left side is always dC/d(something): ``wrt`` names that something.

:func:`verify_paper` computes each verdict (vocabulary in :mod:`symbolic.verify.verdict`):

- ``holds``: every reading equals the total derivative exactly, on every concrete
  model the formula speaks of (several sizes; T = 1, 2, 3; stacked GRN layers where it
  speaks of layer l-1), and finite differences agree at random points (rel. err < 1e-6).
- ``holds-locally``: not the total derivative, but exactly the contribution of time
  step t alone (the value perturbed only in step t's equations), or the single path
  from step t to the cost of step t; ``detail`` says what the total adds.
- ``ambiguous``: readings disagree; ``detail`` says which hold.
- ``fails``: no reading holds; ``counterexample`` has the point and both values.
- ``ill-formed``: a display with unbalanced brackets (counted in the LaTeX source), or
  a free index (the right side changes when it varies).

Every verdict but ``holds`` carries a corrected formula, itself verified as ``holds``
by the same checks.
"""

# ruff: noqa: E741 (l is the paper's layer index throughout)

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from importlib import resources

import sympy as sp

from symbolic.primitives import PRIMITIVES
from symbolic.verify.unrolled import (
    COST,
    Context,
    Key,
    NoSuchNeuron,
    NumericContext,
    Shape,
    SymbolicContext,
    Unrolled,
    check_primitive_rules,
    grn,
    label,
    mlp,
    time_of,
)
from symbolic.verify.verdict import (
    AMBIGUOUS,
    FAILS,
    HOLDS,
    HOLDS_LOCALLY,
    ILL_FORMED,
    UNDECIDED,
    Finding,
)

PAPER_FILE = "symbolic/papers/neural-networks-derivatives.md"
FD_TOLERANCE = 1e-6  # a formula that holds agrees with finite differences this well
FD_FLOOR = 1e-2  # derivatives smaller than this are compared in absolute terms
DIFFERENT = 1e-4  # a counterexample differs by more than this (relative)
SEEDS = (1, 2)  # random points per model for the numeric confirmations


@functools.cache
def paper_lines() -> tuple[str, ...]:
    """The paper's lines (``paper_lines()[k - 1]`` is line ``k``), from package data."""
    path = resources.files("symbolic").joinpath("papers", "neural-networks-derivatives.md")
    return tuple(path.read_text(encoding="utf-8").split("\n"))


# ------------------------------------------------------------------------ formulas

Reading = Callable[..., object]
"""``(ctx, **indices) -> value``: the right side of a formula in one reading."""


@dataclass(frozen=True)
class Formula:
    """One derivative formula as printed, with its transcription.

    Attributes:
        id: Stable identifier, ``<part>.<dC_d quantity>.<form>``.
        line: The line its first row starts on (1-based, in the packaged paper).
        last: The line its last row ends on (continuation rows and split displays).
        models: The concrete models it speaks of.
        indices: For a model's shape, the index values to check (``t`` is the time step
            the formula is stated at; the others are those of its left side).
        wrt: ``(**indices) -> key``: the left side is dC/d(key).
        readings: Reading name -> transcription of the right side.
        free: Free indices of the printed right side -> their range on a shape.
        corrected: The corrected formula (LaTeX), for formulas that do not hold.
        fix: The corrected formula transcribed (a :class:`Formula`, itself checked).
        note: How the notation was read (spellings, implied superscripts).
        latex: The source when it is not the paper's text (corrected forms).
        custom: A check of its own (for sigma', which is not a derivative of C).
    """

    id: str
    line: int
    last: int
    models: Callable[[], list[Unrolled]] = lambda: []
    indices: Callable[[Shape], list[dict]] = lambda shape: [{}]
    wrt: Callable[..., Key] | None = None
    readings: Mapping[str, Reading] = field(default_factory=dict)
    free: Mapping[str, Callable[[Shape, dict], range]] = field(default_factory=dict)
    corrected: str | None = None
    fix: Formula | None = None
    note: str = ""
    latex: str | None = None
    custom: Callable[[Formula], Finding] | None = None

    @property
    def source(self) -> str:
        """The formula exactly as printed (its lines of the paper, joined by newlines)."""
        if self.latex is not None:
            return self.latex
        return "\n".join(paper_lines()[self.line - 1 : self.last])


# Keys in the paper's notation (see symbolic.verify.unrolled), so that a transcription reads
# like the paper: c.v(a(2, 0)) is a_0^2, c.dC(W(1, 0, 0)) is dC/dW_{00}^1.


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


# ------------------------------------------------------------ the formulas, in order


def _sigmoid_prime(formula: Formula) -> Finding:
    """Paper line 19: sigma'(x) = sigma(x)(1 - sigma(x)), sigma as defined on line 18."""
    x = sp.Symbol("x", real=True)
    s = 1 / (1 + sp.exp(-x))  # line 18
    exact = sp.cancel(sp.diff(s, x) - s * (1 - s)) == 0  # a rational function of e^-x
    ref = PRIMITIVES["sigmoid"].reference
    xs = [-6.0 + 0.75 * k for k in range(17)]
    h = 1e-6
    errors = [_rel((ref(v + h) - ref(v - h)) / (2 * h), ref(v) * (1 - ref(v))) for v in xs]
    checks = [
        "exact: d/dx 1/(1+e^{-x}) - sigma(1-sigma) cancels to 0 (sympy.cancel in e^{-x})",
        f"FD of the NumPy sigmoid at {len(xs)} points in [-6, 6]: max rel err {max(errors):.1e}",
        *(f"primitives: {line}" for line in check_primitive_rules()),
    ]
    verdict = HOLDS if exact and max(errors) < FD_TOLERANCE else UNDECIDED
    return Finding(
        formula.id, formula.line, formula.source, verdict, checks=checks, file=PAPER_FILE
    )


def d(c: Context, u: Key, v: Key):
    """The paper's partial du/dv (see SymbolicContext.d)."""
    return c.d(u, v)


def sp_(c: Context, key: Key):
    """sigma'(key's value), e.g. sigma'(z_0^2)."""
    return c.sigma_prime(c.v(key))


def _mlp_neurons_below_top(shape: Shape) -> list[dict]:
    return [{"l": l, "i": i} for l in range(shape.L) for i in range(shape.n(l))]


def _mlp_adjoint(c: Context, l: int, i: int, last: int):
    # Line 38: sum_{j=0}^{last} sigma'(z_j^{l+1}) W_{ji}^l dC/da_j^{l+1}.
    return sum(
        sp_(c, z(l + 1, j)) * c.v(W(l, j, i)) * c.dC(a(l + 1, j)) for j in range(0, last + 1)
    )


_MLP_ADJOINT_CORRECTED = (
    r"\frac{\partial C}{\partial a_i^l} = \sum_{j=0}^{n^{l+1}-1} \sigma'(z_j^{l+1})W_{ji}^l "
    r"\frac{\partial C}{\partial a_j^{l+1}} \quad (n^{l+1} \text{ neurons in layer } l+1)"
)


def _mlp_formulas() -> list[Formula]:
    ex, all_ = _mlp_example, _mlp_all
    return [
        Formula("mlp.sigmoid_prime", 19, 19, custom=_sigmoid_prime),
        # Lines 20-23: the last layer of the worked example.
        Formula(
            "mlp.dC_dW1_00.chain",
            20,
            20,
            ex,
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
            ex,
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
            ex,
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
            ex,
            wrt=lambda: B(2, 1),
            readings={"as printed": lambda c: 2 * (c.v(a(2, 1)) - c.v(y(1))) * sp_(c, z(2, 1)) * 1},
        ),
        # Lines 27-34: a weight of the first layer, through both outputs.
        Formula(
            "mlp.dC_dW0_11.paths",
            27,
            28,
            ex,
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
            ex,
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
            ex,
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
        Formula(
            "mlp.dC_dW0_11.through_a",
            31,
            31,
            ex,
            wrt=lambda: W(0, 1, 1),
            readings={"as printed": lambda c: d(c, a(1, 1), W(0, 1, 1)) * c.dC(a(1, 1))},
        ),
        Formula(
            "mlp.dC_da1_1.value",
            32,
            32,
            ex,
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
            ex,
            wrt=lambda: W(0, 1, 1),
            readings={"as printed": lambda c: sp_(c, z(1, 1)) * c.v(a(0, 1)) * c.dC(a(1, 1))},
        ),
        Formula(
            "mlp.dC_dB1_1.adjoint",
            34,
            34,
            ex,
            wrt=lambda: B(1, 1),
            readings={"as printed": lambda c: sp_(c, z(1, 1)) * 1 * c.dC(a(1, 1))},
        ),
        # Lines 38-40: the general recursions, every layer of every size.
        Formula(
            "mlp.dC_da.recursion",
            38,
            38,
            all_,
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
                all_,
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
            all_,
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
            all_,
            indices=lambda s: [{"l": l, "i": i} for l in range(1, s.L + 1) for i in range(s.n(l))],
            wrt=lambda l, i: B(l, i),
            readings={"as printed": lambda c, l, i: sp_(c, z(l, i)) * 1 * c.dC(a(l, i))},
        ),
    ]


def _grn_formulas() -> list[Formula]:
    top2, all_ = _grn_top2, _grn_all
    L2 = 2

    # Lines 60-77: per-step terms of neuron 0 of layer 2.
    def wtc2(c, t):
        return _adj(c, t, L2, 0) * _c_path(c, t, L2, 0) * c.v(a(t - 1, L2, 0))

    def wtu2(c, t):
        return _adj(c, t, L2, 0) * _u_path(c, t, L2, 0) * c.v(a(t - 1, L2, 0))

    def bc2(c, t):
        return _adj(c, t, L2, 0) * _c_path(c, t, L2, 0)

    def bu2(c, t):
        return _adj(c, t, L2, 0) * _u_path(c, t, L2, 0)

    def fix2(name, line, latex, term):
        return _param_fix(
            f"grn.dC_d{name}2_0", line, latex, top2, lambda s: [{}], lambda: P(name, L2, 0), term
        )

    wtc2_fix = fix2(
        "WTc",
        60,
        r"\frac{\partial C}{\partial WTc_0^2} = \sum_{t=1}^{T} "
        r"\frac{\partial C}{\partial^t a_0^2} \cdot {}^t \Gamma_0^2 \cdot "
        r"\tanh'({}^t Zc_0^2) \cdot {}^{t-1} a_0^2",
        wtc2,
    )
    wtu2_fix = fix2(
        "WTu",
        66,
        r"\frac{\partial C}{\partial WTu_0^2} = \sum_{t=1}^{T} "
        r"\frac{\partial C}{\partial^t a_0^2} \cdot ({}^t ac_0^2 - {}^{t-1} a_0^2) \cdot "
        r"\sigma'({}^t Zu_0^2) \cdot {}^{t-1} a_0^2",
        wtu2,
    )
    bc2_fix = fix2(
        "Bc",
        71,
        r"\frac{\partial C}{\partial Bc_0^2} = \sum_{t=1}^{T} "
        r"\frac{\partial C}{\partial^t a_0^2} \cdot {}^t \Gamma_0^2 \cdot "
        r"\tanh'({}^t Zc_0^2)",
        bc2,
    )
    bu2_fix = fix2(
        "Bu",
        76,
        r"\frac{\partial C}{\partial Bu_0^2} = \sum_{t=1}^{T} "
        r"\frac{\partial C}{\partial^t a_0^2} \cdot ({}^t ac_0^2 - {}^{t-1} a_0^2) \cdot "
        r"\sigma'({}^t Zu_0^2)",
        bu2,
    )

    def per_step(id_, line, name, reading, fix, note=""):
        return Formula(
            id_,
            line,
            line,
            top2,
            _steps,
            wrt=lambda t: P(name, L2, 0),
            readings={"as printed": reading},
            corrected=fix.latex,
            fix=fix,
            note=note,
        )

    # Lines 80-104: the general layer l, neuron j (and i of layer l-1).
    def wxu(c, t, l, j, i):
        return _adj(c, t, l, j) * _u_path(c, t, l, j) * c.v(a(t, l - 1, i))

    def wxc(c, t, l, j, i):
        return _adj(c, t, l, j) * _c_path(c, t, l, j) * c.v(a(t, l - 1, i))

    def bc(c, t, l, j):
        return _adj(c, t, l, j) * _c_path(c, t, l, j) * 1

    def bu(c, t, l, j):
        return _adj(c, t, l, j) * _u_path(c, t, l, j) * 1

    def wtc(c, t, l, j):
        return _adj(c, t, l, j) * _c_path(c, t, l, j) * c.v(a(t - 1, l, j))

    def wtu(c, t, l, j):
        return _adj(c, t, l, j) * _u_path(c, t, l, j) * c.v(a(t - 1, l, j))

    def general(id_, line, name, term, latex, weights=False, note=""):
        indices = _grn_weights if weights else _grn_units

        def wrt(t=None, l=None, j=None, i=None):
            return P(name, l - 1, j, i) if weights else P(name, l, j)

        fix = _param_fix(id_, line, latex, all_, lambda s: indices(s, with_t=False), wrt, term)
        return Formula(
            id_,
            line,
            line,
            all_,
            indices,
            wrt=wrt,
            readings={"as printed": term},
            corrected=fix.latex,
            fix=fix,
            note=note,
        )

    spelled = "{0} is read as {1}, the only parameter of that name."
    input_fix = _input_fix("grn.dC_da_in", 84)
    previous_fix = _previous_fix("grn.dC_da_prev", 91)
    wxc_note = spelled.format("WXC", "WXc")

    return [
        # Lines 60-62.
        per_step(
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
        per_step(
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
        per_step("grn.dC_dWTc2_0.value", 62, "WTc", wtc2, wtc2_fix),
        # Lines 66-67.
        per_step(
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
        per_step("grn.dC_dWTu2_0.value", 67, "WTu", wtu2, wtu2_fix),
        # Lines 71-72.
        per_step(
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
        per_step("grn.dC_dBc2_0.value", 72, "Bc", lambda c, t: bc2(c, t) * 1, bc2_fix),
        # Lines 76-77.
        per_step(
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
        per_step("grn.dC_dBu2_0.value", 77, "Bu", lambda c, t: bu2(c, t) * 1, bu2_fix),
        # Lines 80, 82: the input weights.
        general(
            "grn.dC_dWXu.value",
            80,
            "WXu",
            wxu,
            weights=True,
            latex=(
                r"\frac{\partial C}{\partial WXu_{ji}^{l-1}} = \sum_{t=1}^{T} "
                r"\frac{\partial C}{\partial^t a_j^l} \cdot ({}^t ac_j^l - {}^{t-1} a_j^l) "
                r"\cdot \sigma'({}^t Zu_j^l) \cdot {}^t a_i^{l-1}"
            ),
        ),
        general(
            "grn.dC_dWXc.value",
            82,
            "WXc",
            wxc,
            weights=True,
            note=wxc_note,
            latex=(
                r"\frac{\partial C}{\partial WXc_{ji}^{l-1}} = \sum_{t=1}^{T} "
                r"\frac{\partial C}{\partial^t a_j^l} \cdot {}^t \Gamma_j^l \cdot "
                r"\tanh'({}^t Zc_j^l) \cdot {}^t a_i^{l-1}"
            ),
        ),
        # Line 84: dC/d^t a_i^{l-1} through layer l, as a chain rule.
        Formula(
            "grn.dC_da_in.chain",
            84,
            84,
            all_,
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
        ),
        # Lines 87-88: the same, evaluated, with dC/d^t a_j^l outside the sum over j.
        Formula(
            "grn.dC_da_in.value",
            87,
            88,
            all_,
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
            note=wxc_note,
        ),
        # Line 91: dC/d^{t-1} a_j^l through step t, as a chain rule.
        Formula(
            "grn.dC_da_prev.chain",
            91,
            91,
            all_,
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
            all_,
            _grn_units,
            wrt=lambda t, l, j: a(t - 1, l, j),
            readings={"as printed": _prev_early_close},
            corrected=previous_fix.latex,
            fix=previous_fix,
        ),
        # Lines 98-104: the restatements for neuron j of layer l.
        general(
            "grn.dC_dBc.restated",
            98,
            "Bc",
            bc,
            latex=(
                r"\frac{\partial C}{\partial Bc_j^l} = \sum_{t=1}^{T} "
                r"\frac{\partial C}{\partial^t a_j^l} \cdot {}^t\Gamma_j^l \cdot "
                r"\tanh'({}^tZc_j^l)"
            ),
        ),
        general(
            "grn.dC_dBu.restated",
            100,
            "Bu",
            bu,
            latex=(
                r"\frac{\partial C}{\partial Bu_j^l} = \sum_{t=1}^{T} "
                r"\frac{\partial C}{\partial^t a_j^l} \cdot ({}^tac_j^l - {}^{t-1}a_j^l) "
                r"\cdot \sigma'({}^tZu_j^l)"
            ),
        ),
        general(
            "grn.dC_dWTc.restated",
            102,
            "WTc",
            wtc,
            note=spelled.format("WTC", "WTc"),
            latex=(
                r"\frac{\partial C}{\partial WTc_j^l} = \sum_{t=1}^{T} "
                r"\frac{\partial C}{\partial^t a_j^l} \cdot {}^t\Gamma_j^l \cdot "
                r"\tanh'({}^tZc_j^l) \cdot {}^{t-1}a_j^l"
            ),
        ),
        general(
            "grn.dC_dWTu.restated",
            104,
            "WTu",
            wtu,
            note=spelled.format("WTU", "WTu"),
            latex=(
                r"\frac{\partial C}{\partial WTu_j^l} = \sum_{t=1}^{T} "
                r"\frac{\partial C}{\partial^t a_j^l} \cdot ({}^tac_j^l - {}^{t-1}a_j^l) "
                r"\cdot \sigma'({}^tZu_j^l) \cdot {}^{t-1}a_j^l"
            ),
        ),
        # Lines 106-108: line 87 restated over two displays, bound n^l.
        Formula(
            "grn.dC_da_in.restated",
            106,
            108,
            all_,
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
            note=wxc_note,
        ),
        # Lines 110-112: line 94 restated over two displays.
        Formula(
            "grn.dC_da_prev.restated",
            110,
            112,
            all_,
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
            note=spelled.format("WTC", "WTc") + " " + spelled.format("WTU", "WTu"),
        ),
    ]


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


@functools.cache
def formulas() -> tuple[Formula, ...]:
    """Every derivative formula of the paper, in the paper's order."""
    return (*_mlp_formulas(), *_grn_formulas())


# ---------------------------------------------------------------------- the checks


def _rel(x: float, ref: float) -> float:
    # Relative difference, measured against max(|x|, |ref|, FD_FLOOR): below the floor
    # a central difference's rounding (eps*|C|/h, about 1e-9 here) dominates any
    # relative figure, so small derivatives are held to an absolute 1e-8 instead.
    return abs(x - ref) / max(abs(x), abs(ref), FD_FLOOR)


def bracket_problems(latex: str) -> list[str]:
    """Unbalanced brackets of each display of ``latex`` (``$$`` separates displays).

    Counts ``(``/``)`` and ``[``/``]`` (``\\left(`` and ``\\right)`` included) and the
    ``\\left``/``\\right`` pairs. Rows of one aligned block are one display: a bracket
    may open on one row and close on the next.

    Returns:
        One sentence per display with a problem; empty when every display balances.
    """
    displays = [part for part in latex.split("$$") if part.strip()]
    problems = []
    for k, display in enumerate(displays, 1):
        stack: list[str] = []
        stray: list[str] = []
        for ch in display:
            if ch in "([":
                stack.append(ch)
            elif ch in ")]":
                if stack and {"(": ")", "[": "]"}[stack[-1]] == ch:
                    stack.pop()
                else:
                    stray.append(ch)
        where = f"display {k} of {len(displays)}" if len(displays) > 1 else "the display"
        if stack:
            problems.append(f"{where} leaves {len(stack)} '{stack[0]}' unclosed")
        if stray:
            problems.append(f"{where} closes {len(stray)} '{stray[0]}' never opened")
        if display.count(r"\left") != display.count(r"\right"):
            problems.append(f"{where} has unpaired \\left/\\right")
    return problems


@dataclass
class ReadingResult:
    """What the checks found for one reading of a formula.

    Attributes:
        name: The reading's name.
        status: ``holds``, ``holds-locally`` or ``fails``.
        notion: For ``holds-locally``: a key of :data:`NOTIONS`.
        checks: Sentences with the figures.
        all_models: Every model it was checked on.
        total_models: Those on which it equals the total derivative everywhere.
        counterexample: A point where it differs from the total derivative.
        missing: A value it asks for that a model does not have.
        last_step: For ``direct``: at t = T it is also the contribution of step T.
        problems: Inconsistencies between the exact and numeric checks.
    """

    name: str
    status: str = FAILS
    notion: str | None = None
    checks: list[str] = field(default_factory=list)
    all_models: list[str] = field(default_factory=list)
    total_models: list[str] = field(default_factory=list)
    counterexample: dict | None = None
    missing: str | None = None
    last_step: bool = False
    problems: list[str] = field(default_factory=list)


NOTIONS: dict[str, str] = {
    "step": "the contribution of time step t alone",
    "direct": "the single path from step t to the cost of step t",
}
"""Local terms a per-step formula may state. Each adds eps to the left side's value only
where the equations of step t read it; ``step`` differentiates C, ``direct`` only the
cost of step t."""


def _notion_target(notion: str, t: int) -> Key:
    return COST if notion == "step" else ("Ct", t)


def _step_scope(model: Unrolled, wrt: Key, t: int) -> frozenset:
    # The consumers of wrt that belong to time step t.
    return frozenset(c for c in model.symbolic.children[wrt] if time_of(c) == t)


def _local(ctx: Context, formula: Formula, idx: dict, notion: str):
    # The local term a per-step formula may state, on the same footing as the total:
    # eps added to the left side's value only where step t's equations read it.
    wrt = formula.wrt(**idx)
    scope = _step_scope(ctx.model, wrt, idx["t"])
    return ctx.D(_notion_target(notion, idx["t"]), wrt, scope)


def _total_of(formula: Formula) -> Callable[[Context, dict], object]:
    return lambda c, idx: c.dC(formula.wrt(**idx))


def _where(idx: Mapping) -> str:
    return ", ".join(f"{k}={v}" for k, v in idx.items())


def _describe(model: Unrolled, idx: Mapping) -> str:
    return model.name + (f", {_where(idx)}" if idx else "")


def _counterexample(reading: Reading, model: Unrolled, idx: dict, target: Callable) -> dict | None:
    # The random point (of five) where the reading and the target differ the most.
    best, best_gap = None, DIFFERENT
    for seed in (1, 2, 3, 4, 5):
        point = model.numeric.random_point(seed)
        ctx = NumericContext(model, point)
        value, truth = float(reading(ctx, **idx)), float(target(ctx, idx))
        if _rel(value, truth) > best_gap:
            best_gap = _rel(value, truth)
            best = {
                "model": model.name,
                "indices": dict(idx),
                "seed": seed,
                "point": {label(k): v for k, v in point.items()},
                "formula": value,
                "total": truth,
            }
    return best


def _check_reading(formula: Formula, name: str, reading: Reading) -> ReadingResult:
    """Classify one reading: exact checks on every model, then finite differences."""
    result = ReadingResult(name, all_models=[m.name for m in formula.models()])
    prefix = f"reading '{name}': " if len(formula.readings) > 1 else ""
    cases: list[tuple[Unrolled, dict, object]] = []  # (model, indices, exact right side)
    failing: list[tuple[Unrolled, dict]] = []
    for model in formula.models():
        ctx = SymbolicContext(model)
        equal = True
        for idx in formula.indices(model.shape):
            try:
                rhs = reading(ctx, **idx)
            except NoSuchNeuron as missing:
                result.missing = result.missing or f"{missing} (at {_where(idx)})"
                equal = False
                continue
            cases.append((model, idx, rhs))
            if ctx.dC(formula.wrt(**idx)) != rhs:
                failing.append((model, idx))
                equal = False
        if equal:
            result.total_models.append(model.name)
    if not failing and not result.missing:
        result.status = HOLDS
        result.checks.append(
            f"{prefix}exact: equals the total derivative on {_names(result.all_models)} "
            f"({len(cases)} cases)"
        )
        err, count = _confirm(reading, cases, _total_of(formula))
        result.checks.append(
            f"{prefix}FD: max rel err {err:.1e} over {count} comparisons at {len(SEEDS)} "
            "random points per model"
        )
        if err >= FD_TOLERANCE:
            result.problems.append(f"exact but FD rel err {err:.1e}")
        return result
    if result.missing:
        result.checks.append(f"{prefix}asks for {result.missing}")
    if failing:
        # The clearest counterexample among the first failing cases of the smallest model.
        first = [(m, idx) for m, idx in failing if m is failing[0][0]][:6]
        found = [_counterexample(reading, m, idx, _total_of(formula)) for m, idx in first]
        found = [cx for cx in found if cx]
        if not found:
            result.problems.append(
                f"differs exactly from the total on {_describe(*failing[0])}, but not numerically"
            )
            return result
        cx = result.counterexample = max(found, key=lambda c: _rel(c["formula"], c["total"]))
        result.checks.append(
            f"{prefix}differs from the total derivative: on {cx['model']}, "
            f"{_where(cx['indices'])} (seed {cx['seed']}) formula {cx['formula']:.6g} vs "
            f"total (FD) {cx['total']:.6g}"
        )
    if result.total_models:
        result.checks.append(
            f"{prefix}exact: equals the total derivative on {', '.join(result.total_models)}"
        )
    if not result.missing and all("t" in idx for _, idx, _ in cases):
        _check_local(formula, reading, cases, result, prefix)
    return result


def _check_local(
    formula: Formula, reading: Reading, cases: list, result: ReadingResult, prefix: str
) -> None:
    # Is the reading exactly one of the single-step / single-path terms everywhere?
    for notion, words in NOTIONS.items():
        if all(
            _local(SymbolicContext(model), formula, idx, notion) == rhs for model, idx, rhs in cases
        ):
            result.status, result.notion = HOLDS_LOCALLY, notion
            result.checks.append(
                f"{prefix}exact: equals {words} (eps added only where step t's equations "
                f"read the value) on every model ({len(cases)} cases)"
            )
            err, count = _confirm(
                reading, cases, lambda c, idx, n=notion: _local(c, formula, idx, n)
            )
            result.checks.append(
                f"{prefix}FD: the local term vs the formula, max rel err {err:.1e} over "
                f"{count} comparisons"
            )
            if err >= FD_TOLERANCE:
                result.problems.append(f"locally exact but FD rel err {err:.1e}")
            if notion == "direct":
                # At the last step nothing follows: is the single path then the whole
                # contribution of that step?
                last = [(m, idx, rhs) for m, idx, rhs in cases if idx["t"] == m.shape.T]
                result.last_step = all(
                    _local(SymbolicContext(m), formula, idx, "step") == rhs for m, idx, rhs in last
                )
                if result.last_step:
                    result.checks.append(
                        f"{prefix}exact: at t = T it is also {NOTIONS['step']} ({len(last)} cases)"
                    )
            return


def _confirm(reading: Reading, cases: list, target: Callable) -> tuple[float, int]:
    # Finite differences (NumPy model) against the formula evaluated numerically, at
    # SEEDS random points per model.
    worst, count = 0.0, 0
    by_model: dict[str, tuple[Unrolled, list[dict]]] = {}
    for model, idx, _ in cases:
        by_model.setdefault(model.name, (model, []))[1].append(idx)
    for model, indices in by_model.values():
        for seed in SEEDS:
            ctx = NumericContext(model, model.numeric.random_point(seed))
            for idx in indices:
                value, truth = float(reading(ctx, **idx)), float(target(ctx, idx))
                worst = max(worst, _rel(value, truth))
                count += 1
    return worst, count


def _names(names: Iterable[str]) -> str:
    names = list(names)
    return ", ".join(names) if len(names) <= 3 else f"{len(names)} models ({names[0]}, ...)"


def _free_index(formula: Formula, name: str, reading: Reading) -> str | None:
    # Vary each free index at fixed left-side indices; report the first change found.
    for model in formula.models():
        for idx in formula.indices(model.shape):
            for index, domain in formula.free.items():
                values = list(domain(model.shape, idx))[:2]
                if len(values) < 2:
                    continue
                try:
                    sym = SymbolicContext(model)
                    exact = [reading(sym, **idx, **{index: v}) for v in values]
                    num = NumericContext(model, model.numeric.random_point(SEEDS[0]))
                    numeric = [float(reading(num, **idx, **{index: v})) for v in values]
                except NoSuchNeuron:
                    break
                if exact[0] != exact[1] and _rel(numeric[0], numeric[1]) > DIFFERENT:
                    return (
                        f"free index {index} (outside its sum, not on the left side): on "
                        f"{_describe(model, idx)}, reading '{name}' gives {numeric[0]:.6g} "
                        f"for {index}={values[0]} and {numeric[1]:.6g} for {index}={values[1]}"
                        " (the exact values differ too)"
                    )
    return None


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


def _as_total(r: ReadingResult) -> str:
    # Where a local reading is nevertheless the total derivative; name the exceptions
    # when they are fewer.
    if not r.total_models:
        return ""
    others = [m for m in r.all_models if m not in r.total_models]
    if len(others) < len(r.total_models):
        return f"it is the total derivative on every model but {', '.join(others)}"
    return f"it is the total derivative on {', '.join(r.total_models)}"


def _reading_words(r: ReadingResult) -> str:
    if r.status == HOLDS:
        return f"reading '{r.name}' holds"
    if r.status == HOLDS_LOCALLY:
        where = f"; {_as_total(r)}" if r.total_models else ""
        return f"reading '{r.name}' holds locally ({NOTIONS[r.notion]}){where}"
    words = []
    if r.missing:
        words.append(f"asks for {r.missing}")
    if r.counterexample:
        cx = r.counterexample
        words.append(
            f"differs from the total on {cx['model']}, {_where(cx['indices'])}: formula "
            f"{cx['formula']:.6g} vs total {cx['total']:.6g}"
        )
    return f"reading '{r.name}' fails: " + " and ".join(words)


def _decide(formula: Formula) -> Finding:
    """Compute one formula's verdict from the checks (see the module docstring)."""
    if formula.custom is not None:
        return formula.custom(formula)
    finding = Finding(formula.id, formula.line, formula.source, UNDECIDED, file=PAPER_FILE)
    reasons = bracket_problems(formula.source)
    finding.checks += [f"brackets: {p}" for p in reasons] or ["brackets: every display balances"]
    results: list[ReadingResult] = []
    for name, reading in formula.readings.items():
        params = set(inspect.signature(reading).parameters) - {"c"}
        if params & set(formula.free):
            # A reading with a free index has no value of its own: show that it varies.
            free = _free_index(formula, name, reading)
            if free:
                reasons.append(free)
                finding.checks.append(free)
        else:
            results.append(_check_reading(formula, name, reading))
    for r in results:
        finding.checks += r.checks
    problems = [p for r in results for p in r.problems]
    statuses = {r.status for r in results}
    if problems:
        finding.detail = "Exact and numeric checks disagree: " + "; ".join(problems) + "."
        return finding
    if reasons:
        finding.verdict = ILL_FORMED
        finding.detail = "Cannot be read as printed: " + "; ".join(reasons) + "."
        if results:
            finding.detail += " Read either way: " + "; ".join(map(_reading_words, results)) + "."
    elif len(statuses) > 1:
        finding.verdict = AMBIGUOUS
        finding.detail = "Readings disagree: " + "; ".join(map(_reading_words, results)) + "."
    elif results:
        r = results[0]
        finding.verdict = r.status
        if r.status == HOLDS_LOCALLY:
            finding.detail = _LOCAL_DETAIL[r.notion, _lhs_kind(formula)]
            if r.last_step:
                finding.detail += (
                    " At the last step t = T it is the whole contribution of step T (there "
                    "dC/d^T a = 2(^T a - ^T y))."
                )
            if r.total_models:
                finding.detail += f" Of the models checked, {_as_total(r)}."
        elif r.status == FAILS:
            finding.counterexample = r.counterexample
            finding.detail = "No reading holds: " + _reading_words(r) + "."
    if formula.note:
        finding.detail = (finding.detail + " " + formula.note).strip()
    if finding.verdict not in (HOLDS, UNDECIDED):
        _attach_correction(formula, finding)
    return finding


def _attach_correction(formula: Formula, finding: Finding) -> None:
    # The corrected form is checked like any formula and must hold.
    if formula.fix is None:
        finding.detail += " No corrected form is available."
        finding.verdict = UNDECIDED
        return
    fixed = verify_formula(formula.fix.id)
    finding.corrected = formula.corrected or formula.fix.latex
    summary = "; ".join(fixed.checks)
    if fixed.verdict != HOLDS:
        finding.verdict = UNDECIDED
        finding.detail += f" The corrected form does not hold ({fixed.verdict})."
        finding.checks.append(f"corrected form: {fixed.verdict}: {summary}")
    else:
        finding.checks.append(f"corrected form holds: {summary}")


@functools.cache
def _all_formulas() -> dict[str, Formula]:
    table: dict[str, Formula] = {}
    for entry in formulas():
        table[entry.id] = entry
        if entry.fix is not None:
            table.setdefault(entry.fix.id, entry.fix)
    return table


def formula(formula_id: str) -> Formula:
    """A formula of the paper, or a corrected form (``<id>.corrected``), by id."""
    return _all_formulas()[formula_id]


@functools.cache
def _verified(formula_id: str) -> Finding:
    return _decide(formula(formula_id))


def verify_formula(formula_id: str) -> Finding:
    """The finding for one formula or corrected form (computed once; a fresh copy)."""
    found = _verified(formula_id)
    return replace(found, checks=list(found.checks))


def verify_paper() -> list[Finding]:
    """Check every derivative formula of the paper, in the paper's order.

    Returns:
        One :class:`~symbolic.verify.verdict.Finding` per formula, its verdict computed by the
        exact and numeric checks, with the corrected formula (itself verified) for
        every verdict but ``holds``.
    """
    return [verify_formula(f.id) for f in formulas()]
