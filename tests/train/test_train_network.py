"""The network and its initial parameters (symbolic/train/network.py, the memory table of
symbolic/train/cells.py): the composition's gradient, chunked scoring, stacking, the
memory init of each cell."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from train_helpers import quick

from symbolic.train.cells import MEMORY
from symbolic.train.config import Config
from symbolic.train.errors import TrainError
from symbolic.train.loop import load_data, train
from symbolic.train.network import Layer, Network, build_network, init_params, load_module


def memory_init(cell: str, gate_bias: str, seq_len: int = 50, hidden=(64,)):
    config = Config(
        model="adding", cell=cell, gate_bias=gate_bias, seq_len=seq_len, hidden=hidden
    ).resolved()
    config.n_train = config.n_test = 10
    network = build_network(config, load_data(config))
    return init_params(network, config)


def test_memory_init_of_each_cell():
    log_t = np.log(49)
    lstm = memory_init("lstm", "chrono")
    # Chrono (Tallec & Ollivier): forget-gate bias log U(1, T-1), input-gate bias minus it.
    assert np.all(lstm["lstm0.bf"] >= 0) and np.all(lstm["lstm0.bf"] <= log_t)
    np.testing.assert_array_equal(lstm["lstm0.bi"], -lstm["lstm0.bf"])
    assert np.all(memory_init("lstm", "auto")["lstm0.bf"] == 1)  # forget bias 1
    gru = memory_init("gru", "chrono")["gru0.bz"]  # z keeps the state
    assert np.all(gru >= 0) and np.all(gru <= log_t) and gru.std() > 0.5
    mingru = memory_init("mingru", "chrono")["mingru0.bz"]  # z overwrites it
    assert np.all(mingru <= 0) and np.all(mingru >= -log_t)
    # IndRNN: u ~ U(0, 2^(1/T)), the top layer's U(2^(-1/T), 2^(1/T)).
    indrnn = memory_init("indrnn", "auto", hidden=(64, 64))
    bound = 2 ** (1 / 50)
    assert np.all(indrnn["indrnn0.u"] >= 0) and indrnn["indrnn0.u"].min() < 0.5
    assert np.all(indrnn["indrnn1.u"] >= 1 / bound - 1e-6)
    assert np.all(indrnn["indrnn1.u"] <= bound + 1e-6)
    # The generated init where no usual one is known, and on request.
    generated = memory_init("gru", "none")["gru0.bz"]
    np.testing.assert_array_equal(memory_init("gru", "auto")["gru0.bz"], generated)
    assert np.all(np.abs(generated) <= 0.1)
    with pytest.raises(TrainError, match="gate_bias chrono: the mlp model"):
        Config(model="mlp", gate_bias="chrono").resolved()


@pytest.mark.parametrize("cell", sorted(MEMORY))
def test_memory_table_agrees_with_the_generated_cell(cell):
    # MEMORY says which parameter keeps a cell's state and in which direction: set it to
    # "keep" and one step with no input must pass some state through unchanged
    # (d state_1 / d state_0 = 1 on every lane). A spec edited to flip a gate's meaning
    # fails here, instead of silently making chrono init forget.
    memory = MEMORY[cell]
    module = load_module(cell, "numpy")
    params = module.init_params(2, 4, seed=0)
    keep = {"keep": 12.0, "write": -12.0, "weight": 1.0}[memory.form]
    params[memory.param] = np.full_like(params[memory.param], keep)
    if memory.tied:
        params[memory.tied] = np.full_like(params[memory.tied], -keep)
    rng = np.random.default_rng(0)
    state0 = {s: rng.uniform(0.5, 1.0, (3, 4)) for s in module.STATES}
    _, cache = module.forward(params, np.zeros((1, 3, 2)), state0)
    retention = {}
    for name in module.STATES:
        dstate = {s: np.ones((3, 4)) if s == name else np.zeros((3, 4)) for s in module.STATES}
        _, _, dstate0 = module.backward(params, cache, np.zeros((1, 3, 4)), dstate)
        retention[name] = dstate0[name]
    assert any(np.allclose(r, 1.0, atol=1e-3) for r in retention.values()), retention


def test_long_sequences_are_scored_in_chunks(monkeypatch):
    from symbolic.train import network as network_module

    config = Config(model="adding", seq_len=20, n_train=10, n_test=37, hidden=(5,)).resolved()
    data = load_data(config)
    network = build_network(config, data)
    params = init_params(network, config)
    whole = network.predict(params, data.x_test)
    monkeypatch.setattr(network_module, "_EVAL_BUDGET", 20 * 5 * 4)  # 4 sequences per chunk
    np.testing.assert_allclose(network.predict(params, data.x_test), whole, rtol=1e-6)
    assert whole.shape == (37, 1)


def test_stacked_layers_and_describe(tmp_path):
    result = train(quick(tmp_path, model="grn-digits", hidden=(8, 8), steps=3))
    assert [layer.spec for layer in result.network.layers] == ["grn", "grn", "dense_sigmoid"]
    assert "8 -> grn 8 -> grn 8 -> dense_sigmoid 10" in result.network.describe()
    assert result.step == 3


def test_chrono_gate_bias(tmp_path):
    config = quick(tmp_path, model="grn-adding", seq_len=50, n_train=10, n_test=10).resolved()
    data = load_data(config)
    network = build_network(config, data)
    bu = init_params(network, config)["grn0.Bu"]
    # Retention times 1/sigmoid(Bu) spread over [2, T-1]: Bu in [-log(T-1), 0].
    assert np.all(bu <= 0) and np.all(bu >= -np.log(49)) and bu.std() > 0.5
    fixed = dataclasses.replace(config, gate_bias="-2")
    assert np.all(init_params(network, fixed)["grn0.Bu"] == np.float32(-2))


@pytest.mark.parametrize("readout", ["last", "every"])
@pytest.mark.parametrize("specs", [("grn", "dense_linear"), ("grn", "grn", "dense_sigmoid")])
def test_network_gradient_matches_finite_differences(readout, specs):
    # The composition is the network's own (the last step picked out, dense layers folded
    # over time): check it against central differences in a random direction, float64.
    sizes = [3, *range(4, 4 + len(specs) - 1), 2]
    layers = [
        Layer(f"l{i}", spec, load_module(spec, "numpy"), sizes[i], sizes[i + 1])
        for i, spec in enumerate(specs)
    ]
    network = Network(layers, load_module("squared_error", "numpy"), readout)
    params = network.init_params(seed=1, dtype=np.dtype(np.float64))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 2, 3))
    target = rng.normal(size=(2, 2))

    def cost(p):
        return network.loss(network.forward(p, x)[0], target)[0]

    out, caches = network.forward(params, x)
    grads = network.backward(params, caches, network.loss(out, target)[1])
    direction = {key: rng.normal(size=value.shape) for key, value in params.items()}
    eps = 1e-6
    plus = {key: value + eps * direction[key] for key, value in params.items()}
    minus = {key: value - eps * direction[key] for key, value in params.items()}
    numeric = (cost(plus) - cost(minus)) / (2 * eps)
    analytic = sum(float(np.sum(grads[key] * direction[key])) for key in params)
    assert grads.keys() == params.keys()
    assert abs(numeric - analytic) <= 1e-6 * max(1.0, abs(numeric))


def test_backend_module_missing_is_a_clear_error():
    with pytest.raises(TrainError, match="generated.nope_numpy"):
        load_module("nope", "numpy")


def test_a_cost_on_logits_reads_a_linear_readout():
    config = Config(model="mlp", cost="softmax_cross_entropy", hidden=(8,)).resolved()
    network = build_network(config, load_data(config))
    assert [layer.spec for layer in network.layers] == ["dense_sigmoid", "dense_linear"]
    assert network.cost.NAME == "softmax_cross_entropy"
    assert network.describe().endswith("dense_linear 10, softmax_cross_entropy")
