"""``derivgen run``: the whole job in one command.

1. verify every derivative formula of the paper ("Neural Networks Derivatives",
   W. Moraes, 2020), read from its LaTeX, symbolically and numerically;
2. check that the modules in ``generated/`` are what the specs produce;
3. train the paper's MLP on the 8x8 digits with the generated modules;
4. train the paper's gated recurrent neuron (GRN) on the same digits read row by row;

then print a summary table (verdict counts, the generated check, each model's test
accuracy and wall time) and where the plots are. Each step runs even if an earlier one
failed, so one run shows everything that is wrong; the exit code is 1 if any step failed.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from symbolic import write
from symbolic.train import Config, Result, TrainError, format_metric, train
from symbolic.verify import HOLDS, VERDICTS, Finding

# (model, title, the accuracy the model's defaults reach at least on the held-out split)
# (``derivgen train --model digits-rows --cell gru|lstm|...`` trains the other cells.)
TOUR_MODELS = (
    ("mlp", "MLP on digits", 0.96),
    ("digits-rows", "GRN on digits, row by row", 0.95),
)
# --quick: enough to see every step work (the tests use it), not to learn the digits.
QUICK = {
    "mlp": {"epochs": 2},
    "digits-rows": {"epochs": 1, "hidden": (16,)},
}


@dataclass
class Step:
    """One row of the summary table.

    Attributes:
        name: What the step did.
        ok: Whether it succeeded (a model that trained but missed its target is ok).
        result: One line: counts, figures or the problem.
        seconds: Wall time.
        details: Lines printed under the step as it finishes.
    """

    name: str
    ok: bool
    result: str
    seconds: float
    details: list[str] = field(default_factory=list)


def run_verification() -> Step:
    """Step 1: the verdict on every formula of the paper, found in its LaTeX and read
    through its notation file (``symbolic.verify.document``; the hand transcription of
    ``symbolic.verify.moraes2020`` is the tests' golden reference, not used here)."""
    start = time.perf_counter()
    try:
        from symbolic.verify import verify_document

        findings = verify_document()
    except Exception as exc:  # the tour reports a broken step and goes on to the next
        return Step(
            "paper verification",
            False,
            f"could not run: {type(exc).__name__}: {exc}",
            time.perf_counter() - start,
        )
    return summarise_findings(findings, time.perf_counter() - start)


def summarise_findings(findings: list[Finding], seconds: float) -> Step:
    """The verification step's row: verdict counts, and each formula that does not hold.

    The step fails only if a formula was left undecided: a paper with errors is what
    the verifier is for, not a failure of the tour.
    """
    counts = Counter(f.verdict for f in findings)
    order = [*VERDICTS, *sorted(set(counts) - set(VERDICTS))]
    text = ", ".join(f"{counts[v]} {v}" for v in order if counts[v])
    undecided = sum(n for v, n in counts.items() if v not in VERDICTS)
    details = [f"line {f.line:>3}  {f.verdict:<13}  {f.id}" for f in findings if f.verdict != HOLDS]
    if details:
        details.append("(`derivgen verify` prints why, and each corrected formula, verified)")
    return Step(
        "paper verification",
        undecided == 0,
        f"{len(findings)} formulas: {text}",
        seconds,
        details,
    )


def run_check() -> Step:
    """Step 2: are the committed generated modules what the specs produce?"""
    start = time.perf_counter()
    try:
        from symbolic.generate import generate

        _, problems = generate(check_only=True)
    except Exception as exc:  # report, and still train with what is there
        return Step(
            "generated modules",
            False,
            f"could not check: {type(exc).__name__}: {exc}",
            time.perf_counter() - start,
        )
    seconds = time.perf_counter() - start
    if problems:
        return Step(
            "generated modules",
            False,
            f"{len(problems)} stale: run derivgen generate",
            seconds,
            [str(problem) for problem in problems],
        )
    return Step("generated modules", True, "current (derivgen generate --check)", seconds)


def run_training(
    model: str, title: str, target: float, args: argparse.Namespace
) -> tuple[Step, Result | None]:
    """Steps 3 and 4: train ``model`` with its defaults (or the quick settings)."""
    overrides = QUICK[model] if args.quick else {}
    config = Config(
        model=model,
        backend=args.backend,
        seed=args.seed,
        out=Path(args.out) / model,
        progress=not args.no_progress,
        **overrides,
    )
    start = time.perf_counter()
    try:
        result = train(config)
    except TrainError as exc:
        return Step(title, False, f"could not train: {exc}", time.perf_counter() - start), None
    figure = format_metric(result.metric, result.test_metric)
    if result.status == "diverged":
        return Step(title, False, f"diverged: {result.message}", result.wall_time), result
    met = "met" if result.test_metric >= target else "not met"
    text = f"test {figure} (target {100 * target:.0f}%: {met}), {result.config.epochs} epochs"
    return Step(title, True, text, result.wall_time), result


def summary_table(steps: list[Step]) -> str:
    """The final table: one row per step."""
    rows = [("step", "result", "time")]
    rows += [
        (s.name, s.result if s.ok else f"FAILED: {s.result}", f"{s.seconds:.1f}s") for s in steps
    ]
    width = [max(len(row[k]) for row in rows) for k in range(2)]
    lines = [f"{rows[0][0]:<{width[0]}}  {rows[0][1]:<{width[1]}}  {rows[0][2]:>6}"]
    lines.append(f"{'-' * width[0]}  {'-' * width[1]}  {'-' * 6}")
    lines += [f"{a:<{width[0]}}  {b:<{width[1]}}  {c:>6}" for a, b, c in rows[1:]]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``derivgen run``."""
    parser.description = (
        "Verify the paper's derivatives, check generated/, train the MLP and the GRN on "
        "the digits, and summarise."
    )
    parser.add_argument(
        "--quick", action="store_true", help="train for a moment only (a smoke test)"
    )
    parser.add_argument(
        "--backend", choices=("numpy", "numba"), default="numpy", help="generated modules"
    )
    parser.add_argument("--seed", type=int, default=0, help="training seed (0)")
    parser.add_argument(
        "--out",
        type=write.path_argument,
        default=Path("runs"),
        help="folder for checkpoints and plots (runs)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def main(args: argparse.Namespace) -> int:
    """``derivgen run``: 0 when every step succeeded, 1 otherwise."""
    start = time.perf_counter()
    steps: list[Step] = []
    plots: list[Path] = []

    def announce(number: int, text: str) -> None:
        print(f"[{number}/4] {text}", flush=True)

    def report(step: Step) -> None:
        steps.append(step)
        print(f"      {step.result if step.ok else 'FAILED: ' + step.result}")
        for line in step.details:
            print(f"        {line}")
        sys.stdout.flush()

    announce(1, "verifying every derivative formula of the paper")
    report(run_verification())
    announce(2, "checking generated/ against the specs")
    report(run_check())
    for number, (model, title, target) in enumerate(TOUR_MODELS, start=3):
        announce(number, f"training the {title} ({args.backend})")
        step, result = run_training(model, title, target, args)
        report(step)
        if result is not None and result.plot:
            plots.append(result.plot)
    print()
    print(summary_table(steps))
    print(f"\ntotal {time.perf_counter() - start:.1f}s")
    if plots:
        print("plots:")
        for plot in plots:
            print(f"  {plot}")
    return 0 if all(step.ok for step in steps) else 1
