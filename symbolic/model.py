"""The checked model of a spec: ordered per-neuron scalar equations (the output of stage 1).

Input: nothing (these are data classes). Output of :mod:`symbolic.parse`.

Every equation is a SymPy expression in per-neuron scalars, like the paper's index
notation. A contraction ``W@v`` (the paper's sum_j W_ij v_j) is one opaque
:class:`Projection` whose symbol stands in the equations; it is emitted as a matrix
product, never unrolled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import sympy as sp

FEEDFORWARD = "feedforward"
RECURRENT = "recurrent"
COST = "cost"
KINDS = (FEEDFORWARD, RECURRENT, COST)
#: Kinds of a cost's named input: one value per row (sample and step), or per unit.
ROW = "row"
UNIT = "unit"
INPUT_KINDS = (ROW, UNIT)


@dataclass(frozen=True)
class Equation:
    """``name = expr`` for one neuron.

    Attributes:
        name: The symbol the equation defines.
        expr: Its right-hand side (SymPy; projections appear as their symbols).
        line: The spec line it came from.
        source: The right-hand side as written in the spec.
        lifted: True for an intermediate the parser introduced (the argument of a
            ``@`` that was an expression, e.g. ``r*h`` in ``U@(r*h)``).
    """

    name: str
    expr: sp.Expr
    line: int
    source: str
    lifted: bool = False

    def __str__(self) -> str:
        return f"{self.name} = {self.expr}" + ("  (lifted)" if self.lifted else "")


@dataclass(frozen=True)
class Projection:
    """``name = matrix @ arg``: the paper's sum_j W_ij v_j, one matrix product.

    Attributes:
        name: The per-neuron symbol standing for the product.
        matrix: The matrix parameter.
        arg: The vector multiplied: the input, a state or an intermediate.
        line: The spec line where it appears.
    """

    name: str
    matrix: str
    arg: str
    line: int

    def __str__(self) -> str:
        return f"{self.name} = {self.matrix} @ {self.arg}"


@dataclass(frozen=True)
class Claim:
    """A stated derivative to verify (``[claims]`` of a spec).

    Attributes:
        key: ``dC_d<name>``.
        wrt: The parameter, input or state it differentiates by.
        expr: The claimed value. Adjoints appear as symbols ``dC_d<symbol>``; a
            transposed product ``M.T @ v`` appears as a :class:`TransposedProjection`
            symbol.
        line: The spec line.
        source: The text as written.
        transposed: ``symbol name -> (matrix, vector expr)`` for each ``M.T @ v``.
    """

    key: str
    wrt: str
    expr: sp.Expr
    line: int
    source: str
    transposed: dict[str, tuple[str, sp.Expr]] = field(default_factory=dict)


@dataclass(frozen=True)
class Init:
    """A parameter's initialisation (``[init]`` of a spec; :mod:`symbolic.inits`).

    Attributes:
        name: ``constant``, ``normal``, ``uniform``, ``orthogonal``, ``chrono`` or
            ``indrnn``.
        value: The constant, or the gain of a random init (None: no gain, or bounds).
        low, high: A uniform init's bounds when the spec gives them.
    """

    name: str
    value: float | None = None
    low: float | None = None
    high: float | None = None


@dataclass
class Cell:
    """A feedforward or recurrent cell, checked and ordered.

    Attributes:
        path: The spec file.
        name, title, kind: From the spec.
        input: The input symbol (size n_in); it enters only through projections,
            unless ``input_elementwise``.
        output: The output symbol (size n_out).
        states: ``state -> equation`` giving the state's next value (spec order).
        params: ``name -> "matrix" | "vector"`` (spec order).
        equations: In evaluation order (lifted intermediates included).
        projections: Every ``W@v``, in order of first use.
        claims: Stated derivatives to verify.
        latex_claims: Stated derivatives in a paper's LaTeX notation (translated and
            verified by ``derivgen verify``).
        text: The spec file's text; sha256 its digest.
        init: ``parameter -> Init`` for those ``[init]`` names (spec order).
        input_elementwise: The spec declares the input elementwise
            (``input = { x = "elementwise" }``): it may also stand in the equations as a
            lane value, so n_in = n_out.
    """

    path: Path
    name: str
    title: str
    kind: str
    input: str
    output: str
    states: dict[str, str]
    params: dict[str, str]
    equations: list[Equation]
    projections: list[Projection]
    claims: list[Claim]
    text: str
    sha256: str
    #: ``[latex_claims]``: (key, LaTeX, line), read by symbolic.verify.latex_claims
    latex_claims: list[tuple[str, str, int | None]] = field(default_factory=list)
    #: every name the spec defines -> its role (what a claim's value may name)
    roles: dict[str, str] = field(default_factory=dict)
    init: dict[str, Init] = field(default_factory=dict)
    #: ``[sizes]``: each named size's default (:mod:`symbolic.sizes`)
    sizes: dict[str, int] = field(default_factory=dict)
    #: each parameter's shape in size names (``("n_out", "n_in")``, ``("hidden",)``)
    shapes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: each vector symbol's width in size names (``"n_in"``, ``"n_out"``, ``"hidden"``)
    widths: dict[str, str] = field(default_factory=dict)
    input_elementwise: bool = False

    @property
    def equation_names(self) -> list[str]:
        return [eq.name for eq in self.equations]

    def equation(self, name: str) -> Equation:
        for eq in self.equations:
            if eq.name == name:
                return eq
        raise KeyError(name)

    def __str__(self) -> str:
        lines = [f"# {self.kind} cell {self.name}: {self.input} (n_in) -> {self.output} (n_out)"]
        lines += [f"param {name}: {kind}" for name, kind in self.params.items()]
        lines += [f"state {state} <- {target}" for state, target in self.states.items()]
        lines += [str(proj) for proj in self.projections]
        lines += [str(eq) for eq in self.equations]
        return "\n".join(lines)

    def size(self, name: str) -> str:
        """``"in"`` for the input, ``"out"`` for every other vector symbol."""
        return "in" if name == self.input else "out"

    def matrix_shape(self, param: str) -> tuple[str, str]:
        """A matrix's shape in sizes ``("out", "in" | "out")``, from what it multiplies."""
        for proj in self.projections:
            if proj.matrix == param:
                return ("out", self.size(proj.arg))
        raise KeyError(param)


@dataclass
class Cost:
    """A cost: C = sum of ``per_unit`` over units (and time) / batch size.

    Attributes:
        path, name, title: From the spec.
        prediction, target: The names of the prediction and the target in ``per_unit``.
        per_unit: The per-unit cost (SymPy).
        line: The spec line of ``per_unit``; source its text.
        text, sha256: The spec file's text and digest.
        claims: Stated derivatives by the prediction (``dC_d<prediction>``).
        inputs: ``name -> kind`` of each named input (``[inputs]``, spec order): data
            the cost reads beside the prediction and the target, never differentiated.
            A :data:`ROW` input has one value per row (per sample and step: a mask of
            padded steps), broadcast over the units; a :data:`UNIT` input one value per
            unit (class or unit weights), broadcast over the rows.
    """

    path: Path
    name: str
    title: str
    prediction: str
    target: str
    per_unit: sp.Expr
    line: int
    source: str
    text: str
    sha256: str
    kind: str = COST
    claims: list[Claim] = field(default_factory=list)
    inputs: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        inputs = "".join(f"\ninput {name}: {kind}" for name, kind in self.inputs.items())
        return (
            f"# cost {self.name}: prediction {self.prediction}, target {self.target}"
            f"{inputs}\nper_unit = {self.per_unit}"
        )
