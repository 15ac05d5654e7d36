"""Helpers shared by the training tests (tests/train): short silent configurations
and the small runs several tests start from (the in-process command: tests/cli_helpers.py)."""

from __future__ import annotations

import argparse
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
