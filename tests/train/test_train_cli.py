"""The command line of ``derivgen train`` (symbolic/train/cli.py): what it prints and
writes, its exit statuses, bad options and an unwritable --out refused in one line."""

from __future__ import annotations

import json
import time

import pytest
from cli_helpers import derivgen, one_line_error
from train_helpers import parse

from symbolic.train.checkpoint import CHECKPOINT
from symbolic.train.cli import main
from symbolic.train.config import Config
from symbolic.train.errors import TrainError
from symbolic.train.loop import train
from symbolic.train.plot import PLOT
from symbolic.train.result import SUMMARY


def test_cli_trains_and_reports(tmp_path, capsys):
    code = main(
        parse(["--model", "mlp", "--epochs", "2", "--hidden", "16", "--out", str(tmp_path)])
    )
    assert code == 0
    captured = capsys.readouterr()
    assert "test accuracy" in captured.out and "wall time" in captured.out
    assert str(tmp_path / PLOT) in captured.out
    assert (tmp_path / PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((tmp_path / SUMMARY).read_text())
    assert summary["status"] == "done" and summary["step"] == 90
    assert summary["cell"] == "dense_sigmoid"
    # The test curve: one row per epoch.
    assert [row["step"] for row in summary["curve"]] == [45, 90]
    assert summary["curve"][-1]["test_accuracy"] == summary["test_metric"]
    # Not a terminal: the bar prints periodic lines, not carriage returns.
    assert "\r" not in captured.err and 1 <= captured.err.count("\n") <= 12


def test_cli_rejects_a_bad_cell(tmp_path, capsys):
    argv = ["--model", "digits-rows", "--cell", "dense_sigmoid", "--out", str(tmp_path)]
    assert main(parse(argv)) == 2
    err = capsys.readouterr().err
    assert "error: cell: 'dense_sigmoid' is a feedforward spec" in err and "lstm" in err
    assert not (tmp_path / CHECKPOINT).exists()


def test_cli_errors(tmp_path, capsys):
    args = parse(["--model", "mlp", "--resume", "--out", str(tmp_path / "none")])
    assert main(args) == 2
    assert "no checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse(["--hidden", "0"])
    with pytest.raises(SystemExit):
        parse(["--epochs", "2", "--steps", "3"])


def test_cli_divergence_exit_code(tmp_path, capsys):
    argv = ["--model", "grn-adding", "--seq-len", "6", "--n-train", "100", "--n-test", "20"]
    argv += ["--optimizer", "sgd", "--lr", "1e12", "--clip", "0", "--out", str(tmp_path)]
    assert main(parse(argv)) == 1
    out = capsys.readouterr().out
    assert "DIVERGED: the " in out and "became" in out


@pytest.mark.parametrize(
    ("option", "value"),
    [("--seed", "-1"), ("--lr", "nan"), ("--lr", "inf"), ("--momentum", "inf"),
     ("--momentum", "1.5"), ("--clip", "nan"), ("--clip", "-1")],
)  # fmt: skip
def test_bad_option_values_are_refused(tmp_path, option, value):
    done = derivgen("train", "--model", "mlp", option, value, "--out", str(tmp_path / "o"),
                    cwd=tmp_path)  # fmt: skip
    one_line_error(done, 2, option.lstrip("-"))


def test_an_unwritable_out_fails_before_the_first_epoch(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    start = time.perf_counter()
    with pytest.raises(TrainError, match="cannot write"):
        train(Config(out=blocker / "run", model="digits-rows", epochs=50, progress=False))
    assert time.perf_counter() - start < 5
