"""Configurations: defaults by model and cell, old model names, the checks of every field
(symbolic/train/config.py, symbolic/train/cells.py)."""

from __future__ import annotations

import pytest

from symbolic.train.cells import cells
from symbolic.train.config import Config, default_out
from symbolic.train.errors import TrainError


def test_cell_must_be_a_recurrent_spec():
    assert {"grn", "gru", "lstm", "mingru", "indrnn"} <= set(cells("recurrent"))
    with pytest.raises(TrainError, match=r"cell: 'dense_tanh' is a feedforward spec.*recurrent"):
        Config(model="digits-rows", cell="dense_tanh").resolved()
    with pytest.raises(TrainError, match=r"'squared_error' is a cost spec"):
        Config(model="adding", cell="squared_error").resolved()
    with pytest.raises(TrainError, match=r"no built-in spec named 'nope'.*gru.*lstm"):
        Config(model="grn-digits", cell="nope").resolved()
    with pytest.raises(TrainError, match=r"'lstm' is a recurrent spec.*feedforward"):
        Config(model="mlp", cell="lstm").resolved()


def test_old_model_names_are_aliases():
    config = Config(model="grn-digits").resolved()
    assert (config.model, config.cell) == ("digits-rows", "grn")
    assert config.out == default_out("digits-rows")
    lstm = Config(model="grn-adding", cell="lstm").resolved()
    assert lstm.model == "adding" and lstm.out.name == "adding-lstm"
    # A cell's own defaults apply only where the model's would miss its target.
    assert Config(model="digits-rows", cell="lstm").resolved().lr == 0.01
    assert Config(model="digits-rows", cell="lstm", lr=0.05).resolved().lr == 0.05
    assert Config(model="mlp", cell="dense_tanh").resolved().hidden == (64,)


def test_bad_config_is_named():
    with pytest.raises(TrainError, match="optimizer"):
        Config(model="mlp", optimizer="rmsprop").resolved()
    with pytest.raises(TrainError, match="model"):
        Config(model="lstm").resolved()
    with pytest.raises(TrainError, match="readout"):
        Config(model="grn-adding", readout="first").resolved()
