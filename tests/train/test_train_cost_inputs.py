"""Costs with named inputs in the trainer: ``--class-weights balanced`` fills a cost's unit
input with n / (classes x count); a cost with a mask trains (the mask is ones: no data set
pads its sequences); the weights reach the cost in the NumPy and the torch networks."""

from __future__ import annotations

import numpy as np
import pytest
from train_helpers import parse, quick

from symbolic.train.cli import config_from_args
from symbolic.train.config import Config
from symbolic.train.errors import TrainError
from symbolic.train.loop import load_data, train
from symbolic.train.network import build_network

WEIGHTED = "weighted_softmax_cross_entropy"


def _network(**fields):
    config = Config(model="mlp", **fields).resolved()
    data = load_data(config)
    return build_network(config, data), data


def test_balanced_class_weights():
    network, data = _network(cost=WEIGHTED, class_weights="balanced")
    (weights,) = network.cost_inputs.values()
    counts = np.bincount(data.y_train, minlength=10)
    # each class's total weight is the same: n / classes
    np.testing.assert_allclose(weights * counts, len(data.y_train) / 10)
    # and the cost the network computes is the weighted one (the module's own oracle:
    # the unweighted softmax cross-entropy of the target scaled by the weights)
    rng = np.random.default_rng(0)
    out = rng.standard_normal((8, 10))
    target = np.eye(10)[rng.integers(0, 10, 8)]
    C, _ = network.loss(out, target)
    plain, _ = _network(cost="softmax_cross_entropy")
    assert C == pytest.approx(plain.loss(out, target * weights)[0], rel=1e-12)


def test_no_class_weights_by_default():
    network, _ = _network(cost=WEIGHTED)
    assert network.cost_inputs == {}


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"cost": "softmax_cross_entropy", "class_weights": "balanced"}, "takes no unit input"),
        (
            {"model": "adding", "cost": WEIGHTED, "class_weights": "balanced", "seq_len": 4},
            "has no classes",
        ),
        ({"cost": WEIGHTED, "class_weights": "inverse"}, "expected one of none, balanced"),
    ],
)
def test_class_weights_refusals(fields, words):
    fields.setdefault("model", "mlp")
    with pytest.raises(TrainError, match=words):
        config = Config(**fields).resolved()
        config.n_train = config.n_test = 10
        build_network(config, load_data(config))


def test_the_option_is_parsed():
    config = config_from_args(parse(["--spec", WEIGHTED, "--class-weights", "balanced"]))
    assert (config.cost, config.class_weights) == (WEIGHTED, "balanced")


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_a_weighted_cost_trains(tmp_path, backend):
    config = quick(
        tmp_path,
        model="mlp",
        cost=WEIGHTED,
        readout_spec="dense_linear",
        class_weights="balanced",
        backend=backend,
        epochs=3,
    )
    result = train(config)
    assert result.status == "done"
    assert result.history.evals[-1][-1] > 0.85  # test accuracy after three epochs


def test_a_masked_cost_trains_on_sequences(tmp_path):
    result = train(
        quick(
            tmp_path,
            model="adding",
            cost="masked_squared_error",
            seq_len=6,
            n_train=200,
            n_test=20,
            hidden=(8,),
            epochs=2,
        )
    )
    losses = result.history.step_loss
    assert result.status == "done" and np.mean(losses[-5:]) < losses[0]
