"""The ``derivgen`` command: verify, generate, train, report, bench, run."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from symbolic import __version__


def _cmd_verify(args) -> int:
    from symbolic.verdict import HOLDS, VERDICTS
    from symbolic.verify import verify_specs, verify_table

    start = time.perf_counter()
    if args.spec:
        findings = verify_specs(args.spec)
    else:
        from symbolic.paper import verify_paper

        findings = verify_paper()
    elapsed = time.perf_counter() - start
    if args.json:
        print(json.dumps([f.to_json() for f in findings], indent=2))
    else:
        print(verify_table(findings, elapsed))
    decided = all(f.verdict in VERDICTS for f in findings)
    if args.strict:
        return 0 if all(f.verdict == HOLDS for f in findings) else 1
    return 0 if decided else 1


def _cmd_generate(args) -> int:
    from symbolic.generate import generate
    from symbolic.render import BACKENDS

    backends = BACKENDS if args.backend == "all" else (args.backend,)
    written, problems = generate(args.spec or None, backends, args.out, check_only=args.check)
    if args.check:
        if problems:
            for problem in problems:
                print(problem)
            print(
                f"{len(problems)} module(s) are not what the specs produce: run derivgen generate"
            )
            return 1
        print("generated modules are current")
        return 0
    for path in written:
        print(f"wrote {path}")
    return 0


def _cmd_train(args) -> int:
    from symbolic.train import main as train_main

    return train_main(args)


def _cmd_report(args) -> int:
    from symbolic.report import main as report_main

    return report_main(args)


def _cmd_bench(args) -> int:
    from symbolic.bench import main as bench_main

    return bench_main(args)


def _cmd_run(args) -> int:
    from symbolic.tour import main as tour_main

    return tour_main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="derivgen",
        description="Neural-network equations -> verified, fast NumPy and Numba code.",
    )
    parser.add_argument("--version", action="version", version=f"derivgen {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    verify = sub.add_parser(
        "verify", help="verify the paper's derivatives, or the [claims] of spec files"
    )
    verify.add_argument("spec", nargs="*", type=Path, help="spec files whose claims to verify")
    verify.add_argument("--json", action="store_true", help="print a JSON list of findings")
    verify.add_argument(
        "--strict", action="store_true", help="exit 1 unless every verdict is 'holds'"
    )
    verify.set_defaults(func=_cmd_verify)

    gen = sub.add_parser("generate", help="regenerate generated/ from the specs")
    gen.add_argument("spec", nargs="*", type=Path, help="spec files (default: the built-in specs)")
    gen.add_argument("--check", action="store_true", help="change nothing; exit 1 if stale")
    gen.add_argument("--backend", choices=("numpy", "numba", "all"), default="all")
    gen.add_argument("--out", type=Path, default=None, help="output folder (default: generated/)")
    gen.set_defaults(func=_cmd_generate)

    from symbolic.train import add_arguments as train_arguments

    train = sub.add_parser("train", help="train a model built from generated modules")
    train_arguments(train)
    train.set_defaults(func=_cmd_train)

    from symbolic.report import add_arguments as report_arguments

    report = sub.add_parser("report", help="a Markdown report of specs, derivations, verdicts")
    report_arguments(report)
    report.set_defaults(func=_cmd_report)

    from symbolic.bench import add_arguments as bench_arguments

    bench = sub.add_parser("bench", help="benchmark generated code against other tools")
    bench_arguments(bench)
    bench.set_defaults(func=_cmd_bench)

    from symbolic.tour import add_arguments as run_arguments

    run = sub.add_parser(
        "run", help="the main job: verify the paper, check generated/, train the MLP and GRN"
    )
    run_arguments(run)
    run.set_defaults(func=_cmd_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from symbolic.parse import SpecError
    from symbolic.render import UnsupportedSpec

    try:
        return args.func(args)
    except (SpecError, UnsupportedSpec) as exc:
        print(f"derivgen: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("derivgen: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
