"""Verification of stated derivatives: the ``[claims]`` of a spec (pipeline stage: verify).

Input: spec files with ``[claims]``. Output: one :class:`~symbolic.verdict.Finding` per
claim.

A claim is the single-step (local) gradient at one neuron (DESIGN.md, "Spec format").
It is decided twice, independently:

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
from pathlib import Path

import numpy as np
import sympy as sp

from symbolic import naming, primitives
from symbolic.derive import Assign, Derivation, derive
from symbolic.model import Cell, Claim
from symbolic.parse import SpecError, load
from symbolic.verdict import FAILS, HOLDS, ILL_FORMED, UNDECIDED, Finding

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


class SingleStep:
    """The derived single-step gradients of a cell, in claim notation.

    Every expression is written in the cell's inputs (parameters, input entries, states,
    projection symbols) and the leaf adjoints ``dC_d<leaf>``.
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
        for stmt in derivation.backward:
            if not isinstance(stmt, Assign):
                continue
            if stmt.target in leaves:
                name = stmt.target[1:]
                self.adjoints[stmt.target] = adjoint_symbol(name)
                continue
            self.adjoints[stmt.target] = self._expand_adjoints(stmt.expr)
        for stmt in derivation.backward:
            if not isinstance(stmt, Assign):
                self.adjoints[stmt.target] = sp.Symbol(stmt.target)

    def _expand_adjoints(self, expr: sp.Expr) -> sp.Expr:
        subs = {sp.Symbol(k): v for k, v in self.adjoints.items()}
        return expr.xreplace(subs)

    def inputs(self, expr: sp.Expr) -> sp.Expr:
        """``expr`` with every intermediate written in the cell's inputs."""
        return expr.xreplace(self.forward)

    def gradient(self, wrt: str) -> sp.Expr | dict[str, sp.Expr]:
        """The derived single-step gradient by ``wrt``.

        A vector parameter or a state: the per-neuron value. A matrix parameter: the
        value at entry (i, j), with the symbol of what it multiplies standing for its
        j-th entry. The input: ``{matrix: v}`` for ``sum_M M.T @ v``.
        """
        cell = self.cell
        if wrt in cell.states:
            expr = self.adjoints[naming.adjoint(wrt)]
            return self.inputs(expr)
        if wrt == cell.input:
            out: dict[str, sp.Expr] = {}
            for proj in cell.projections:
                if proj.arg == cell.input:
                    dp = self.adjoints[naming.adjoint(proj.name)]
                    out[proj.matrix] = out.get(proj.matrix, 0) + self.inputs(dp)
            return out
        kind = cell.params[wrt]
        for grad in self.derivation.param_grads:
            if grad.param != wrt:
                continue
            if kind == "vector":
                return self.inputs(self._expand_adjoints(grad.expr))
        total = sp.Integer(0)
        for grad in self.derivation.param_grads:
            if grad.param == wrt:
                dp = self.adjoints[grad.expr.name]
                total += self.inputs(dp) * sp.Symbol(grad.arg)
        return self.inputs(total)

    def claim_value(self, claim: Claim) -> sp.Expr | dict[str, sp.Expr]:
        """The claim in the same terms (its ``dC_d<symbol>`` read as derived adjoints)."""
        subs = {}
        for target, value in self.adjoints.items():
            name = target[1:]
            subs[adjoint_symbol(name)] = value
        expr = claim.expr.xreplace(subs)
        if claim.wrt != self.cell.input:
            return self.inputs(expr)
        return _transposed_parts(claim, expr, self)


def _transposed_parts(claim: Claim, expr: sp.Expr, single: SingleStep):
    """Split ``sum_k coeff_k * M_k.T @ v_k`` into ``{M: v}``; raise ValueError if the
    claim is not of that form."""
    symbols = {sp.Symbol(k): v for k, v in claim.transposed.items()}
    rest = sp.expand(expr.xreplace({s: 0 for s in symbols}))
    if rest != 0 or not symbols:
        raise ValueError(
            "a gradient by the input is a sum over the layer's neurons: write it as "
            "M.T @ v terms (e.g. WXc.T @ (dC_da*G*tanh_prime(Zc)))"
        )
    parts: dict[str, sp.Expr] = {}
    for sym, (matrix, vector) in symbols.items():
        coeff = sp.diff(expr, sym)
        if coeff.free_symbols & set(symbols):
            raise ValueError("M.T @ v terms may not multiply each other")
        vec = vector.xreplace({adjoint_symbol(t[1:]): v for t, v in single.adjoints.items()})
        parts[matrix] = parts.get(matrix, 0) + single.inputs(coeff * vec)
    return parts


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
        derivation = derive(cell)
        projections = {p.name: p for p in cell.projections}
        for eq in derivation.equations:
            args = sorted(eq.expr.free_symbols, key=lambda s: s.name)
            fn = sp.lambdify(args, eq.expr, modules=[namespace, "numpy"])
            self.functions.append((eq.name, [a.name for a in args], fn))
        self.projections = projections
        self.order = [eq.name for eq in derivation.equations]

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
        """The claim's value at this point (per neuron, per matrix entry, or per input)."""
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
                if target in self.weights:
                    adjoints[name] = self.weights[target]
                elif target in cell.states or target == cell.input:
                    raise ValueError(f"{name}: the adjoint of an input is what a claim states")
                else:
                    adjoints[name] = self.adjoint(target)

        def value(expr, entry: str | None = None):
            """Per neuron i; with ``entry``, per matrix entry (i, j), the symbol ``entry``
            standing for the j-th entry of what the matrix multiplies."""
            args = sorted(expr.free_symbols, key=lambda s: s.name)
            fn = sp.lambdify(args, expr, modules=[namespace, "numpy"])
            vals = []
            for a in args:
                v = adjoints[a.name] if a.name in adjoints else env[a.name]
                if entry is not None:
                    v = v[None, :] if a.name == entry else v[:, None]
                vals.append(v)
            with np.errstate(all="ignore"):
                return np.asarray(fn(*vals), dtype=float)

        wrt = claim.wrt
        if wrt == cell.input:
            total = np.zeros(N_IN)
            for sym, (matrix, vector) in claim.transposed.items():
                coeff = sp.diff(claim.expr, sp.Symbol(sym))
                v = value(coeff * vector) * np.ones(N_OUT)
                total = total + env[matrix].T @ v
            return total
        if cell.params.get(wrt) == "matrix":
            arg = next(p.arg for p in cell.projections if p.matrix == wrt)
            shape = self.values[wrt].shape
            return np.broadcast_to(value(claim.expr, entry=arg), shape).copy()
        return value(claim.expr) * np.ones(N_OUT)


def _relerr(a: np.ndarray, b: np.ndarray) -> float:
    scale = max(np.max(np.abs(a)), np.max(np.abs(b)), 1e-12)
    return float(np.max(np.abs(a - b)) / scale)


def _show(expr: sp.Expr | dict) -> str:
    if isinstance(expr, dict):
        return " + ".join(f"{m}.T @ ({sp.sstr(v)})" for m, v in expr.items())
    return sp.sstr(expr)


def verify_claim(cell: Cell, single: SingleStep, claim: Claim) -> Finding:
    """Decide one claim (see the module docstring)."""
    finding = Finding(
        id=claim.key, line=claim.line, source=claim.source, verdict=UNDECIDED, file=str(cell.path)
    )
    derived = single.gradient(claim.wrt)
    corrected = _show(_compact(derived, single))
    try:
        claimed = single.claim_value(claim)
    except ValueError as exc:
        finding.verdict = ILL_FORMED
        finding.detail = str(exc)
        finding.corrected = corrected
        return finding
    # 1. symbolic
    if isinstance(derived, dict):
        keys = set(derived) | set(claimed)
        same = all(sp.expand(derived.get(k, 0) - claimed.get(k, 0)) == 0 for k in keys)
    else:
        same = sp.expand(derived - claimed) == 0
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


def _compact(expr, single: SingleStep):
    """The derived gradient with forward values put back (G for sigmoid(Zu), ...)."""
    back = {v: k for k, v in single.forward.items() if primitives.is_primitive_call(v)}
    if isinstance(expr, dict):
        return {k: v.xreplace(back) for k, v in expr.items()}
    return expr.xreplace(back)


def verify_specs(paths: Sequence[str | Path]) -> list[Finding]:
    """Verify the ``[claims]`` of each spec file."""
    findings: list[Finding] = []
    for path in paths:
        model = load(path)
        if not isinstance(model, Cell):
            raise SpecError(path, None, None, "only cells carry claims")
        if not model.claims:
            raise SpecError(path, None, "claims", "the spec has no [claims] to verify")
        single = SingleStep(derive(model))
        for claim in model.claims:
            findings.append(verify_claim(model, single, claim))
    return findings


def verify_table(findings: list[Finding], elapsed: float | None = None) -> str:
    """A readable table of findings, then the corrected forms and counterexamples."""
    from collections import Counter

    rows = [("id", "line", "verdict", "note")]
    for f in findings:
        note = f.detail.split(". ")[0]
        if len(note) > 90:
            note = note[:87] + "..."
        rows.append((f.id, str(f.line), f.verdict, note))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = []
    for i, row in enumerate(rows):
        lines.append("  ".join(row[k].ljust(widths[k]) for k in range(3)) + "  " + row[3])
        if i == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 4)
    details = [f for f in findings if f.verdict != HOLDS]
    if details:
        lines.append("")
        lines.append("Corrections:")
        for f in details:
            lines.append(f"  {f.id} (line {f.line}): {f.verdict}")
            lines.append(f"    as printed: {f.source}")
            if f.detail:
                lines.append(f"    why:        {f.detail}")
            if f.corrected:
                lines.append(f"    corrected:  {f.corrected}")
    counts = Counter(f.verdict for f in findings)
    summary = ", ".join(f"{n} {v}" for v, n in sorted(counts.items()))
    timing = f" in {elapsed:.1f} s" if elapsed is not None else ""
    lines.append("")
    lines.append(f"{len(findings)} formulas decided{timing}: {summary}")
    return "\n".join(lines)


__all__ = ["verify_specs", "verify_table", "verify_claim", "SingleStep"]
