"""Configurations: defaults by model and cell, old model names, the checks of every field
(symbolic/train/config.py, symbolic/train/cells.py)."""

from __future__ import annotations

import pytest

from symbolic.train.cells import cells
from symbolic.train.config import Config, default_out, merge_resume
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
    with pytest.raises(TrainError, match="gate_bias"):
        Config(model="grn-adding", gate_bias="big").resolved()


def test_cost_is_a_built_in_cost_spec_and_recorded_by_a_checkpoint():
    assert Config(model="mlp").resolved().cost == "squared_error"
    assert Config(model="mlp", cost="softmax_cross_entropy").resolved().cost == (
        "softmax_cross_entropy"
    )
    with pytest.raises(TrainError, match=r"cost: expected a built-in cost spec .*'dense_tanh'"):
        Config(model="mlp", cost="dense_tanh").resolved()
    fields = Config(model="mlp", cost="softmax_cross_entropy").resolved().run_fields()
    assert fields["cost"] == "softmax_cross_entropy"
    # a checkpoint written before --cost existed trained the squared error
    del fields["cost"]
    merged, notes = merge_resume(Config(), fields)
    assert merged.cost == "squared_error" and not notes
    with pytest.raises(TrainError, match="cost = 'softmax_cross_entropy' differs"):
        merge_resume(Config(cost="softmax_cross_entropy"), fields)
