"""The models' registry (symbolic/train/models.py): a model is one record and one data
loader. Test-only models are registered here, from this file alone, trained through the
command's normal path, and unregistered when their test is done."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from train_helpers import parse

from symbolic.train.checkpoint import CHECKPOINT, load_checkpoint
from symbolic.train.cli import main
from symbolic.train.config import Config
from symbolic.train.data import Dataset
from symbolic.train.errors import TrainError
from symbolic.train.loop import train
from symbolic.train.models import (
    DIGITS_ROWS,
    ModelRecord,
    canonical_model,
    find,
    get,
    model_choices,
    records,
    register,
    unregister,
)
from symbolic.train.plot import PLOT
from symbolic.train.result import SUMMARY

TINY_DEFAULTS = {
    "hidden": (4,),
    "optimizer": "adam",
    "lr": 0.01,
    "epochs": 1,
    "batch_size": 8,
    "clip": 1.0,
    "dtype": "float64",
    "readout": "last",
}


def tiny_regression(*, dtype: np.dtype) -> Dataset:
    """40 + 10 points of a linear map from 3 inputs to 1 output."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3)).astype(dtype)
    y = (x @ np.array([[1.0], [-2.0], [0.5]])).astype(dtype)
    return Dataset("tiny-regression", x[:40], y[:40], x[40:], y[40:])


def tiny_sequences(*, dtype: np.dtype, n_train: int) -> Dataset:
    """Sequences of 5 steps of 2 features, labelled by the sign of their sum."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, n_train + 12, 2)).astype(dtype)
    y = (x.sum(axis=(0, 2)) > 0).astype(np.int64)
    return Dataset("tiny-sequences", x[:, :n_train], y[:n_train], x[:, n_train:], y[n_train:], 2)


TEST_MODELS = {
    "tiny-regression": ModelRecord(
        name="tiny-regression",
        aliases=("tiny-old",),
        load_data=tiny_regression,
        cell_kind="feedforward",
        default_cell="dense_tanh",
        readout_spec="dense_linear",
        metric="mse",
        defaults=TINY_DEFAULTS,
    ),
    "tiny-sequences": ModelRecord(
        name="tiny-sequences",
        load_data=tiny_sequences,
        cell_kind="recurrent",
        default_cell="grn",
        readout_spec="dense_sigmoid",
        metric="accuracy",
        data_options=("n_train",),
        time_steps=5,
        defaults={**TINY_DEFAULTS, "dtype": "float32", "n_train": 16},
    ),
}


@pytest.fixture(params=sorted(TEST_MODELS))
def test_model(request):
    """A test-only model, registered for one test and unregistered after it."""
    record = register(TEST_MODELS[request.param])
    yield record
    unregister(record.name)


def test_a_registered_model_trains_through_the_command(test_model, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["--model", test_model.name, "--steps", "2", "--no-progress", "--out", str(out)]
    assert main(parse(argv)) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"{test_model.name} (numpy, ")
    assert "predicting the mean" not in printed  # no baseline known
    summary = json.loads((out / SUMMARY).read_text())
    assert (summary["model"], summary["cell"]) == (test_model.name, test_model.default_cell)
    assert summary["status"] == "done" and summary["step"] == 2
    assert summary["metric"] == test_model.metric
    assert np.isfinite(summary["test_metric"]) and np.isfinite(summary["test_loss"])
    assert (out / PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = load_checkpoint(out / CHECKPOINT)
    assert saved.step == 2 and saved.config["model"] == test_model.name
    # The network: the record's default cell under its readout.
    assert f" -> {test_model.default_cell} 4 -> {test_model.readout_spec} " in printed


def test_a_registered_model_resumes(test_model, tmp_path):
    quiet = {"out": tmp_path, "progress": False, "plot": False}
    first = train(Config(model=test_model.name, steps=3, stop_after=1, **quiet))
    assert first.status == "stopped" and first.step == 1
    resumed = train(Config(resume=True, **quiet))
    assert resumed.status == "done" and resumed.step == 3
    assert resumed.config.model == test_model.name


def test_the_help_lists_a_registered_model(test_model, capsys):
    with pytest.raises(SystemExit):
        parse(["--help"])
    text = capsys.readouterr().out
    assert f"  {test_model.name:<14}hidden 4, adam lr 0.01 constant, 1 epochs" in text
    assert f"cell {test_model.default_cell} (--cell: " in text
    for name in test_model.data_options:  # tiny-sequences: n-train 16
        assert f"{name.replace('_', '-')} {test_model.defaults[name]}" in text


def test_an_alias_of_a_registered_model(tmp_path):
    record = register(TEST_MODELS["tiny-regression"])
    try:
        assert canonical_model("tiny-old") == "tiny-regression" and get("tiny-old") is record
        assert "tiny-old" in model_choices()
        config = Config(model="tiny-old", out=tmp_path).resolved()
        assert (config.model, config.cell, config.hidden) == ("tiny-regression", "dense_tanh", (4,))
    finally:
        unregister("tiny-regression")


def test_test_models_are_gone_afterwards():
    # The fixture unregisters them, whatever ran before this test.
    assert not {"tiny-regression", "tiny-old", "tiny-sequences"} & set(model_choices())
    with pytest.raises(TrainError, match="model: expected one of mlp, digits-rows, adding"):
        Config(model="tiny-regression").resolved()


def test_register_refuses_a_taken_name_and_unknown_fields():
    with pytest.raises(ValueError, match="grn-digits already registered"):
        register(dataclasses.replace(TEST_MODELS["tiny-regression"], aliases=("grn-digits",)))
    with pytest.raises(ValueError, match="mlp already registered"):
        register(dataclasses.replace(TEST_MODELS["tiny-regression"], name="mlp"))
    bad = dataclasses.replace(
        TEST_MODELS["tiny-regression"],
        cell_kind="cost",
        metric="r2",
        data_options=("width",),
        defaults={"lr": 0.1},
    )
    with pytest.raises(ValueError) as caught:
        register(bad)
    message = str(caught.value)
    for words in ("cell_kind 'cost'", "metric 'r2'", "data option 'width'", "no default hidden"):
        assert words in message
    assert find("tiny-regression") is None


def test_records_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        DIGITS_ROWS.default_cell = "gru"
    with pytest.raises(TypeError):
        DIGITS_ROWS.defaults["lr"] = 1.0
    with pytest.raises(TypeError):
        DIGITS_ROWS.cell_defaults["gru"]["lr"] = 1.0


def test_every_built_in_record_resolves_with_each_of_its_cells():
    assert [record.name for record in records()][:3] == ["mlp", "digits-rows", "adding"]
    for record in records():
        for cell in (record.default_cell, *record.cell_defaults):
            config = Config(model=record.name, cell=cell).resolved()
            assert config.lr == record.defaults_for(cell)["lr"]
            assert config.record is record
