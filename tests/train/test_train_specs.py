"""A user's spec files in a run (symbolic/train/specs.py, ``--cell PATH.toml``,
``--spec``): trained with one command from anywhere, generated once into the cache,
checkpoints that refuse a resume with an edited spec, clear errors for a spec of the
wrong kind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import derivgen, one_line_error
from train_helpers import quick

from symbolic.train import specs
from symbolic.train.checkpoint import CHECKPOINT, load_checkpoint
from symbolic.train.config import default_out
from symbolic.train.errors import TrainError
from symbolic.train.loop import train

ROOT = Path(__file__).resolve().parents[2]

LEAKY = """\
# A user's cell: a tanh unit with a learned leak, its forget bias 1.
name = "leaky"
kind = "recurrent"
input = "x"
output = "a"
state = { h = "a" }

[params]
W = "matrix"
U = "matrix"
b = "vector"
bf = "vector"

[init]
U = "orthogonal"
bf = "ones"

[equations]
f = "sigmoid(bf)"
a = "f*h + (1 - f)*tanh(W@x + U@h + b)"
"""

HALF_SQUARES = """\
name = "half_squares"
kind = "cost"
prediction = "a"
target = "y"
per_unit = "(a - y)**2 / 2"
"""

READOUT = """\
name = "softsign_out"
kind = "feedforward"
input = "x"
output = "a"

[params]
V = "matrix"
c = "vector"

[init]
c = "zeros"

[equations]
z = "V@x + c"
a = "1/(1 + exp(-z))"
"""


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A private cache for the generated modules (XDG_CACHE_HOME)."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(folder))
    return folder


def spec_file(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


@pytest.mark.slow
def test_a_users_cell_trains_with_one_command_from_anywhere(tmp_path):
    # A subprocess in a folder outside the package, with only the spec file in it.
    work = tmp_path / "work"
    spec_file(work, "my_cell.toml", LEAKY)
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    command = [sys.executable, "-m", "symbolic.cli", "train", "--model", "digits-rows"]
    command += ["--cell", "my_cell.toml", "--hidden", "16", "--epochs", "2", "--no-progress"]
    done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "8 -> leaky 16 -> dense_sigmoid 10" in done.stdout
    assert "generating" in done.stderr and "validated" in done.stderr
    summary = (work / "runs" / "digits-rows-my_cell" / "summary.json").read_text()
    assert "my_cell.toml" in summary
    [folder] = (tmp_path / "cache" / "derivgen" / "train").iterdir()
    assert (folder / "leaky_numpy.py").is_file()
    assert not list(ROOT.joinpath("generated").glob("leaky_*"))  # nothing in the package
    # Again: the module in the cache is current, so it is used as it is.
    again = subprocess.run(
        [*command, "--out", "second"], cwd=work, env=env, capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr
    assert "generating" not in again.stderr


def test_the_cell_file_is_the_layer_and_its_init_is_drawn(tmp_path, cache):
    path = spec_file(tmp_path / "specs", "leaky.toml", LEAKY)
    config = quick(tmp_path / "run", model="digits-rows", cell=str(path), hidden=(6,), steps=3)
    result = train(config)
    layer = result.network.layers[0]
    assert (layer.key, layer.module.NAME, layer.spec) == ("leaky0", "leaky", str(path))
    assert result.config.cell == str(path.resolve())
    assert result.step == 3
    saved = load_checkpoint(tmp_path / "run" / CHECKPOINT)
    assert saved.specs["leaky0"] == layer.module.SPEC_SHA256
    # The spec's [init]: U orthogonal, bf ones (at step 0).
    start = specs.load(str(path), "numpy").init_params(8, 6, seed=1)
    np.testing.assert_allclose(start["U"].T @ start["U"], np.eye(6), atol=1e-12)
    assert np.all(start["bf"] == 1)


def test_a_resume_with_an_edited_spec_is_refused(tmp_path, cache):
    path = spec_file(tmp_path / "specs", "leaky.toml", LEAKY)
    fields = {"model": "digits-rows", "cell": str(path), "hidden": (4,)}
    train(quick(tmp_path / "run", steps=4, stop_after=2, **fields))
    path.write_text(LEAKY.replace('bf = "ones"', "bf = 2"))  # only the init: same shapes
    with pytest.raises(TrainError, match=r"the spec of leaky0 \(.*leaky.toml\) changed since"):
        train(quick(tmp_path / "run", steps=4, resume=True, **fields))
    path.write_text(LEAKY)  # as it was: the run goes on
    assert train(quick(tmp_path / "run", steps=4, resume=True, **fields)).step == 4


def test_spec_files_for_the_readout_and_the_cost(tmp_path, cache):
    cost = spec_file(tmp_path / "specs", "half.toml", HALF_SQUARES)
    readout = spec_file(tmp_path / "specs", "out.toml", READOUT)
    config = quick(
        tmp_path / "run", model="mlp", cost=str(cost), readout_spec=str(readout), steps=60
    )
    result = train(config)
    network = result.network
    assert network.cost.NAME == "half_squares" and network.layers[-1].module.NAME == "softsign_out"
    assert "-> softsign_out 10, half_squares" in network.describe()
    assert set(load_checkpoint(tmp_path / "run" / CHECKPOINT).specs) == {
        "dense0",
        "softsign_out1",
        "cost",
    }
    assert result.history.step_loss[-1] < result.history.step_loss[0]


def test_spec_options_of_the_command(tmp_path, cache):
    cost = spec_file(tmp_path, "half.toml", HALF_SQUARES)
    leaky = spec_file(tmp_path, "leaky.toml", LEAKY)
    done = derivgen("train", "--model", "mlp", "--spec", "half.toml", "--steps", "2",
                    "--no-progress", "--no-plot", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "half_squares" in done.stdout
    one_line_error(
        derivgen("train", "--spec", "leaky.toml", cwd=tmp_path),
        2,
        "a recurrent spec: give it with --cell",
    )
    one_line_error(
        derivgen("train", "--cell", str(leaky), cwd=tmp_path),
        2,
        "is a recurrent spec; the mlp model takes a feedforward spec",
    )
    one_line_error(
        derivgen("train", "--spec", "half.toml", "--spec", str(cost), cwd=tmp_path),
        2,
        "a second cost spec",
    )
    one_line_error(
        derivgen("train", "--spec", "nope", cwd=tmp_path), 2, "--spec nope: no built-in spec"
    )
    spec_file(tmp_path, "bad.toml", LEAKY.replace('bf = "ones"', 'bf = "orthogonal"'))
    line = one_line_error(
        derivgen("train", "--model", "digits-rows", "--cell", "bad.toml", cwd=tmp_path), 2, "bf"
    )
    assert "bad.toml:16:" in line and "init orthogonal is for a matrix" in line


def test_a_spec_file_is_named_by_its_path():
    assert specs.is_path("my.toml") and specs.is_path("dir/cell") and not specs.is_path("grn")
    assert specs.canonical("grn") == "grn"
    assert Path(specs.canonical("my.toml")).is_absolute()
    assert default_out("adding", "cells/my.toml") == Path("runs/adding-my")
