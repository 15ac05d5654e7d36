"""Truncated backpropagation through time (``--tbptt K``, Network.tbptt_gradients): the
state carried across chunks, each chunk's gradient equal to finite differences of its
cost with the state it started from held fixed, whole-sequence BPTT when a chunk spans
the sequence, and the options' errors."""

from __future__ import annotations

import numpy as np
import pytest
from train_helpers import ADDING, quick, start_and_end

from symbolic.train.config import Config
from symbolic.train.errors import TrainError
from symbolic.train.loop import train
from symbolic.train.network import Layer, Network, load_module

STEPS, BATCH, N_IN, N_OUT = 10, 3, 2, 2


def network(specs: tuple[str, ...], readout: str) -> Network:
    sizes = [N_IN, *range(4, 4 + len(specs) - 1), N_OUT]
    layers = [
        Layer(f"l{i}", spec, load_module(spec, "numpy"), sizes[i], sizes[i + 1])
        for i, spec in enumerate(specs)
    ]
    return Network(layers, load_module("squared_error", "numpy"), readout)


def problem(net: Network):
    rng = np.random.default_rng(5)
    params = net.init_params(seed=2, dtype=np.dtype(np.float64), steps=STEPS)
    params = {k: v + rng.normal(scale=0.3, size=v.shape) for k, v in params.items()}
    x = rng.normal(size=(STEPS, BATCH, N_IN))
    target = rng.normal(size=(BATCH, N_OUT))
    return params, x, target


def chunk_costs(net: Network, params, x, target, chunk: int):
    """The chunked cost as a function of the parameters, every chunk starting from the
    states the unperturbed parameters carry into it (held fixed): the oracle."""
    starts = list(range(0, STEPS, chunk))
    carried, states = [], None
    for start in starts:  # the carried states, at the given parameters
        carried.append(states)
        _, caches = net.forward(params, x[start : start + chunk], states)
        states = net.final_states(caches)

    def cost(p) -> float:
        total = 0.0
        for start, state0 in zip(starts, carried, strict=True):
            if net.readout == "last" and start + chunk < STEPS:
                continue
            piece = x[start : start + chunk]
            share = piece.shape[0] / STEPS if net.readout == "every" else 1.0
            total += share * net.loss(net.forward(p, piece, state0)[0], target)[0]
        return total

    return cost


@pytest.mark.parametrize("readout", ["last", "every"])
@pytest.mark.parametrize("specs", [("grn", "dense_linear"), ("lstm", "gru", "dense_tanh")])
@pytest.mark.parametrize("chunk", [3, 4])
def test_tbptt_gradient_is_finite_differences_with_the_carried_state_held_fixed(
    readout, specs, chunk
):
    net = network(specs, readout)
    params, x, target = problem(net)
    cost, grads = net.tbptt_gradients(params, x, target, chunk)
    oracle = chunk_costs(net, params, x, target, chunk)
    assert cost == pytest.approx(oracle(params), rel=1e-12)
    assert set(grads) == set(params)
    rng = np.random.default_rng(1)
    for _ in range(3):
        direction = {k: rng.normal(size=v.shape) for k, v in params.items()}
        eps = 1e-6
        plus = oracle({k: v + eps * direction[k] for k, v in params.items()})
        minus = oracle({k: v - eps * direction[k] for k, v in params.items()})
        numeric = (plus - minus) / (2 * eps)
        analytic = sum(float(np.sum(grads[k] * direction[k])) for k in params)
        assert analytic == pytest.approx(numeric, rel=1e-6, abs=1e-9)


def test_truncation_drops_the_gradient_through_the_carried_state():
    # The truncated gradient is not the full one (the chunks' states are held fixed),
    # and a chunk spanning the sequence gives the full gradient, exactly.
    net = network(("grn", "dense_linear"), "last")
    params, x, target = problem(net)
    out, caches = net.forward(params, x)
    full_cost, dout = net.loss(out, target)
    full = net.backward(params, caches, dout)
    cost, whole = net.tbptt_gradients(params, x, target, STEPS)
    assert cost == full_cost
    assert all(np.array_equal(whole[k], full[k]) for k in full)
    _, truncated = net.tbptt_gradients(params, x, target, 3)
    assert not np.allclose(truncated["l0.WXu"], full["l0.WXu"])


@pytest.mark.parametrize("specs", [("grn", "dense_linear"), ("lstm", "gru", "dense_tanh")])
def test_the_state_is_carried_across_chunks(specs):
    # Stateful: the chunks in order, each from the states the one before ended with, give
    # the whole sequence's output and final states.
    net = network(specs, "every")
    params, x, _ = problem(net)
    whole, caches = net.forward(params, x)
    outs, states = [], None
    for start in range(0, STEPS, 4):
        out, piece_caches = net.forward(params, x[start : start + 4], states)
        states = net.final_states(piece_caches)
        outs.append(out)
    np.testing.assert_allclose(np.concatenate(outs), whole, rtol=1e-12, atol=1e-14)
    for got, want in zip(states, net.final_states(caches), strict=True):
        if want is not None:
            for name in want:
                np.testing.assert_allclose(got[name], want[name], rtol=1e-12, atol=1e-14)


def test_a_tbptt_run_learns_and_says_so(tmp_path):
    fields = {**ADDING, "seq_len": 24, "n_train": 400, "lr": 0.01}
    result = train(quick(tmp_path, tbptt=6, steps=60, **fields))
    first, last = start_and_end(result)
    assert last < first
    assert "truncated BPTT in chunks of 6 steps" in result.summary()
    assert result.config.tbptt == 6


def test_tbptt_options_are_checked():
    with pytest.raises(TrainError, match="tbptt: the mlp model has no recurrent layer"):
        Config(model="mlp", tbptt=5).resolved()
    with pytest.raises(TrainError, match="tbptt: expected a number of steps"):
        Config(model="adding", tbptt=-1).resolved()
    with pytest.raises(TrainError, match="torch engine backpropagates through whole"):
        Config(model="adding", tbptt=10, backend="torch").resolved()
    assert Config(model="adding").resolved().tbptt == 0
