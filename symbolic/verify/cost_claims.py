"""Verification of a cost's stated derivative: the ``[claims]`` of a cost spec.

Input: a checked :class:`~symbolic.model.Cost` with claims. Output: one
:class:`~symbolic.verify.verdict.Finding` per claim.

A cost's claim ``dC_d<prediction>`` is the derivative, at one unit j, of the cost of one
row: R = sum over the units k of ``per_unit`` at k, for one sample at one step (the batch
mean's 1/B is not part of it; the target and the named inputs are data). A claim may use
the reductions over the units, as the cost does (softmax cross-entropy's
``sum(y)*exp(a)/sum(exp(a)) - y``). It is decided twice, independently:

1. symbolically, on unrolled rows of :data:`UNITS` units: every reduction written out
   over the units (``sum(e)`` as e_0 + ... + e_{n-1}), R differentiated by each a_j with
   SymPy and compared with the claim at unit j. A ``max`` is written, region by region,
   as the unit that reaches it (the regions where one unit is the maximum cover every
   point but the ties), so each region's row is a smooth expression;
2. numerically, without SymPy's derivative or the derivation: R evaluated with the
   reference evaluator (:mod:`symbolic.evaluate`) at random points, central differences
   by each unit of the prediction, against the claim evaluated there.

Every verdict but ``holds`` carries the corrected form: the derived derivative
(:func:`symbolic.derive.derive_cost`) in the claim language, itself verified the same way.
"""

from __future__ import annotations

import itertools

import numpy as np
import sympy as sp

from symbolic import evaluate, primitives, reductions
from symbolic.derive import derive_cost
from symbolic.model import ROW, Claim, Cost
from symbolic.verify.verdict import FAILS, HOLDS, UNDECIDED, Finding

#: Units of the rows unrolled for the symbolic check.
UNITS = (2, 3)
#: Units of the rows of the numeric check, and the points drawn for each.
NUMERIC_UNITS = (1, 3, 5)
POINTS = 3
FD_STEP = 1e-6
NUMERIC_RTOL = 1e-5
#: The most regions (one maximising unit for each ``max``) tried symbolically.
MAX_REGIONS = 27
#: The spec's names of the reductions (the corrected form is written with them).
SPEC_NAMES = {full: spec for spec, full in reductions.SPEC_REDUCTIONS.items()}


class _Row:
    """A cost expression unrolled over a row of ``n`` units, in one region (the unit
    at which each ``max`` is reached)."""

    def __init__(self, cost: Cost, n: int, region: dict[sp.Expr, int]):
        self.cost = cost
        self.n = n
        self.region = region
        self.memo: dict[tuple[sp.Expr, int], sp.Expr] = {}

    def symbol(self, name: str, k: int) -> sp.Symbol:
        if self.cost.inputs.get(name) == ROW:
            return sp.Symbol(name, real=True)
        return sp.Symbol(f"{name}_{k}", real=True)

    def at(self, expr: sp.Expr, k: int) -> sp.Expr:
        """``expr`` at unit ``k`` of the row."""
        key = (expr, k)
        if key not in self.memo:
            self.memo[key] = self._at(expr, k)
        return self.memo[key]

    def _at(self, expr: sp.Expr, k: int) -> sp.Expr:
        if isinstance(expr, sp.Symbol):
            return self.symbol(expr.name, k)
        if not expr.args:
            return expr
        name = reductions.name_of(expr)
        if name is not None and reductions.is_reduction(expr):
            return self.reduction(name, expr, k)
        return expr.func(*(self.at(arg, k) for arg in expr.args))

    def reduction(self, name: str, call: sp.Expr, k: int) -> sp.Expr:
        arg = call.args[0]
        units = [self.at(arg, i) for i in range(self.n)]
        if name == reductions.SUM:
            return sp.Add(*units)
        if name == reductions.MEAN:
            return sp.Add(*units) / self.n
        if name == reductions.COUNT:
            return sp.Integer(self.n)
        top = self.region[arg]
        if name == reductions.MAX:
            return units[top]
        return sp.S.One if k == top else sp.S.Zero  # MAX_SHARE: no tie inside a region

    def cost_of_row(self) -> sp.Expr:
        return sp.Add(*(self.at(self.cost.per_unit, k) for k in range(self.n)))


def _maxima(*exprs: sp.Expr) -> list[sp.Expr]:
    """The arguments of every ``max`` (and max's share) in ``exprs``, in a fixed order."""
    found = {
        node.args[0]
        for expr in exprs
        for node in sp.preorder_traversal(expr)
        if reductions.name_of(node) in (reductions.MAX, reductions.MAX_SHARE)
    }
    return sorted(found, key=sp.default_sort_key)


def _is_zero(expr: sp.Expr) -> bool:
    expr = primitives.to_elementary(expr)
    if sp.expand(expr) == 0:
        return True
    return sp.simplify(expr) == 0


def symbolic_check(cost: Cost, claim: sp.Expr) -> tuple[bool | None, str]:
    """Whether ``claim`` equals dR/da_j at every unit j of unrolled rows, region by
    region (None: too many regions to try); the sentence saying what was checked."""
    maxima = _maxima(cost.per_unit, claim)
    a = cost.prediction
    for n in UNITS:
        regions = list(itertools.product(range(n), repeat=len(maxima)))
        if len(regions) > MAX_REGIONS:
            return None, f"symbolic: not tried ({len(regions)} regions of max at {n} units)"
        for choice in regions:
            row = _Row(cost, n, dict(zip(maxima, choice, strict=True)))
            total = row.cost_of_row()
            for j in range(n):
                truth = sp.diff(total, row.symbol(a, j))
                if not _is_zero(truth - row.at(claim, j)):
                    return False, f"symbolic: differs from dR/d{a}_{j} on a row of {n} units"
    where = " on each region where one unit is the maximum" if maxima else ""
    units = " and ".join(str(n) for n in UNITS)
    return True, f"symbolic: equals dR/d{a}_j on unrolled rows of {units} units{where}"


def _point(cost: Cost, n: int, rng) -> dict[str, np.ndarray]:
    values = {cost.prediction: rng.uniform(0.1, 0.9, n), cost.target: rng.uniform(0, 1, n)}
    for name, kind in cost.inputs.items():
        values[name] = rng.uniform(0.5, 1.5, () if kind == ROW else n)
    return values


def _row_value(cost: Cost, expr: sp.Expr, values: dict, n: int) -> np.ndarray:
    with np.errstate(all="ignore"):
        out = evaluate.expression(expr, values)
    return np.broadcast_to(np.asarray(out, dtype=float), (n,))


def numeric_check(cost: Cost, claim: sp.Expr, seed: int = 0) -> tuple[float, dict | None]:
    """The worst relative error of ``claim`` against central differences of the row's
    cost (the reference evaluator's), and a counterexample if one exceeds the tolerance."""
    worst, counter = 0.0, None
    for n, index in itertools.product(NUMERIC_UNITS, range(POINTS)):
        rng = np.random.default_rng([seed, n, index])
        values = _point(cost, n, rng)
        truth = np.empty(n)
        for j in range(n):
            bumped = []
            for step in (FD_STEP, -FD_STEP):
                moved = dict(values)
                moved[cost.prediction] = values[cost.prediction].copy()
                moved[cost.prediction][j] += step
                bumped.append(float(np.sum(_row_value(cost, cost.per_unit, moved, n))))
            truth[j] = (bumped[0] - bumped[1]) / (2 * FD_STEP)
        value = _row_value(cost, claim, values, n)
        scale = max(float(np.max(np.abs(truth))), float(np.max(np.abs(value))), 1e-12)
        err = float(np.max(np.abs(truth - value)) / scale)
        if not np.isfinite(err):
            err = float("inf")
        if err > worst:
            worst = err
            if err > NUMERIC_RTOL:
                counter = {
                    "units": n,
                    "point": {k: np.round(v, 6).tolist() for k, v in values.items()},
                    "finite_difference": np.round(truth, 8).tolist(),
                    "claim": np.round(value, 8).tolist(),
                    "relative_error": err,
                }
    return worst, counter


def spec_text(expr: sp.Expr) -> str:
    """An expression in the claim language: reductions by their spec names."""
    named = expr.replace(
        lambda e: reductions.name_of(e) in SPEC_NAMES,
        lambda e: sp.Function(SPEC_NAMES[reductions.name_of(e)])(e.args[0]),
    )
    return sp.sstr(named)


def corrected_form(cost: Cost) -> sp.Expr:
    """The derived derivative, tidied: the terms of max's share dropped where they
    cancel (a max that only shifts, as in a max-shifted log-sum-exp), common factors
    taken out."""
    derived = derive_cost(cost).gradient
    shares = {
        node: sp.S.Zero
        for node in sp.preorder_traversal(derived)
        if reductions.name_of(node) == reductions.MAX_SHARE
    }
    if shares:
        shifted = derived.xreplace(shares)
        if symbolic_check(cost, shifted)[0] and numeric_check(cost, shifted)[1] is None:
            derived = shifted
    return sp.factor_terms(derived)


def verify_cost_claim(cost: Cost, claim: Claim, corrected: sp.Expr) -> Finding:
    """Decide one claim of a cost (see the module docstring)."""
    finding = Finding(
        id=claim.key, line=claim.line, source=claim.source, verdict=UNDECIDED, file=str(cost.path)
    )
    same, said = symbolic_check(cost, claim.expr)
    finding.checks.append(said)
    worst, counter = numeric_check(cost, claim.expr)
    finding.checks.append(
        f"numeric: central differences of the row's cost at {POINTS} random points for each "
        f"of {', '.join(map(str, NUMERIC_UNITS))} units, worst relative error {worst:.1e}"
    )
    if same and counter is None:
        finding.verdict = HOLDS
        finding.detail = "the derivative of the row's cost by the prediction, proved and confirmed"
        return finding
    finding.corrected = spec_text(corrected)
    if counter is not None:
        finding.verdict = FAILS
        finding.counterexample = counter
        finding.detail = (
            f"differs from finite differences by {counter['relative_error']:.1e} (relative) "
            f"on a row of {counter['units']} units; the derivative is {finding.corrected}"
        )
    else:
        finding.detail = (
            "numerically equal but not proved symbolically (an identity SymPy does not see, "
            "or too many regions of max)"
        )
    return finding


def verify_cost(cost: Cost) -> list[Finding]:
    """Every claim of a cost spec."""
    if not cost.claims:
        return []
    corrected = corrected_form(cost)
    findings = [verify_cost_claim(cost, claim, corrected) for claim in cost.claims]
    if any(f.verdict != HOLDS for f in findings):
        proved, _ = symbolic_check(cost, corrected)
        confirmed = numeric_check(cost, corrected)[1] is None
        said = "holds" if proved and confirmed else "not verified"
        for finding in (f for f in findings if f.verdict != HOLDS):
            finding.checks.append(f"corrected form, checked the same way: {said}")
    return findings


__all__ = ["verify_cost", "verify_cost_claim", "symbolic_check", "numeric_check"]
