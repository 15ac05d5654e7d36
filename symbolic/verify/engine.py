"""The formula-checking engine: a paper's derivative formulas, read or transcribed, decided.

The engine knows no paper. A document read with its notation file
(:mod:`symbolic.verify.document`) or a hand transcription (:mod:`symbolic.verify.moraes2020`,
the golden reference) builds a :class:`Paper` from its text and its :class:`Formula`
records and hands it to the engine; the oracle is the concrete unrolled models of
:mod:`symbolic.verify.unrolled`.

A formula is transcribed as one or more *readings* (where the notation allows several),
each a function of a context (:class:`~symbolic.verify.unrolled.SymbolicContext`, exact,
or :class:`~symbolic.verify.unrolled.NumericContext`, finite differences) and the
formula's indices. Its left side is always dC/d(something): ``wrt`` names that something.

:meth:`Paper.verify` computes each verdict (vocabulary in :mod:`symbolic.verify.verdict`):

- ``holds``: every reading equals the total derivative exactly, on every concrete model
  the formula speaks of, and finite differences agree at random points (rel. err < 1e-6).
- ``holds-locally``: not the total derivative, but exactly the contribution of time
  step t alone (the value perturbed only in step t's equations), or the single path
  from step t to the cost of step t (:data:`NOTIONS`); ``detail`` says what the total
  adds, in the paper's words.
- ``ambiguous``: conventional readings disagree; ``detail`` says which hold.
- ``fails``: no reading holds; ``counterexample`` has the point and both values. A
  reading that repairs a symbol used against its defined meaning (``Formula.against``)
  is no reading: the detail says whether it holds (the rule of
  :mod:`symbolic.verify.verdict`).
- ``ill-formed``: a display with unbalanced brackets (counted in the LaTeX source), or
  a free index (the right side changes when it varies).

Every verdict but ``holds`` carries the formula's corrected form (a reading that holds,
printed on its own, else the derived formula), itself verified as ``holds`` by the same
checks; where no corrected form holds, the verdict stands and the detail says so.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from symbolic.verify.unrolled import (
    COST,
    Context,
    Key,
    NoSuchNeuron,
    NumericContext,
    Shape,
    SymbolicContext,
    Unrolled,
    label,
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

FD_TOLERANCE = 1e-6  # a formula that holds agrees with finite differences this well
FD_FLOOR = 1e-2  # derivatives smaller than this are compared in absolute terms
DIFFERENT = 1e-4  # a counterexample differs by more than this (relative)
SEEDS = (1, 2)  # random points per model for the numeric confirmations


# ------------------------------------------------------------------------ formulas

Reading = Callable[..., object]
"""``(ctx, **indices) -> value``: the right side of a formula in one reading."""


@dataclass(frozen=True)
class Formula:
    """One derivative formula as printed, with its transcription.

    Attributes:
        id: Stable identifier, ``<part>.<dC_d quantity>.<form>``.
        line: The line its first row starts on (1-based, in the paper's file).
        last: The line its last row ends on (continuation rows and split displays).
        models: The concrete models it speaks of.
        indices: For a model's shape, the index values to check (``t`` is the time step
            the formula is stated at; the others are those of its left side).
        wrt: ``(**indices) -> key``: the left side is dC/d(key).
        readings: Reading name -> transcription of the right side.
        free: Free indices of the printed right side -> their range on a shape.
        corrected: The corrected formula (LaTeX), for formulas that do not hold.
        fix: The corrected formula transcribed (a :class:`Formula`, itself checked).
        repairs: Reading name -> that reading printed on its own (a :class:`Formula`);
            where a reading holds, its repair is the correction.
        against: Names of the readings that repair a symbol the formula, as printed,
            uses against its defined meaning: they decide no verdict, the detail says
            which of them holds (DESIGN.md, CLI: verdict semantics).
        note: How the notation was read (spellings, implied superscripts).
        latex: The source when it is not the paper's text (corrected forms).
        custom: A check of its own (for a formula that is not a derivative of C).
        printed: The paper's lines ``line`` to ``last``, filled in by its :class:`Paper`.
        unfixed: Why no correction could be derived, when that is known (the section's
            spec cannot be written in the document's notation).
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
    repairs: Mapping[str, Formula] = field(default_factory=dict)
    against: frozenset[str] = frozenset()
    note: str = ""
    latex: str | None = None
    custom: Callable[[Formula], Finding] | None = None
    printed: str = field(default="", repr=False)
    unfixed: str = ""

    @property
    def source(self) -> str:
        """The formula exactly as printed (its lines of the paper, joined by newlines)."""
        if self.latex is not None:
            return self.latex
        return self.printed


def relative_difference(x: float, ref: float) -> float:
    """``|x - ref|`` relative to ``max(|x|, |ref|, FD_FLOOR)``.

    Below the floor a central difference's rounding (eps*|C|/h, about 1e-9 here)
    dominates any relative figure, so small derivatives are held to an absolute 1e-8
    instead.
    """
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


# -------------------------------------------------------------- checking a reading


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
cost of step t (the value ``("Ct", t)`` of an unrolled model)."""

Case = tuple[Unrolled, dict, object]
"""A model, the formula's index values on it, and the exact right side there."""


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


def _names(names: Iterable[str]) -> str:
    names = list(names)
    return ", ".join(names) if len(names) <= 3 else f"{len(names)} models ({names[0]}, ...)"


@functools.cache
def _numeric(model: Unrolled, seed: int) -> NumericContext:
    # One numeric context per model and random point, shared by every formula: the
    # finite differences it caches are the same whichever formula asks.
    return NumericContext(model, model.numeric.random_point(seed))


def _counterexample(reading: Reading, model: Unrolled, idx: dict, target: Callable) -> dict | None:
    # The random point (of five) where the reading and the target differ the most.
    best, best_gap = None, DIFFERENT
    for seed in (1, 2, 3, 4, 5):
        ctx = _numeric(model, seed)
        point = ctx.point
        value, truth = float(reading(ctx, **idx)), float(target(ctx, idx))
        if relative_difference(value, truth) > best_gap:
            best_gap = relative_difference(value, truth)
            best = {
                "model": model.name,
                "indices": dict(idx),
                "seed": seed,
                "point": {label(k): v for k, v in point.items()},
                "formula": value,
                "total": truth,
            }
    return best


def _confirm(reading: Reading, cases: list[Case], target: Callable) -> tuple[float, int]:
    # Finite differences (NumPy model) against the formula evaluated numerically, at
    # SEEDS random points per model.
    worst, count = 0.0, 0
    by_model: dict[str, tuple[Unrolled, list[dict]]] = {}
    for model, idx, _ in cases:
        by_model.setdefault(model.name, (model, []))[1].append(idx)
    for model, indices in by_model.values():
        for seed in SEEDS:
            ctx = _numeric(model, seed)
            for idx in indices:
                value, truth = float(reading(ctx, **idx)), float(target(ctx, idx))
                worst = max(worst, relative_difference(value, truth))
                count += 1
    return worst, count


def _exact_cases(
    formula: Formula, reading: Reading, result: ReadingResult
) -> tuple[list[Case], list[tuple[Unrolled, dict]]]:
    # The reading against the exact total derivative at every index of every model:
    # every case it could be evaluated on, and those where it differs.
    cases: list[Case] = []
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
    return cases, failing


def _confirm_total(
    formula: Formula, reading: Reading, cases: list[Case], result: ReadingResult, prefix: str
) -> None:
    # The reading is the total derivative everywhere: say so, and confirm by FD.
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


def _find_counterexample(
    formula: Formula,
    reading: Reading,
    failing: list[tuple[Unrolled, dict]],
    result: ReadingResult,
    prefix: str,
) -> bool:
    # The clearest counterexample among the first failing cases of the smallest model;
    # False when none shows numerically (a problem of the checks, recorded).
    first = [(m, idx) for m, idx in failing if m is failing[0][0]][:6]
    found = [_counterexample(reading, m, idx, _total_of(formula)) for m, idx in first]
    found = [cx for cx in found if cx]
    if not found:
        result.problems.append(
            f"differs exactly from the total on {_describe(*failing[0])}, but not numerically"
        )
        return False
    cx = result.counterexample = max(
        found, key=lambda c: relative_difference(c["formula"], c["total"])
    )
    result.checks.append(
        f"{prefix}differs from the total derivative: on {cx['model']}, "
        f"{_where(cx['indices'])} (seed {cx['seed']}) formula {cx['formula']:.6g} vs "
        f"total (FD) {cx['total']:.6g}"
    )
    return True


def _check_reading(formula: Formula, name: str, reading: Reading) -> ReadingResult:
    """Classify one reading: exact checks on every model, then finite differences."""
    result = ReadingResult(name, all_models=[m.name for m in formula.models()])
    prefix = f"reading '{name}': " if len(formula.readings) > 1 else ""
    cases, failing = _exact_cases(formula, reading, result)
    if not cases and not result.missing:
        result.problems.append("no index value of the formula exists on the models checked")
        return result
    if not failing and not result.missing:
        _confirm_total(formula, reading, cases, result, prefix)
        return result
    if result.missing:
        result.checks.append(f"{prefix}asks for {result.missing}")
    if failing and not _find_counterexample(formula, reading, failing, result, prefix):
        return result
    if result.total_models:
        result.checks.append(
            f"{prefix}exact: equals the total derivative on {', '.join(result.total_models)}"
        )
    if not result.missing and all("t" in idx for _, idx, _ in cases):
        _check_local(formula, reading, cases, result, prefix)
    return result


def _check_local(
    formula: Formula, reading: Reading, cases: list[Case], result: ReadingResult, prefix: str
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
                _check_last_step(formula, cases, result, prefix)
            return


def _check_last_step(
    formula: Formula, cases: list[Case], result: ReadingResult, prefix: str
) -> None:
    # At the last step nothing follows: is the single path then the whole contribution
    # of that step?
    last = [(m, idx, rhs) for m, idx, rhs in cases if idx["t"] == m.shape.T]
    result.last_step = all(
        _local(SymbolicContext(m), formula, idx, "step") == rhs for m, idx, rhs in last
    )
    if result.last_step:
        result.checks.append(
            f"{prefix}exact: at t = T it is also {NOTIONS['step']} ({len(last)} cases)"
        )


def _free_index(formula: Formula, name: str, reading: Reading) -> str | None:
    """Vary each free index at fixed left-side indices; the first change found, in words
    (None when the right side does not depend on it)."""
    for model in formula.models():
        for idx in formula.indices(model.shape):
            for index, domain in formula.free.items():
                values = list(domain(model.shape, idx))[:2]
                if len(values) < 2:
                    continue
                try:
                    sym = SymbolicContext(model)
                    exact = [reading(sym, **idx, **{index: v}) for v in values]
                    num = _numeric(model, SEEDS[0])
                    numeric = [float(reading(num, **idx, **{index: v})) for v in values]
                except NoSuchNeuron:
                    break
                if exact[0] != exact[1] and relative_difference(*numeric) > DIFFERENT:
                    return (
                        f"free index {index} (outside its sum, not on the left side): on "
                        f"{_describe(model, idx)}, reading '{name}' gives {numeric[0]:.6g} "
                        f"for {index}={values[0]} and {numeric[1]:.6g} for {index}={values[1]}"
                        " (the exact values differ too)"
                    )
    return None


# ---------------------------------------------------------------------- verdicts


def _as_total(r: ReadingResult) -> str:
    """Where a local reading is nevertheless the total derivative (naming the exceptions
    when they are fewer); empty when nowhere."""
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


def default_local_detail(formula: Formula, r: ReadingResult) -> str:
    """The default account of a formula that holds locally: which local term it is.

    A paper replaces it with its own words on what the total derivative adds
    (:class:`Paper`'s ``local_detail``).
    """
    return f"The formula is {NOTIONS[r.notion]}."


def _check_readings(formula: Formula, finding: Finding, reasons: list[str]) -> list[ReadingResult]:
    # Each reading checked; a reading with a free index has no value of its own, so
    # it is only shown to vary (a reason the formula cannot be read as printed).
    results: list[ReadingResult] = []
    for name, reading in formula.readings.items():
        params = set(inspect.signature(reading).parameters) - {"c"}
        if params & set(formula.free):
            free = _free_index(formula, name, reading)
            if free:
                reasons.append(free)
                finding.checks.append(free)
        else:
            results.append(_check_reading(formula, name, reading))
    for r in results:
        finding.checks += r.checks
    return results


def _set_verdict(
    paper: Paper,
    formula: Formula,
    finding: Finding,
    results: list[ReadingResult],
    reasons: list[str],
) -> None:
    # The verdict from the readings' results and the reasons it cannot be read; a
    # repair of a symbol used against its meaning is no reading (verdict.py's rule).
    printed = [r for r in results if r.name not in formula.against]
    repairs = [r for r in results if r.name in formula.against]
    statuses = {r.status for r in printed}
    if reasons:
        finding.verdict = ILL_FORMED
        finding.detail = "Cannot be read as printed: " + "; ".join(reasons) + "."
        if results:
            finding.detail += " Read either way: " + "; ".join(map(_reading_words, results)) + "."
    elif len(statuses) > 1:
        finding.verdict = AMBIGUOUS
        finding.detail = "Readings disagree: " + "; ".join(map(_reading_words, printed)) + "."
    elif printed:
        r = printed[0]
        finding.verdict = r.status
        if r.status == HOLDS_LOCALLY:
            finding.detail = paper.local_detail(formula, r)
            if r.total_models:
                finding.detail += f" Of the models checked, {_as_total(r)}."
        elif r.status == FAILS:
            finding.counterexample = r.counterexample
            finding.detail = "No reading holds: " + _reading_words(r) + "."
            if repairs:
                finding.detail = (
                    "As printed, a symbol is used against its defined meaning and the "
                    f"formula fails: {_reading_words(r)}. Repaired: "
                    + "; ".join(map(_reading_words, repairs))
                    + "."
                )


def _decide(paper: Paper, formula: Formula) -> Finding:
    """Compute one formula's verdict from the checks (see the module docstring)."""
    if formula.custom is not None:
        return formula.custom(formula)
    finding = Finding(formula.id, formula.line, formula.source, UNDECIDED, file=paper.file)
    reasons = bracket_problems(formula.source)
    finding.checks += [f"brackets: {p}" for p in reasons] or ["brackets: every display balances"]
    results = _check_readings(formula, finding, reasons)
    problems = [p for r in results for p in r.problems]
    if problems:
        finding.detail = "Not decided: " + "; ".join(problems) + "."
        return finding
    _set_verdict(paper, formula, finding, results, reasons)
    if formula.note:
        finding.detail = (finding.detail + " " + formula.note).strip()
    if finding.verdict not in (HOLDS, UNDECIDED):
        _attach_correction(paper, formula, finding, results)
    return finding


def _attach_correction(
    paper: Paper, formula: Formula, finding: Finding, results: list[ReadingResult]
) -> None:
    # The corrected form is checked like any formula and must hold: a reading that
    # holds, printed on its own (the closest repair), else the derived formula. None
    # holding leaves the verdict as it is and says so.
    candidates = [
        formula.repairs[r.name] for r in results if r.status == HOLDS and r.name in formula.repairs
    ]
    if formula.fix is not None:
        candidates.append(formula.fix)
    if not candidates:
        why = f" ({formula.unfixed})" if formula.unfixed else ""
        finding.detail += f" No corrected form could be derived{why}."
        return
    for candidate in candidates:
        fixed = paper.verify_formula(candidate.id)
        summary = "; ".join(fixed.checks)
        if fixed.verdict == HOLDS:
            finding.corrected = formula.corrected or candidate.latex
            finding.checks.append(f"corrected form holds: {summary}")
            return
        finding.checks.append(f"corrected form {candidate.id}: {fixed.verdict}: {summary}")
    finding.detail += " No corrected form found holds."


# ------------------------------------------------------------------------- papers


class Paper:
    """A paper the engine checks: its text and its formulas, transcribed.

    Each formula is decided once (a corrected form when the formula that needs it is)
    and handed out as a fresh copy.

    Args:
        file: The paper's file, as each finding names it.
        lines: Returns the paper's lines (``lines()[k - 1]`` is line ``k``); read when
            the formulas are first needed.
        transcription: Returns the paper's formulas, in the paper's order.
        local_detail: ``(formula, result) -> text``: for a formula that holds locally,
            what the total derivative adds, in the paper's words (default: which local
            term it is, :func:`default_local_detail`).
    """

    def __init__(
        self,
        file: str,
        lines: Callable[[], Sequence[str]],
        transcription: Callable[[], Iterable[Formula]],
        local_detail: Callable[[Formula, ReadingResult], str] = default_local_detail,
    ):
        self.file = file
        self.lines = lines
        self.transcription = transcription
        self.local_detail = local_detail
        self._findings: dict[str, Finding] = {}

    def _with_text(self, formula: Formula) -> Formula:
        lines = self.lines()
        fix = None if formula.fix is None else self._with_text(formula.fix)
        printed = "\n".join(lines[formula.line - 1 : formula.last])
        return replace(formula, printed=printed, fix=fix)

    @functools.cached_property
    def _formulas(self) -> tuple[Formula, ...]:
        return tuple(self._with_text(f) for f in self.transcription())

    @functools.cached_property
    def _by_id(self) -> dict[str, Formula]:
        table: dict[str, Formula] = {}
        for entry in self._formulas:
            table[entry.id] = entry
            for fix in (entry.fix, *entry.repairs.values()):
                if fix is not None:
                    table.setdefault(fix.id, fix)
        return table

    def formulas(self) -> tuple[Formula, ...]:
        """Every formula of the paper, in the paper's order."""
        return self._formulas

    def formula(self, formula_id: str) -> Formula:
        """A formula, or a corrected form (``<id>.corrected``), by id."""
        return self._by_id[formula_id]

    def verify_formula(self, formula_id: str) -> Finding:
        """The finding for one formula or corrected form (computed once; a fresh copy)."""
        if formula_id not in self._findings:
            self._findings[formula_id] = _decide(self, self.formula(formula_id))
        found = self._findings[formula_id]
        return replace(found, checks=list(found.checks))

    def verify(self) -> list[Finding]:
        """One finding per formula, in the paper's order (see the module docstring)."""
        return [self.verify_formula(f.id) for f in self.formulas()]
