"""The models learn (symbolic/train/loop.py with the generated modules).

These runs are short: they check that the models learn (the cost falls well below its
start), not the final figures. The defaults' figures are measured with
``derivgen train --model mlp|digits-rows|adding [--cell NAME]`` (see the records'
defaults and cell_defaults in symbolic/train/models.py).
"""

from __future__ import annotations

import dataclasses
import importlib.util

import numpy as np
import pytest
from train_helpers import quick, start_and_end

from symbolic.train.data import digits_flat
from symbolic.train.loop import load_data, train
from symbolic.train.models import ADDING_BASELINE_MSE

# On one-hot targets the constant prediction 0.1 costs 0.9, against ~2.5 at the start
# (sigmoid outputs of 0.5): the thresholds below are well under that plateau.


def test_mlp_learns(tmp_path):
    result = train(quick(tmp_path, model="mlp", epochs=10))
    first, last = start_and_end(result)
    assert result.status == "done" and result.step == 10 * 45
    assert last < 0.1 * first
    assert result.test_metric > 0.8  # chance is 0.1
    assert result.metric == "accuracy"


def test_mlp_learns_with_sgd_float32(tmp_path):
    config = quick(tmp_path, model="mlp", optimizer="sgd", lr=0.05, schedule="constant", epochs=15)
    result = train(dataclasses.replace(config, dtype="float32"))
    first, last = start_and_end(result)
    assert last < 0.25 * first
    assert result.test_metric > 0.5
    assert all(p.dtype == np.float32 for p in result.params.values())


@pytest.mark.parametrize("readout", ["last", "every"])
def test_grn_digits_learns(tmp_path, readout):
    result = train(quick(tmp_path, model="grn-digits", hidden=(32,), epochs=6, readout=readout))
    first, last = start_and_end(result)
    # With the readout at every step, the early steps (a few rows seen) cost more.
    assert last < (0.25 if readout == "last" else 0.4) * first
    assert result.test_metric > (0.5 if readout == "last" else 0.3)


def test_grn_adding_learns(tmp_path):
    config = quick(tmp_path, model="grn-adding", seq_len=10, n_train=1000, n_test=500)
    result = train(dataclasses.replace(config, epochs=8, lr=0.01))
    first, last = start_and_end(result)
    assert last < 0.1 * first
    # Below what predicting the mean scores: the net uses the markers.
    assert result.test_metric < 0.5 * ADDING_BASELINE_MSE
    assert result.metric == "mse"


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_gated_cells_learn_the_digits(tmp_path, cell):
    # Any recurrent spec is a --cell; the LSTM carries two states (h and c) through
    # forward and backward, which the network passes along without knowing them.
    config = quick(tmp_path, model="digits-rows", cell=cell, hidden=(32,), epochs=6)
    result = train(dataclasses.replace(config, lr=0.03, schedule="constant"))
    first, last = start_and_end(result)
    assert [layer.spec for layer in result.network.layers] == [cell, "dense_sigmoid"]
    # Measured: GRU 2.74 -> 0.16 (91% test accuracy), LSTM 2.92 -> 0.30 (82%).
    assert last < 0.25 * first
    assert result.test_metric > 0.6


def test_lstm_learns_the_adding_problem(tmp_path):
    config = quick(tmp_path, model="adding", cell="lstm", seq_len=10, n_train=1000, n_test=500)
    result = train(dataclasses.replace(config, epochs=6, lr=0.01, hidden=(8,)))
    first, last = start_and_end(result)
    assert last < 0.1 * first
    assert result.test_metric < 0.5 * ADDING_BASELINE_MSE


def test_mlp_with_tanh_hidden_layers(tmp_path):
    result = train(quick(tmp_path, model="mlp", cell="dense_tanh", hidden=(16,), epochs=3))
    assert [layer.spec for layer in result.network.layers] == ["dense_tanh", "dense_sigmoid"]
    first, last = start_and_end(result)
    assert last < 0.3 * first


def test_numba_backend_matches_numpy(tmp_path):
    if importlib.util.find_spec("generated.dense_sigmoid_numba") is None:
        pytest.xfail("generated/dense_sigmoid_numba.py is not generated yet")
    runs = {
        backend: train(
            quick(tmp_path / backend, model="mlp", epochs=1, backend=backend, hidden=(16,))
        )
        for backend in ("numpy", "numba")
    }
    for key, value in runs["numpy"].params.items():
        np.testing.assert_allclose(runs["numba"].params[key], value, rtol=1e-6, atol=1e-9)


def test_digits_used_by_train_are_the_held_out_split(tmp_path):
    config = quick(tmp_path, model="mlp").resolved()
    data = load_data(config)
    np.testing.assert_array_equal(data.y_test, digits_flat().y_test)
