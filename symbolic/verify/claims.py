"""Verification of stated derivatives: the ``[claims]`` of a spec (pipeline stage: verify).

Input: spec files with ``[claims]``. Output: one
:class:`~symbolic.verify.verdict.Finding` per claim.

A claim is the single-step (local) gradient at one neuron (DESIGN.md, "Spec format").
A claim that, read as written, uses a symbol against its defined meaning (an ``M.T @ v``
for a matrix entry, a matrix as a per-neuron value, ``dC_d<input>`` in a value) ``fails``
and its detail gives the repair that holds (the rule of :mod:`symbolic.verify.verdict`).
Otherwise it is decided twice, independently:

1. symbolically: the claim and the derived single-step gradient are both written in the
   cell's inputs (every intermediate substituted), with the adjoints of the output (and
   of each state's next value) as free symbols ``dC_d<name>``; they hold when
   ``expand`` of their difference is zero;
2. numerically, without the derivation: the cell's step is evaluated with NumPy at a
   random point, C = sum_i c_i out_i with random weights c (so dC_d<out> = c), and the
   true gradient is taken by central finite differences, the adjoint of any
   intermediate by perturbing it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import sympy as sp

from symbolic import naming, primitives
from symbolic.derive import derive
from symbolic.ir import Derivation, MatVec
from symbolic.model import Cell, Claim, Cost
from symbolic.parse import SpecError, load
from symbolic.verify.cost_claims import verify_cost
from symbolic.verify.latex_claims import LatexClaim, latex_claims, read_claim
from symbolic.verify.verdict import FAILS, HOLDS, UNDECIDED, Finding

N_IN, N_OUT = 3, 4
FD_STEP = 1e-6
NUMERIC_RTOL = 1e-6
POINTS = 3


def _leaves(cell: Cell) -> list[str]:
    """Equations whose adjoint is seeded from outside the step: the output, and the
    next value of each state (they carry the path through step t+1)."""
    names = [cell.output]
    names += [t for t in cell.states.values() if t not in names]
    return names


def adjoint_symbol(name: str) -> sp.Symbol:
    """The claim syntax of the adjoint of ``name``: ``dC_d<name>``."""
    return sp.Symbol("dC_d" + name)


@dataclass
class Linear:
    """A gradient by a vector, in claim notation.

    Attributes:
        expr: The value per neuron (index j). Symbols in ``products`` stand for the
            vectors M.T @ v (per neuron j: the sum over i of M[i, j] v[i]); they enter
            linearly, and a product's vector may hold products itself.
        products: ``symbol -> (matrix, vector expression)``.
        entries: For a matrix: ``{v: coeff}``, the entry (i, j) being coeff[i] * v[j].
    """

    expr: sp.Expr = sp.S.Zero
    products: dict[sp.Symbol, tuple[str, sp.Expr]] = field(default_factory=dict)
    entries: dict[str, sp.Expr] = field(default_factory=dict)


def _at(expr: sp.Expr, depth: int) -> sp.Expr:
    """``expr`` with every symbol indexed by the summation at ``depth`` (0: the neuron
    whose value it is)."""
    if depth == 0:
        return expr
    return expr.xreplace({s: sp.Symbol(f"{s.name}@{depth}") for s in expr.free_symbols})


def canonical(value: Linear, depth: int = 0, expr: sp.Expr | None = None) -> sp.Expr:
    """The value as a polynomial in the entries of the matrices: M.T @ v at depth d is
    the sum over an index at depth d + 1 of M[k, j] v(k), written as the product of the
    symbol ``M[d+1,d]`` and v's symbols indexed at d + 1. Two values are equal for every
    point and every matrix exactly when these polynomials are (one summation index per
    depth: terms of one matrix at one depth combine, as the sums they stand for do)."""
    expr = value.expr if expr is None else expr
    present = [s for s in expr.free_symbols if s in value.products]
    out = _at(expr.xreplace({s: sp.S.Zero for s in present}), depth)
    for sym in present:
        matrix, vec = value.products[sym]
        coeff = sp.diff(expr, sym)
        entry = sp.Symbol(f"{matrix}[{depth + 1},{depth}]")
        out += _at(coeff, depth) * entry * canonical(value, depth + 1, vec)
    return out


def equal(a: Linear, b: Linear) -> bool:
    """Symbolic identity of two values (see :func:`canonical`)."""
    if sp.expand(canonical(a) - canonical(b)) != 0:
        return False
    return all(
        sp.expand(a.entries.get(v, 0) - b.entries.get(v, 0)) == 0
        for v in set(a.entries) | set(b.entries)
    )


def _check_linear(expr: sp.Expr, products) -> None:
    symbols = set(products)
    for sym in expr.free_symbols & symbols:
        if sp.diff(expr, sym).free_symbols & symbols:
            raise ValueError("M.T @ v terms may not multiply each other")
    for _, vec in products.values():
        for sym in vec.free_symbols & symbols:
            if sp.diff(vec, sym).free_symbols & symbols:
                raise ValueError("M.T @ v terms may not multiply each other")


class SingleStep:
    """The derived single-step gradients of a cell, in claim notation.

    The meaning of a claim (DESIGN.md): its key ``dC_d<name>`` is the gradient that flows
    into ``name`` through this step's equations, at one neuron; every ``dC_d<symbol>`` in
    its value is the total gradient of C by that symbol's value at this step (all paths:
    this step's later equations and the steps after it). Both sides are written in the
    cell's inputs and the total adjoints of the leaves (the output and each state's next
    value), which are independent of one another; the numeric check perturbs values of
    one step (:class:`NumericStep`), so both read every key and every adjoint alike.
    """

    def __init__(self, derivation: Derivation):
        self.derivation = derivation
        cell = derivation.cell
        self.cell = cell
        # forward values, every intermediate written in the cell's inputs
        self.forward: dict[sp.Symbol, sp.Expr] = {}
        for eq in derivation.equations:
            self.forward[sp.Symbol(eq.name)] = eq.expr.xreplace(self.forward)
        leaves = {naming.adjoint(n) for n in _leaves(cell)}
        self.adjoints: dict[str, sp.Expr] = {}
        #: MatVec targets of the adjoint program: symbol -> (matrix, vector's adjoint)
        self.products: dict[sp.Symbol, tuple[str, sp.Expr]] = {}
        for stmt in derivation.backward:
            if isinstance(stmt, MatVec):
                self.adjoints[stmt.target] = sp.Symbol(stmt.target)
                self.products[sp.Symbol(stmt.target)] = (
                    stmt.matrix,
                    self.adjoints.get(stmt.arg, sp.Symbol(stmt.arg)),
                )
                continue
            if stmt.target in leaves:
                self.adjoints[stmt.target] = adjoint_symbol(stmt.target[1:])
                continue
            self.adjoints[stmt.target] = self._expand_adjoints(stmt.expr)

    def _expand_adjoints(self, expr: sp.Expr) -> sp.Expr:
        subs = {sp.Symbol(k): v for k, v in self.adjoints.items()}
        return expr.xreplace(subs)

    def inputs(self, expr: sp.Expr) -> sp.Expr:
        """``expr`` with every intermediate written in the cell's inputs."""
        return expr.xreplace(self.forward)

    def _linear(self, expr: sp.Expr) -> Linear:
        """An adjoint expression with its products (M.T @ v) as a :class:`Linear`."""
        products = {s: (m, self.inputs(v)) for s, (m, v) in self.products.items()}
        return Linear(self.inputs(expr), products)

    def gradient(self, wrt: str) -> Linear:
        """The derived single-step gradient by ``wrt`` (a parameter, the input, a state)."""
        cell = self.cell
        if wrt in cell.states:
            return self._linear(self.adjoints[naming.adjoint(wrt)])
        if wrt == cell.input:
            value = self._linear(sp.S.Zero)
            for p in cell.projections:
                if p.arg == cell.input:
                    sym = sp.Symbol(naming.matvec_adjoint(cell.input, p.matrix))
                    value.expr += sym
                    value.products[sym] = (
                        p.matrix,
                        self.inputs(self.adjoints[naming.adjoint(p.name)]),
                    )
            return value
        if cell.params[wrt] == "vector":
            grad = next(g for g in self.derivation.param_grads if g.param == wrt)
            return self._linear(self._expand_adjoints(grad.expr))
        entries: dict[str, sp.Expr] = {}
        for grad in self.derivation.param_grads:
            if grad.param == wrt:
                dp = self.inputs(self.adjoints[grad.expr.name])
                entries[grad.arg] = entries.get(grad.arg, sp.S.Zero) + dp
        return Linear(entries=entries)

    def claim_value(self, claim: Claim) -> Linear:
        """The claim in the same terms (its ``dC_d<symbol>`` read as derived adjoints).

        Raises:
            ValueError: The claim cannot be read as the gradient its key names.
        """
        cell = self.cell
        subs = {adjoint_symbol(t[1:]): v for t, v in self.adjoints.items()}
        expr = self.inputs(claim.expr.xreplace(subs))
        products = {
            sp.Symbol(k): (m, self.inputs(v.xreplace(subs)))
            for k, (m, v) in claim.transposed.items()
        }
        if cell.params.get(claim.wrt) == "matrix":
            if products:
                raise ValueError("a matrix entry's gradient is a product, not an M.T @ v")
            return Linear(entries=entries_of(expr, claim.wrt, cell))
        _check_linear(expr, products)
        derived = {s: (m, self.inputs(v)) for s, (m, v) in self.products.items()}
        value = Linear(expr, {**derived, **products})
        if claim.wrt == cell.input:
            top = [s for s in expr.free_symbols if s in products]
            if expr.xreplace({s: 0 for s in top}) != 0 or not top:
                raise ValueError(
                    "a gradient by the input is a sum over the layer's neurons: write it as "
                    "M.T @ v terms (e.g. WXc.T @ (dC_da*G*tanh_prime(Zc)))"
                )
            if any(not sp.diff(expr, s).is_number for s in top):
                raise ValueError("the input's M.T @ v terms take numbers as coefficients")
        return value


def entries_of(expr: sp.Expr, matrix: str, cell: Cell) -> dict[str, sp.Expr]:
    """A matrix entry's claimed gradient as ``{v: coeff}``: in each term, one factor is
    the vector the matrix multiplies (its entry j); everything else is per neuron i."""
    args = {p.arg for p in cell.projections if p.matrix == matrix}
    out: dict[str, sp.Expr] = {}
    for term in sp.Add.make_args(expr):
        found = [
            a
            for a in args
            for f in sp.Mul.make_args(term)
            if f == sp.Symbol(a) or (f.is_Pow and f.base == sp.Symbol(a) and f.exp.is_positive)
        ]
        if len(set(found)) != 1:
            what = " or ".join(sorted(args))
            raise ValueError(
                f"each term of a gradient by the matrix {matrix} is a product with one factor "
                f"{what}: the entry's vector (index j); the rest is per neuron (index i)"
            )
        arg = found[0]
        out[arg] = out.get(arg, sp.S.Zero) + term / sp.Symbol(arg)
    return out


# --- the numeric check: finite differences of the forward step, no derivation used ---


class NumericStep:
    """One step of a cell, evaluated with NumPy at a random point (batch of one)."""

    def __init__(self, cell: Cell, seed: int):
        self.cell = cell
        rng = np.random.default_rng(seed)
        sizes = {"in": N_IN, "out": N_OUT}
        self.values: dict[str, np.ndarray] = {}
        for name, kind in cell.params.items():
            if kind == "matrix":
                rows, cols = cell.matrix_shape(name)
                self.values[name] = rng.uniform(-1, 1, (sizes[rows], sizes[cols]))
            else:
                self.values[name] = rng.uniform(-1, 1, N_OUT)
        self.values[cell.input] = rng.uniform(-1, 1, N_IN)
        for state in cell.states:
            self.values[state] = rng.uniform(-1, 1, N_OUT)
        # positive values keep log and sqrt of simple expressions defined
        self.weights = {leaf: rng.uniform(0.5, 1.5, N_OUT) for leaf in _leaves(cell)}
        namespace = primitives.numeric_namespace()
        self.functions = []
        for eq in derive(cell).equations:
            args = sorted(eq.expr.free_symbols, key=lambda s: s.name)
            fn = sp.lambdify(args, eq.expr, modules=[namespace, "numpy"])
            self.functions.append((eq.name, [a.name for a in args], fn))
        self.projections = {p.name: p for p in cell.projections}

    def run(self, values: dict[str, np.ndarray], bump: tuple[str, np.ndarray] | None = None):
        env = dict(values)
        done = set()

        def project(name):
            proj = self.projections[name]
            env[name] = env[proj.matrix] @ env[proj.arg]
            done.add(name)

        for name, args, fn in self.functions:
            for arg in args:
                if arg in self.projections and arg not in done:
                    project(arg)
            with np.errstate(all="ignore"):
                env[name] = np.asarray(fn(*[env[a] for a in args]), dtype=float) * np.ones(N_OUT)
            if bump is not None and bump[0] == name:
                env[name] = env[name] + bump[1]
        return env

    def cost(self, values, bump=None) -> float:
        env = self.run(values, bump)
        return float(sum(np.dot(w, env[leaf]) for leaf, w in self.weights.items()))

    def gradient(self, wrt: str) -> np.ndarray:
        """dC/d``wrt`` by central differences (a parameter, the input or a state)."""
        base = self.values[wrt]
        grad = np.zeros_like(base)
        for index in np.ndindex(base.shape):
            plus = dict(self.values)
            minus = dict(self.values)
            plus[wrt] = base.copy()
            minus[wrt] = base.copy()
            plus[wrt][index] += FD_STEP
            minus[wrt][index] -= FD_STEP
            grad[index] = (self.cost(plus) - self.cost(minus)) / (2 * FD_STEP)
        return grad

    def adjoint(self, name: str) -> np.ndarray:
        """dC/d``name`` for an intermediate, by perturbing it after it is computed."""
        out = np.zeros(N_OUT)
        for i in range(N_OUT):
            e = np.zeros(N_OUT)
            e[i] = FD_STEP
            out[i] = (self.cost(self.values, (name, e)) - self.cost(self.values, (name, -e))) / (
                2 * FD_STEP
            )
        return out

    def evaluate_claim(self, claim: Claim) -> np.ndarray:
        """The claim's value at this point (per neuron, per matrix entry, or per input).

        Every ``dC_d<symbol>`` is the total gradient of C by that symbol's value at this
        step, found by perturbing the value (:meth:`adjoint`): the same meaning the
        symbolic check gives it.

        Raises:
            ValueError: The claim cannot be read as the gradient its key names.
        """
        cell = self.cell
        env = self.run(self.values)
        namespace = primitives.numeric_namespace()
        adjoints = {}
        symbols_needed = {s.name for s in claim.expr.free_symbols}
        for _, vector in claim.transposed.values():
            symbols_needed |= {s.name for s in vector.free_symbols}
        for name in symbols_needed:
            if name.startswith("dC_d"):
                target = name[4:]
                if target in cell.states or target == cell.input or target in cell.params:
                    raise ValueError(f"{name}: the gradient by an input is what a claim states")
                adjoints[name] = self.adjoint(target)

        def value(expr):
            if not expr.free_symbols:
                return float(expr) * np.ones(N_OUT)
            args = sorted(expr.free_symbols, key=lambda s: s.name)
            fn = sp.lambdify(args, expr, modules=[namespace, "numpy"])
            vals = [adjoints[a.name] if a.name in adjoints else env[a.name] for a in args]
            with np.errstate(all="ignore"):
                return np.asarray(fn(*vals), dtype=float) * np.ones(N_OUT)

        wrt = claim.wrt
        if cell.params.get(wrt) == "matrix":
            if claim.transposed:
                raise ValueError("a matrix entry's gradient is a product, not an M.T @ v")
            total = np.zeros(self.values[wrt].shape)
            for arg, coeff in entries_of(claim.expr, wrt, cell).items():
                total += np.outer(value(coeff), env[arg])
            return total
        # each M.T @ v as a vector, inner products first (the parser's order)
        for sym, (matrix, vector) in claim.transposed.items():
            env[sym] = env[matrix].T @ value(vector)
        symbols = [sp.Symbol(k) for k in claim.transposed]
        local = claim.expr.xreplace({s: 0 for s in symbols})
        total = 0.0 if wrt == cell.input else value(local)
        for sym in symbols:
            if sym in claim.expr.free_symbols:
                coeff = sp.diff(claim.expr, sym)
                scale = value(coeff)[: env[sym.name].size] if coeff.free_symbols else float(coeff)
                total = total + scale * env[sym.name]
        return np.asarray(total, dtype=float) * np.ones(self.values[wrt].shape)


def _relerr(a: np.ndarray, b: np.ndarray) -> float:
    scale = max(np.max(np.abs(a)), np.max(np.abs(b)), 1e-12)
    return float(np.max(np.abs(a - b)) / scale)


def verify_claim(cell: Cell, single: SingleStep, claim: Claim) -> Finding:
    """Decide one claim (see the module docstring)."""
    finding = Finding(
        id=claim.key, line=claim.line, source=claim.source, verdict=UNDECIDED, file=str(cell.path)
    )
    derived = single.gradient(claim.wrt)
    corrected = show(derived, single)
    try:
        claimed = single.claim_value(claim)
        NumericStep(cell, 0).evaluate_claim(claim)
    except ValueError as exc:
        # read as written, the claim uses a symbol against its defined meaning: it
        # fails, and the repair that holds is the single-step gradient (verdict.py)
        finding.verdict = FAILS
        finding.detail = (
            f"As written, a symbol is used against its defined meaning: {exc}. "
            f"Repaired, the single-step gradient is {corrected}"
        )
        finding.corrected = corrected
        return finding
    # 1. symbolic
    same = equal(derived, claimed)
    finding.checks.append(
        "symbolic: "
        + ("claim - derived expands to 0" if same else "claim - derived does not expand to 0")
    )
    # 2. numeric, independent of the derivation
    worst = 0.0
    counter = None
    for seed in range(POINTS):
        step = NumericStep(cell, seed)
        truth = step.gradient(claim.wrt)
        value = step.evaluate_claim(claim)
        err = _relerr(truth, value)
        if err > worst:
            worst = err
            if err > NUMERIC_RTOL:
                counter = {
                    "seed": seed,
                    "point": {k: np.round(v, 6).tolist() for k, v in step.values.items()},
                    "finite_difference": np.round(truth, 8).tolist(),
                    "claim": np.round(value, 8).tolist(),
                    "relative_error": err,
                }
    finding.checks.append(
        f"numeric: central differences at {POINTS} random points, worst relative error {worst:.1e}"
    )
    if same and counter is None:
        finding.verdict = HOLDS
        finding.detail = "the single-step gradient, proved and confirmed"
        return finding
    finding.corrected = corrected
    if counter is not None:
        finding.verdict = FAILS
        finding.counterexample = counter
        finding.detail = (
            f"differs from finite differences by {counter['relative_error']:.1e} (relative) "
            f"at random point {counter['seed']}; the single-step gradient is {corrected}"
        )
    else:
        finding.detail = (
            "numerically equal but the symbolic difference did not expand to 0 "
            "(an identity SymPy's expand does not see)"
        )
    return finding


def show(value: Linear, single: SingleStep) -> str:
    """A derived gradient in claim notation, readable and parseable as a claim: forward
    values by their spec names (G for sigmoid(Zu)), the parser's own intermediates
    written out, products of the step as ``(W@x)``, the sums over a layer's neurons as
    ``M.T @ (...)``, adjoints as ``dC_d<name>``."""
    cell = single.cell
    spec_names = {eq.name for eq in cell.equations if not eq.lifted}
    back = {
        v: k
        for k, v in single.forward.items()
        if k.name in spec_names and not isinstance(v, sp.Symbol)
    }
    lifted = {sp.Symbol(eq.name): eq.expr for eq in cell.equations if eq.lifted}
    display = {}
    for proj in cell.projections:
        arg = lifted.get(sp.Symbol(proj.arg), sp.Symbol(proj.arg))
        text = proj.arg if isinstance(arg, sp.Symbol) else f"({sp.sstr(arg)})"
        display[sp.Symbol(proj.name)] = sp.Symbol(f"({proj.matrix}@{text})")

    def text(expr: sp.Expr) -> str:
        names = {}
        for sym in expr.free_symbols & set(value.products):
            matrix, vec = value.products[sym]
            names[sym] = sp.Symbol(f"({matrix}.T @ ({text(vec)}))")
        return sp.sstr(expr.xreplace(back).xreplace(display).xreplace(names))

    if value.entries:
        return " + ".join(f"({text(c)})*{v}" for v, c in value.entries.items())
    return text(value.expr)


def _verify_latex_claim(cell: Cell, single: SingleStep, entry: LatexClaim) -> Finding:
    # A LaTeX claim, decided as the claim it reads as; its corrected form printed in the
    # paper's notation where the notation can, and kept so only if it reads back and holds.
    finding = verify_claim(cell, single, entry.claim)
    finding.checks.insert(0, f"read in the claim language: {entry.text}")
    latex = entry.latex(finding.corrected) if finding.corrected else None
    if latex is not None:
        back = read_claim(cell, entry.claim.key, latex, entry.claim.line)
        if verify_claim(cell, single, back.claim).verdict == HOLDS:
            finding.checks.append("corrected form, in the paper's notation, read back: holds")
            finding.corrected = latex
    return finding


def verify_specs(paths: Sequence[str | Path]) -> list[Finding]:
    """Verify the ``[claims]`` of each spec file."""
    findings: list[Finding] = []
    for path in paths:
        model = load(path)
        if isinstance(model, Cost):
            if not model.claims:
                raise SpecError(path, None, "claims", "the spec has no [claims] to verify")
            findings += verify_cost(model)
            continue
        if not model.claims and not model.latex_claims:
            raise SpecError(path, None, "claims", "the spec has no [claims] to verify")
        read = latex_claims(model)  # every LaTeX claim read before any is decided
        single = SingleStep(derive(model))
        for claim in model.claims:
            findings.append(verify_claim(model, single, claim))
        for entry in read:
            findings.append(_verify_latex_claim(model, single, entry))
    return findings


__all__ = ["verify_specs", "verify_claim", "SingleStep", "Linear", "equal"]
