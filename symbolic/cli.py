"""The ``derivgen`` command: verify, generate, train, report, bench, run."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from pathlib import Path

from symbolic import __version__, backends, write

#: The stages ``derivgen generate --show`` prints (symbolic.generate.STAGES, without
#: importing the compiler for every command).
SHOW_STAGES = ("model", "derivation", "kernel", "plan", "module")


def _cmd_verify(args) -> int:
    from symbolic.verify import HOLDS, VERDICTS, verify_table

    start = time.perf_counter()
    if args.spec:
        from symbolic.verify import verify_specs

        findings = verify_specs(args.spec)
    else:
        from symbolic.verify import verify_document

        findings = verify_document(args.paper, args.notation)
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
    from symbolic import backends as registry
    from symbolic.generate import generate, show

    if args.show:
        backend = "numpy" if args.backend == "all" else args.backend
        text = show(args.spec[0], args.show, backend)
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return 0
    backends = registry.names() if args.backend == "all" else (args.backend,)
    written, problems = generate(
        args.spec or None,
        backends,
        args.out,
        check_only=args.check,
        validate=args.validate,
        revalidate=args.revalidate,
    )
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
    from symbolic.run import main as run_main

    return run_main(args)


def _verify_arguments(sub) -> None:
    verify = sub.add_parser(
        "verify", help="verify the paper's derivatives, or the [claims] of spec files"
    )
    verify.add_argument(
        "spec", nargs="*", type=write.path_argument, help="spec files whose claims to verify"
    )
    verify.add_argument("--json", action="store_true", help="print a JSON list of findings")
    verify.add_argument(
        "--strict", action="store_true", help="exit 1 unless every verdict is 'holds'"
    )
    verify.add_argument(
        "--paper",
        type=write.path_argument,
        default=None,
        help="a document whose derivative formulas to find and verify (Markdown with $$ "
        "LaTeX displays; default: the built-in paper)",
    )
    verify.add_argument(
        "--notation",
        type=write.path_argument,
        default=None,
        help="the document's notation file (default: <paper>.notation.toml beside it)",
    )
    verify.set_defaults(func=_cmd_verify)


def _generate_arguments(sub) -> None:
    gen = sub.add_parser("generate", help="regenerate generated/ from the specs")
    gen.add_argument(
        "spec", nargs="*", type=write.path_argument, help="spec files (default: the built-in specs)"
    )
    gen.add_argument("--check", action="store_true", help="change nothing; exit 1 if stale")
    gen.add_argument("--backend", choices=(*backends.names(), "all"), default="all")
    gen.add_argument(
        "--show",
        choices=SHOW_STAGES,
        default=None,
        help="print one stage's output for one spec (model, derivation, kernel after the "
        "passes, the backend's plan, the module) and write nothing",
    )
    gen.add_argument(
        "--out", type=write.path_argument, default=None, help="output folder (default: generated/)"
    )
    gen.add_argument(
        "--no-validate",
        dest="validate",
        action="store_false",
        help="write without first running every module against its spec",
    )
    gen.add_argument(
        "--revalidate",
        action="store_true",
        help="validate every module, even those that passed before exactly as they are "
        "(same spec, module text, derivgen code, libraries and machine)",
    )
    gen.set_defaults(func=_cmd_generate)


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    """The command's parser; ``selected`` is the subcommand whose options to load."""
    parser = argparse.ArgumentParser(
        prog="derivgen",
        description="Neural-network equations -> verified, fast NumPy and Numba code.",
    )
    parser.add_argument("--version", action="version", version=f"derivgen {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    _verify_arguments(sub)
    _generate_arguments(sub)

    # The heavier commands bring their own options; only the one being run is imported,
    # so that `derivgen generate` never depends on the training or benchmark stack.
    heavy = {
        "train": ("symbolic.train", "train a model built from generated modules", _cmd_train),
        "report": (
            "symbolic.report",
            "a Markdown report of specs, derivations, verdicts",
            _cmd_report,
        ),
        "bench": ("symbolic.bench", "benchmark generated code against other tools", _cmd_bench),
        "run": (
            "symbolic.run",
            "the main job: verify the paper, check generated/, train the MLP and GRN",
            _cmd_run,
        ),
    }
    for name, (module, text, func) in heavy.items():
        command = sub.add_parser(name, help=text)
        if name == selected:
            importlib.import_module(module).add_arguments(command)
        command.set_defaults(func=func)
    return parser


#: Longest error message printed (a spec may hold a 100k-character equation).
MAX_MESSAGE = 2000


def printable(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` safe for a terminal: control and invisible characters (a NUL, an escape
    sequence, a bidi override) as their escapes, newlines kept, cut at ``limit``."""
    out = "".join(
        c if c == "\n" or c.isprintable() else c.encode("unicode_escape").decode("ascii")
        for c in text
    )
    return out if len(out) <= limit else out[: limit - 3] + "..."


def _fail(args_json: bool, message: str, status: int) -> int:
    """Report an error: one line (or a few) on stderr, and JSON on stdout with --json."""
    message = printable(message)
    print(f"derivgen: error: {message}", file=sys.stderr)
    if args_json:
        print(json.dumps({"error": message, "status": status}))
    return status


def main(argv: list[str] | None = None) -> int:
    """The command. Exit status: 0 success; 1 a check said no; 2 bad input (a spec, a
    paper, an option, a path); 3 a derivgen bug (validation caught a module, or an error
    that should not happen); 130 interrupted; 141 the reader of stdout went away."""
    argv = sys.argv[1:] if argv is None else list(argv)
    wants_json = "--json" in argv
    selected = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(selected)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed the usage error
        if exc.code not in (0, None) and wants_json:
            print(json.dumps({"error": "invalid arguments (see stderr)", "status": 2}))
        raise
    if getattr(args, "show", None) and len(args.spec) != 1:
        parser.error("--show takes exactly one spec file")
    if args.command == "verify" and args.spec and (args.paper or args.notation):
        parser.error("verify takes spec files or --paper/--notation, not both")
    if args.command == "verify" and args.notation and not args.paper:
        parser.error("--notation reads a document given with --paper")
    from symbolic.backends import UnsupportedSpec
    from symbolic.generate import GeneratorBug, Unvalidated
    from symbolic.parse import SpecError

    wants_json = bool(getattr(args, "json", False))
    try:
        return args.func(args)
    except (SpecError, UnsupportedSpec, Unvalidated) as exc:
        return _fail(wants_json, str(exc), 2)
    except BrokenPipeError:  # the reader of stdout went away (`| head`): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # nothing more reaches the closed pipe
        return 141  # as a command killed by SIGPIPE
    except OSError as exc:  # a path: unreadable, unwritable, a folder where a file goes
        return _fail(wants_json, str(exc), 2)
    except GeneratorBug as exc:
        return _fail(wants_json, str(exc), 3)
    except KeyboardInterrupt:
        print("derivgen: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - a bug of derivgen's own: say so, briefly
        if os.environ.get("DERIVGEN_TRACEBACK"):
            raise
        where = ""
        tb = exc.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        if tb is not None:
            where = f" ({Path(tb.tb_frame.f_code.co_filename).name}:{tb.tb_lineno})"
        return _fail(
            wants_json,
            f"internal error {type(exc).__name__}: {exc}{where}; this is a derivgen bug "
            "(DERIVGEN_TRACEBACK=1 shows the traceback)",
            3,
        )


if __name__ == "__main__":
    sys.exit(main())
