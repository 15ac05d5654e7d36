"""Running the ``derivgen`` command inside the test process (shared by the fault, hostile
and training tests), and a Python script in a child process of its own (the thread and
memory policy tests, which need a fresh process)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path


def derivgen(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """``derivgen ARGS`` run in this process (its exit status, stdout and stderr), in
    ``cwd``; what a traceback would be is an exception here. (``timeout`` is accepted for
    the subprocess form's signature; an in-process run is not cut short.)"""
    from symbolic.cli import main

    out, err = io.StringIO(), io.StringIO()
    here = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exc:  # argparse
                code = exc.code
    finally:
        os.chdir(here)
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def one_line_error(done: subprocess.CompletedProcess, status: int, *words: str) -> str:
    """The one line of a refused command, checked: its status, no traceback, ``words``."""
    assert done.returncode == status, done.stderr
    assert "Traceback" not in done.stderr
    (line,) = [x for x in done.stderr.splitlines() if not x.startswith("validate:")]
    assert line.startswith("derivgen") and all(w in line for w in words), line
    return line


def child_json(script: str, arg: str, env: dict[str, str]) -> dict:
    """Run ``python -c script arg`` from the repository's root with exactly ``env``; the
    last line it prints, read as JSON."""
    done = subprocess.run(
        [sys.executable, "-c", script, arg],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])
