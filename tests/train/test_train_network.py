"""The network and its initial parameters (symbolic/train/network.py): the composition's
gradient, chunked scoring, stacking, each cell's spec init as the trainer draws it."""

from __future__ import annotations

import numpy as np
import pytest
from train_helpers import quick

from symbolic import generate, parse
from symbolic.train.config import Config
from symbolic.train.errors import TrainError
from symbolic.train.loop import load_data, train
from symbolic.train.network import Layer, Network, build_network, init_params, load_module

SPECS = {path.stem: path for path in generate.builtin_specs()}


def spec_init(cell: str, seq_len: int = 50, hidden=(64,)):
    config = Config(model="adding", cell=cell, seq_len=seq_len, hidden=hidden).resolved()
    config.n_train = config.n_test = 10
    network = build_network(config, load_data(config))
    return init_params(network, config)


def test_the_trainer_draws_each_cells_spec_init():
    # The specs' [init], at the model's sequence length T = 50.
    bu = spec_init("grn")["grn0.Bu"]  # chrono, G writes the state: -log U(1, T-1)
    assert np.all(bu <= 0) and np.all(bu >= -np.log(49)) and bu.std() > 0.5
    assert np.all(spec_init("lstm")["lstm0.bf"] == 1)  # forget bias 1
    bound = 2 ** (1 / 50)  # IndRNN: u ~ U(2^(-1/T), 2^(1/T)) in every layer
    for key, u in spec_init("indrnn", hidden=(64, 64)).items():
        if key.endswith(".u"):
            assert np.all(u >= np.float32(1 / bound)) and np.all(u <= np.float32(bound))
    assert np.all(np.abs(spec_init("gru")["gru0.bz"]) <= 0.1)  # no [init]: the default
    # T follows the sequence length.
    assert spec_init("grn", seq_len=1000)["grn0.Bu"].min() < -np.log(49)


CHRONO = [
    (name, param, init.value)
    for name, path in sorted(SPECS.items())
    if (cell := parse.load(path)).kind == "recurrent"
    for param, init in cell.init.items()
    if init.name == "chrono"
]


@pytest.mark.parametrize(("cell", "param", "gain"), CHRONO)
def test_chrono_init_keeps_the_state(cell, param, gain):
    # A chrono init's sign says which way the gate keeps the state: set the parameter far
    # that way and one step with no input must pass some state through unchanged
    # (d state_1 / d state_0 = 1 on every lane). A spec whose gain has the wrong sign
    # would make chrono init forget: it fails here.
    module = load_module(cell, "numpy")
    params = module.init_params(2, 4, seed=0)
    params[param] = np.full_like(params[param], 12.0 * np.sign(gain))
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


def test_an_elementwise_input_of_another_width_is_projected(tmp_path):
    # SRU uses its input elementwise (n_in = n_out): the rows of 8 pixels reach its 16
    # units through a learned linear projection, a layer of its own; a second SRU of the
    # same width reads the first directly.
    result = train(quick(tmp_path, model="digits-rows", cell="sru", hidden=(16, 16), steps=2))
    layers = result.network.layers
    assert [layer.key for layer in layers] == ["proj0", "sru0", "sru1", "dense2"]
    assert [(layer.n_in, layer.n_out) for layer in layers[:3]] == [(8, 16), (16, 16), (16, 16)]
    assert "8 -> dense_linear 16 -> sru 16 -> sru 16 -> dense_sigmoid 10" in (
        result.network.describe()
    )


@pytest.mark.parametrize("readout", ["last", "every"])
@pytest.mark.parametrize(
    "specs",
    [("grn", "dense_linear"), ("grn", "grn", "dense_sigmoid"), ("dense_linear", "sru", "highway")],
)
def test_network_gradient_matches_finite_differences(readout, specs):
    # The composition is the network's own (the last step picked out, dense layers folded
    # over time): check it against central differences in a random direction, float64.
    sizes = [3, *range(4, 4 + len(specs) - 1), 2]
    if "sru" in specs:  # an elementwise input keeps the width: 3 -> 4 -> 4 -> 4
        sizes = [3, 4, 4, 4]
    layers = [
        Layer(f"l{i}", spec, load_module(spec, "numpy"), sizes[i], sizes[i + 1])
        for i, spec in enumerate(specs)
    ]
    network = Network(layers, load_module("squared_error", "numpy"), readout)
    params = network.init_params(seed=1, dtype=np.dtype(np.float64))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 2, 3))
    target = rng.normal(size=(2, sizes[-1]))

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
