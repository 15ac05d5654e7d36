"""The intermediate representation: what each stage of the pipeline hands the next.

- :class:`Assign` and :class:`MatVec`: the statements of one step (elementwise over lanes,
  or a product with a parameter matrix over the batch), in single-assignment form;
- :class:`ParamGrad`: a parameter's gradient as a reduction over lanes and steps;
- :class:`Derivation`: the output of reverse mode (:mod:`symbolic.derive`);
- :class:`CostDerivation`: a cost and its derivative by the prediction;
- :class:`Kernel`, with :class:`Scan` and :class:`AdjointScan` (the recurrence analysis'
  data, :mod:`symbolic.recurrence`): the output of lowering (:mod:`symbolic.lower`), what
  a backend lays out.

Every value prints as the program it stands for (``derivgen generate --show STAGE``), and
:func:`reads` and :func:`targets` are the one definition of what a statement reads and
writes, for every pass and backend.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import sympy as sp

from symbolic.model import Cell, Cost, Equation

#: Where a forward statement runs: "pre" before the time loop (over all steps at once),
#: "step" inside it.
PRE, STEP = "pre", "step"

#: The recurrence classes of a cell (:mod:`symbolic.recurrence`).
DIAGONAL = "diagonal"
COUPLED = "matrix-coupled"
AFFINE = "affine"
NONE = "none"


@dataclass(frozen=True)
class Assign:
    """``target = expr``, elementwise over lanes (batch x neuron)."""

    target: str
    expr: sp.Expr
    comment: str

    def __str__(self) -> str:
        return f"{self.target} = {self.expr}"


@dataclass(frozen=True)
class MatVec:
    """A projection over the batch.

    ``transpose=False``: ``target = arg @ matrix.T`` (the paper's sum_j W_ij v_j);
    ``transpose=True``: ``target = arg @ matrix`` (the adjoint: sum_i W_ij dP_i).
    """

    target: str
    matrix: str
    arg: str
    transpose: bool
    comment: str

    def __str__(self) -> str:
        return f"{self.target} = {self.arg} @ {self.matrix}" + ("" if self.transpose else ".T")


Stmt = Assign | MatVec


def names(expr: sp.Basic) -> set[str]:
    """The names of the symbols an expression reads."""
    return {s.name for s in expr.free_symbols}


def reads(stmt: Stmt, *, matrices: bool = False) -> set[str]:
    """The names a statement reads: an assignment's symbols, a product's argument (and,
    with ``matrices``, its matrix)."""
    if isinstance(stmt, MatVec):
        return {stmt.arg, stmt.matrix} if matrices else {stmt.arg}
    return names(stmt.expr)


def reads_all(stmts: Iterable[Stmt]) -> set[str]:
    """Every name some statement of ``stmts`` reads."""
    out: set[str] = set()
    for stmt in stmts:
        out |= reads(stmt)
    return out


def targets(stmts: Iterable[Stmt]) -> set[str]:
    """Every name some statement of ``stmts`` assigns."""
    return {s.target for s in stmts}


@dataclass(frozen=True)
class ParamGrad:
    """The gradient of a parameter, a sum over every lane (and time step).

    For a vector parameter: ``sum(expr)`` over batch and time, per neuron.
    For a matrix parameter: ``sum(adjoint^T @ arg)`` over batch and time (``expr`` is
    the projection's adjoint symbol, ``arg`` what the matrix multiplies).
    """

    param: str
    kind: str
    expr: sp.Expr
    arg: str | None
    comment: str

    def __str__(self) -> str:
        arg = f" @ {self.arg}" if self.arg else ""
        return f"d{self.param} = sum({self.expr}{arg})"


@dataclass
class Derivation:
    """The derived programs of one cell.

    Attributes:
        cell: The model.
        equations: The forward equations after lifting nested primitive calls.
        forward: The forward program: ``(where, statement)`` in order.
        backward: The adjoint program of one step, in order (reverse of forward).
        param_grads: In spec order: one per vector parameter, one per product of a
            matrix (a matrix used in several products has several, to be summed).
        input_grads: The projections of the input: ``dx = sum dP @ W``.
        state_adjoints: ``state -> adjoint symbol`` flowing to the previous step.
        seeds: ``adjoint symbol -> [seed symbols]`` added at the top of a step.
        input_adjoint: An elementwise input's adjoint as a lane value (``dx`` of the
            step, added to the products' terms), or None.
    """

    cell: Cell
    equations: list[Equation]
    forward: list[tuple[str, Assign | MatVec]]
    backward: list[Assign | MatVec]
    param_grads: list[ParamGrad]
    input_grads: list[MatVec]
    state_adjoints: dict[str, str]
    seeds: dict[str, list[str]]
    input_adjoint: str | None = None

    def __str__(self) -> str:
        lines = [f"# forward of {self.cell.name}"]
        for where, stmt in self.forward:
            lines.append(f"[{where}] {stmt}")
        lines.append("# adjoint program of one step")
        lines += [str(stmt) for stmt in self.backward]
        lines.append("# parameter gradients (sum over batch and time)")
        lines += [str(grad) for grad in self.param_grads]
        lines += [str(mv) for mv in self.input_grads]
        if self.input_adjoint is not None:
            lines.append(f"d{self.cell.input} += {self.input_adjoint} (elementwise)")
        return "\n".join(lines)


@dataclass
class CostDerivation:
    """The per-unit cost and its derivative by the prediction."""

    cost: Cost
    per_unit: sp.Expr
    gradient: sp.Expr

    def __str__(self) -> str:
        pred = self.cost.prediction
        return (
            f"# cost {self.cost.name}: C = sum over units of the per-unit cost\n"
            f"per_unit = {self.per_unit}\n"
            f"d per_unit / d {pred} = {self.gradient}"
        )


@dataclass
class Scan:
    """A parallel scan of an affine recurrence h_t = A_t*h_{t-1} + b_t (one state, the
    output's own: minGRU's form).

    Attributes:
        state: The state (h); its next value is the output.
        coeff, offset: A_t and b_t, in symbols that do not depend on the state.
        before: Forward statements free of the state (every step at once, before).
        after: Forward statements that read the state (every step at once, after).
        backward: The adjoint step without its seed: every step at once, once the
            output's adjoint is known for every step.
    """

    state: str
    coeff: sp.Expr
    offset: sp.Expr
    before: list[Assign]
    after: list[Assign]
    backward: list[Assign]

    def __str__(self) -> str:
        lines = [f"{self.state}_t = ({self.coeff})*{self.state}_(t-1) + ({self.offset})"]
        lines.append("# before the scan (every step at once)")
        lines += [str(s) for s in self.before]
        lines.append("# after the scan")
        lines += [str(s) for s in self.after]
        lines.append("# adjoint (every step at once, once the output's adjoint is known)")
        lines += [str(s) for s in self.backward]
        return "\n".join(lines)


@dataclass
class AdjointScan:
    """The adjoint step of a diagonal recurrence as coefficients times seeds: the data a
    backend's backward scan emits (:func:`symbolic.recurrence.adjoint_scan`).

    Reverse mode is linear in the adjoints: each adjoint of a step is a sum over a few
    seeds of a coefficient times the seed, the coefficients functions of forward values
    and parameters only. A backend can compute the coefficients of many steps at once
    and run only the seeds in sequence (the GRN: ``dh = _dh_per_da * da``).

    Attributes:
        upstream: The output's upstream gradient (``da_in``).
        seed_out: The output's adjoint (``da``).
        out_state: The state whose next value is the output, if any.
        combined: When the output is a state's next value and its adjoint is
            ``upstream + carried``: that statement (the sum is the seed ``seed_out``,
            computed in the scan).
        seeds: The seeds, in order: the output's adjoint (or its upstream gradient) first,
            then the carried adjoints of the other states.
        programs: The statements computing the coefficients, in order: values free of
            every seed first, then each seed's coefficients.
        coeff: ``adjoint -> seed -> coefficient`` for each state's adjoint and each
            adjoint the gradients read after the loop: a program's target, a forward
            value or parameter, or a number.
        known: ``(Assign(adjoint, coefficient, comment), seed)`` for the adjoints whose
            coefficient is a value the code already has (no program computes it).
    """

    upstream: str
    seed_out: str
    out_state: str | None
    combined: Assign | None
    seeds: list[str]
    programs: list[Assign]
    coeff: dict[str, dict[str, sp.Expr]]
    known: list[tuple[Assign, str]]

    def expanded(self, adjoint: str, seed: str) -> sp.Expr:
        """The coefficient of ``adjoint`` in ``seed`` with every program inlined: an
        expression in forward values and parameters."""
        defs = {sp.Symbol(st.target): st.expr for st in self.programs}
        expr = self.coeff[adjoint][seed]
        while expr.free_symbols & defs.keys():
            expr = expr.xreplace(defs)
        return expr

    def __str__(self) -> str:
        lines = [f"# seeds: {', '.join(self.seeds)}"]
        if self.combined is not None:
            lines.append(f"{self.seed_out} = {self.combined.expr} (in the scan)")
        lines.append("# coefficients (every step at once)")
        lines += [str(st) for st in self.programs]
        for st, seed in self.known:
            lines.append(f"# {st.target} = {st.expr}*{seed}")
        for adjoint in sorted(self.coeff):
            terms = [f"({c})*{s}" for s, c in self.coeff[adjoint].items() if c != 0]
            lines.append(f"{adjoint} = {' + '.join(terms) or '0'}")
        return "\n".join(lines)


@dataclass
class Kernel:
    """Everything a backend lays out, still as SymPy (printing comes next).

    Attributes:
        derivation: Where it came from.
        pre: Projections of the input for every step (before the time loop).
        forward: The forward step (elementwise statements and in-loop products).
        cached: Forward values (and previous states) the backward reads, per step.
        backward: The adjoint step.
        stored: Adjoints the parameter/input gradients read after the loop, per step.
        vector_grads: ``(param, expr)``: the gradient is ``expr`` summed over lanes.
        matrix_grads: ``(param, [(adjoint, arg)])``: the gradient is
            ``sum adjoint^T @ arg`` over lanes.
        input_grads: ``(adjoint, matrix)``: ``dx = sum adjoint @ matrix``.
        recurrence: :data:`DIAGONAL`, :data:`COUPLED`, :data:`AFFINE` or :data:`NONE`.
        affine: For an affine recurrence ``h_t = A_t*h_{t-1} + b_t``: state -> (A, b).
        scan: Its parallel-scan form, when it has one.
        adjoint_scan: A diagonal recurrence's adjoint step as coefficients times seeds
            (None for a feedforward cell or a matrix-coupled recurrence).
        input_adjoint: An elementwise input's adjoint per lane and step (stored), added
            to ``dx`` after the products' terms; None for an input used in products only.
    """

    derivation: Derivation
    pre: list[MatVec]
    forward: list[Assign | MatVec]
    cached: list[str]
    backward: list[Assign | MatVec]
    stored: list[str]
    vector_grads: list[tuple[str, sp.Expr]]
    matrix_grads: list[tuple[str, list[tuple[str, str]]]]
    input_grads: list[tuple[str, str]]
    recurrence: str
    affine: dict[str, tuple[sp.Expr, sp.Expr]] = field(default_factory=dict)
    scan: Scan | None = None
    adjoint_scan: AdjointScan | None = None
    input_adjoint: str | None = None

    @property
    def cell(self) -> Cell:
        return self.derivation.cell

    def __str__(self) -> str:
        lines = [f"# kernel of {self.cell.name} (recurrence: {self.recurrence})"]
        if self.pre:
            lines.append("# before the time loop")
            lines += [str(s) for s in self.pre]
        lines.append("# forward step")
        lines += [str(s) for s in self.forward]
        lines.append(f"# cached for the backward: {', '.join(self.cached) or '(nothing)'}")
        lines.append("# adjoint step")
        lines += [str(s) for s in self.backward]
        lines.append(f"# stored for the gradients: {', '.join(self.stored) or '(nothing)'}")
        lines.append("# gradients (sums over lanes and steps)")
        lines += [f"d{param} = sum({expr})" for param, expr in self.vector_grads]
        for param, terms in self.matrix_grads:
            lines.append(f"d{param} = " + " + ".join(f"sum({a}^T @ {b})" for a, b in terms))
        lines += [f"d{self.cell.input} += {adj} @ {matrix}" for adj, matrix in self.input_grads]
        if self.input_adjoint is not None:
            lines.append(f"d{self.cell.input} += {self.input_adjoint}")
        for state, (coeff, offset) in self.affine.items():
            lines.append(f"# affine: {state}_t = ({coeff})*{state}_(t-1) + ({offset})")
        if self.scan is not None:
            lines.append("# parallel scan")
            lines.append(str(self.scan))
        if self.adjoint_scan is not None:
            lines.append("# adjoint step as coefficients times seeds")
            lines.append(str(self.adjoint_scan))
        return "\n".join(lines)


@dataclass
class Compiled:
    """A model through the stages every backend shares: what :mod:`symbolic.render` lays
    out. A cell has its derivation and kernel; a cost its derivation only."""

    model: Cell | Cost
    derivation: Derivation | CostDerivation
    kernel: Kernel | None = None

    def __str__(self) -> str:
        return str(self.kernel if self.kernel is not None else self.derivation)
