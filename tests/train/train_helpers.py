"""Helpers shared by the training tests (tests/train): short silent configurations, the
``derivgen`` command run in-process, and the small runs several tests start from."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import subprocess
from pathlib import Path

import numpy as np

from symbolic.train.cli import add_arguments
from symbolic.train.config import Config

# A tiny adding problem (the old model name: checkpoints and options still take it).
ADDING = {"model": "grn-adding", "seq_len": 6, "n_train": 100, "n_test": 20, "hidden": (4,)}
# Plain SGD with this rate overflows float32 within a few steps (Adam's steps are
# bounded by lr, so it would only make the parameters huge).
EXPLODE = {"optimizer": "sgd", "lr": 1e12, "clip": 0.0}


def quick(tmp_path: Path, **fields) -> Config:
    """A config for a short, silent run in ``tmp_path``."""
    fields.setdefault("progress", False)
    fields.setdefault("plot", False)
    return Config(out=tmp_path, **fields)


def start_and_end(result, n: int = 20) -> tuple[float, float]:
    """The first step's cost and the mean cost of the last ``n`` steps."""
    losses = result.history.step_loss
    return losses[0], float(np.mean(losses[-n:]))


def parse(argv: list[str]) -> argparse.Namespace:
    """``derivgen train`` options parsed as the command parses them."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def derivgen(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``derivgen ARGS`` run in this process (its exit status, stdout and stderr), in
    ``cwd``; what a traceback would be is an exception here."""
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
