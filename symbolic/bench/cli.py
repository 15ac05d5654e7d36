"""``derivgen bench``'s command line: its options, their resolution into ``Settings``, and
the run that prints the report."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from symbolic import write
from symbolic.bench.candidates import BACKENDS_HELP, DEFAULT_BACKENDS, parse_backends
from symbolic.bench.chart import chart_path, save_chart
from symbolic.bench.machine import load
from symbolic.bench.measure import Bench, Section, Settings
from symbolic.bench.report import render_markdown
from symbolic.bench.workloads import QUICK_WORKLOADS, WORKLOADS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``derivgen bench``."""
    parser.description = (
        "Time the generated modules against hand-written NumPy, PyTorch and JAX on the MLP "
        "(A1, A2) and GRN (B1, B2, B3) workloads, after checking every backend's gradients."
    )
    parser.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        help=f"comma-separated, from {', '.join(WORKLOADS)} (default: all)",
    )
    parser.add_argument("--dtype", choices=("float32", "float64", "both"), default="both")
    parser.add_argument("--repeats", type=int, help="samples per backend (15; --quick 3)")
    parser.add_argument(
        "--out",
        type=write.path_argument,
        help="also write the Markdown report to this file, and its chart beside it "
        "(the same name with .png)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="toy sizes and few samples: a smoke test"
    )
    parser.add_argument(
        "--backends",
        type=parse_backends,
        default=list(DEFAULT_BACKENDS),
        help=BACKENDS_HELP,
    )
    parser.add_argument(
        "--compile-budget",
        type=float,
        help="seconds allowed for one compile, in a child process (300; --quick 120; 0: no limit)",
    )
    parser.add_argument("--min-sample-ms", type=float, help="shortest sample (50; --quick 1)")
    parser.add_argument(
        "--settle", type=float, help="idle seconds before each sample (0.15; --quick 0)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of parameters and data")
    parser.add_argument(
        "--processes",
        type=int,
        help="child processes each child row's samples are spread over, the rounds split "
        "evenly between them (3; --quick 1): a process can keep one speed all its life",
    )
    parser.add_argument(
        "--no-first-call",
        dest="first_call",
        action="store_false",
        help="skip the first-call section (each Numba module compiled cold, then warm)",
    )


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Resolve the command line into ``Settings`` (quick mode changes the defaults)."""
    table = QUICK_WORKLOADS if args.quick else WORKLOADS
    names = [n.strip().upper() for n in str(args.workloads).split(",") if n.strip()]
    unknown = [n for n in names if n not in table]
    if unknown:
        print(
            f"derivgen bench: error: unknown workload(s) {unknown}; choose from {list(table)}",
            file=sys.stderr,
        )
        raise SystemExit(2)

    def pick(value, normal, quick):
        return value if value is not None else (quick if args.quick else normal)

    processes = pick(getattr(args, "processes", None), 3, 1)
    if processes < 1:
        print(
            f"derivgen bench: error: --processes must be 1 or more, not {processes}",
            file=sys.stderr,
        )
        raise SystemExit(2)

    return Settings(
        workloads=[table[n] for n in names],
        dtypes=["float32", "float64"] if args.dtype == "both" else [args.dtype],
        backends=list(args.backends),
        repeats=pick(args.repeats, 15, 3),
        warmup=1 if args.quick else 2,
        min_sample_ms=pick(args.min_sample_ms, 50.0, 1.0),
        settle=pick(args.settle, 0.15, 0.0),
        compile_budget=pick(args.compile_budget, 300.0, 120.0),
        quick=args.quick,
        seed=args.seed,
        first_call=getattr(args, "first_call", True),
        processes=processes,
    )


def draw_chart(out: Path, sections: list[Section]) -> Path | None:
    """The chart of the report ``out``, drawn beside it; None when no row was timed or
    drawing failed (said on stderr): the report, a long run's result, is written anyway."""
    path = chart_path(out)
    try:
        return path if save_chart(path, sections) else None
    except Exception as exc:  # noqa: BLE001 - the report matters more than its picture
        print(f"derivgen bench: warning: no chart drawn ({path}): {exc}", file=sys.stderr)
        return None


def main(args: argparse.Namespace) -> int:
    """Run ``derivgen bench``: the report goes to stdout (and --out), progress to stderr.

    Returns:
        0, or 1 when one of the generated backends disagreed with the oracle.
    """
    settings = settings_from_args(args)
    if args.out is not None:  # checked before the work
        write.check_folder(Path(args.out).parent, "--out's folder")
    started = time.time()
    load_before = load()
    sections = Bench(settings).run()
    chart = draw_chart(args.out, sections) if args.out is not None else None
    report = render_markdown(sections, settings, started, load_before, chart)
    print(report, end="")
    if args.out is not None:
        write.atomic_write(args.out, report)
    ours_failed = any(
        r.ours and r.status in ("rejected", "failed") for s in sections for r in s.rows
    )
    return 1 if ours_failed else 0
