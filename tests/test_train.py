"""Training with the generated modules (symbolic/train.py, progress.py, tour.py).

These runs are short: they check that the models learn (the cost falls well below its
start), that runs resume bit for bit, stop cleanly on divergence and write checkpoints
atomically; not the final figures. The defaults' figures are measured with
``derivgen train --model mlp|digits-rows|adding [--cell NAME]`` (see MODEL_DEFAULTS
and CELL_DEFAULTS).
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json

import numpy as np
import pytest

from symbolic import progress, tour, train, write
from symbolic.data import digits_flat
from symbolic.train import Config, TrainError
from symbolic.verify import Finding


def quick(tmp_path, **fields) -> Config:
    """A config for a short, silent run in ``tmp_path``."""
    fields.setdefault("progress", False)
    fields.setdefault("plot", False)
    return Config(out=tmp_path, **fields)


def start_and_end(result, n: int = 20) -> tuple[float, float]:
    """The first step's cost and the mean cost of the last ``n`` steps."""
    losses = result.history.step_loss
    return losses[0], float(np.mean(losses[-n:]))


# --- learning ------------------------------------------------------------------------
# On one-hot targets the constant prediction 0.1 costs 0.9, against ~2.5 at the start
# (sigmoid outputs of 0.5): the thresholds below are well under that plateau.


def test_mlp_learns(tmp_path):
    result = train.train(quick(tmp_path, model="mlp", epochs=10))
    first, last = start_and_end(result)
    assert result.status == "done" and result.step == 10 * 45
    assert last < 0.1 * first
    assert result.test_metric > 0.8  # chance is 0.1
    assert result.metric == "accuracy"


def test_mlp_learns_with_sgd_float32(tmp_path):
    config = quick(tmp_path, model="mlp", optimizer="sgd", lr=0.05, schedule="constant", epochs=15)
    result = train.train(dataclass_replace(config, dtype="float32"))
    first, last = start_and_end(result)
    assert last < 0.25 * first
    assert result.test_metric > 0.5
    assert all(p.dtype == np.float32 for p in result.params.values())


@pytest.mark.parametrize("readout", ["last", "every"])
def test_grn_digits_learns(tmp_path, readout):
    result = train.train(
        quick(tmp_path, model="grn-digits", hidden=(32,), epochs=6, readout=readout)
    )
    first, last = start_and_end(result)
    # With the readout at every step, the early steps (a few rows seen) cost more.
    assert last < (0.25 if readout == "last" else 0.4) * first
    assert result.test_metric > (0.5 if readout == "last" else 0.3)


def test_grn_adding_learns(tmp_path):
    config = quick(tmp_path, model="grn-adding", seq_len=10, n_train=1000, n_test=500)
    result = train.train(dataclass_replace(config, epochs=8, lr=0.01))
    first, last = start_and_end(result)
    assert last < 0.1 * first
    # Below what predicting the mean scores: the net uses the markers.
    assert result.test_metric < 0.5 * train.ADDING_BASELINE_MSE
    assert result.metric == "mse"


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_gated_cells_learn_the_digits(tmp_path, cell):
    # Any recurrent spec is a --cell; the LSTM carries two states (h and c) through
    # forward and backward, which train.py passes along without knowing them.
    config = quick(tmp_path, model="digits-rows", cell=cell, hidden=(32,), epochs=6)
    result = train.train(dataclass_replace(config, lr=0.03, schedule="constant"))
    first, last = start_and_end(result)
    assert [layer.spec for layer in result.network.layers] == [cell, "dense_sigmoid"]
    # Measured: GRU 2.74 -> 0.16 (91% test accuracy), LSTM 2.92 -> 0.30 (82%).
    assert last < 0.25 * first
    assert result.test_metric > 0.6


def test_lstm_learns_the_adding_problem(tmp_path):
    config = quick(tmp_path, model="adding", cell="lstm", seq_len=10, n_train=1000, n_test=500)
    result = train.train(dataclass_replace(config, epochs=6, lr=0.01, hidden=(8,)))
    first, last = start_and_end(result)
    assert last < 0.1 * first
    assert result.test_metric < 0.5 * train.ADDING_BASELINE_MSE


def test_cell_must_be_a_recurrent_spec():
    assert {"grn", "gru", "lstm", "mingru", "indrnn"} <= set(train.cells("recurrent"))
    with pytest.raises(TrainError, match=r"cell: 'dense_tanh' is a feedforward spec.*recurrent"):
        Config(model="digits-rows", cell="dense_tanh").resolved()
    with pytest.raises(TrainError, match=r"'squared_error' is a cost spec"):
        Config(model="adding", cell="squared_error").resolved()
    with pytest.raises(TrainError, match=r"no built-in spec named 'nope'.*gru.*lstm"):
        Config(model="grn-digits", cell="nope").resolved()
    with pytest.raises(TrainError, match=r"'lstm' is a recurrent spec.*feedforward"):
        Config(model="mlp", cell="lstm").resolved()


def test_cli_rejects_a_bad_cell(tmp_path, capsys):
    argv = ["--model", "digits-rows", "--cell", "dense_sigmoid", "--out", str(tmp_path)]
    assert train.main(parse(argv)) == 2
    err = capsys.readouterr().err
    assert "error: cell: 'dense_sigmoid' is a feedforward spec" in err and "lstm" in err
    assert not (tmp_path / train.CHECKPOINT).exists()


def test_old_model_names_are_aliases():
    config = Config(model="grn-digits").resolved()
    assert (config.model, config.cell) == ("digits-rows", "grn")
    assert config.out == train.default_out("digits-rows")
    lstm = Config(model="grn-adding", cell="lstm").resolved()
    assert lstm.model == "adding" and lstm.out.name == "adding-lstm"
    # A cell's own defaults apply only where the model's would miss its target.
    assert Config(model="digits-rows", cell="lstm").resolved().lr == 0.01
    assert Config(model="digits-rows", cell="lstm", lr=0.05).resolved().lr == 0.05
    assert Config(model="mlp", cell="dense_tanh").resolved().hidden == (64,)


def test_mlp_with_tanh_hidden_layers(tmp_path):
    result = train.train(quick(tmp_path, model="mlp", cell="dense_tanh", hidden=(16,), epochs=3))
    assert [layer.spec for layer in result.network.layers] == ["dense_tanh", "dense_sigmoid"]
    first, last = start_and_end(result)
    assert last < 0.3 * first


def memory_init(cell: str, gate_bias: str, seq_len: int = 50, hidden=(64,)):
    config = Config(
        model="adding", cell=cell, gate_bias=gate_bias, seq_len=seq_len, hidden=hidden
    ).resolved()
    config.n_train = config.n_test = 10
    network = train.build_network(config, train.load_data(config))
    return train.init_params(network, config)


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


@pytest.mark.parametrize("cell", sorted(train.MEMORY))
def test_memory_table_agrees_with_the_generated_cell(cell):
    # MEMORY says which parameter keeps a cell's state and in which direction: set it to
    # "keep" and one step with no input must pass some state through unchanged
    # (d state_1 / d state_0 = 1 on every lane). A spec edited to flip a gate's meaning
    # fails here, instead of silently making chrono init forget.
    memory = train.MEMORY[cell]
    module = train.load_module(cell, "numpy")
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
    config = Config(model="adding", seq_len=20, n_train=10, n_test=37, hidden=(5,)).resolved()
    data = train.load_data(config)
    network = train.build_network(config, data)
    params = train.init_params(network, config)
    whole = network.predict(params, data.x_test)
    monkeypatch.setattr(train, "_EVAL_BUDGET", 20 * 5 * 4)  # 4 sequences per chunk
    np.testing.assert_allclose(network.predict(params, data.x_test), whole, rtol=1e-6)
    assert whole.shape == (37, 1)


def dataclass_replace(config: Config, **fields) -> Config:
    import dataclasses

    return dataclasses.replace(config, **fields)


def test_stacked_layers_and_describe(tmp_path):
    result = train.train(quick(tmp_path, model="grn-digits", hidden=(8, 8), steps=3))
    assert [layer.spec for layer in result.network.layers] == ["grn", "grn", "dense_sigmoid"]
    assert "8 -> grn 8 -> grn 8 -> dense_sigmoid 10" in result.network.describe()
    assert result.step == 3


def test_chrono_gate_bias(tmp_path):
    config = quick(tmp_path, model="grn-adding", seq_len=50, n_train=10, n_test=10).resolved()
    data = train.load_data(config)
    network = train.build_network(config, data)
    bu = train.init_params(network, config)["grn0.Bu"]
    # Retention times 1/sigmoid(Bu) spread over [2, T-1]: Bu in [-log(T-1), 0].
    assert np.all(bu <= 0) and np.all(bu >= -np.log(49)) and bu.std() > 0.5
    fixed = dataclass_replace(config, gate_bias="-2")
    assert np.all(train.init_params(network, fixed)["grn0.Bu"] == np.float32(-2))


@pytest.mark.parametrize("readout", ["last", "every"])
@pytest.mark.parametrize("specs", [("grn", "dense_linear"), ("grn", "grn", "dense_sigmoid")])
def test_network_gradient_matches_finite_differences(readout, specs):
    # The composition is train.py's own (the last step picked out, dense layers folded
    # over time): check it against central differences in a random direction, float64.
    sizes = [3, *range(4, 4 + len(specs) - 1), 2]
    layers = [
        train.Layer(f"l{i}", spec, train.load_module(spec, "numpy"), sizes[i], sizes[i + 1])
        for i, spec in enumerate(specs)
    ]
    network = train.Network(layers, train.load_module("squared_error", "numpy"), readout)
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
        train.load_module("nope", "numpy")


def test_numba_backend_matches_numpy(tmp_path):
    if importlib.util.find_spec("generated.dense_sigmoid_numba") is None:
        pytest.xfail("generated/dense_sigmoid_numba.py is not generated yet")
    runs = {
        backend: train.train(
            quick(tmp_path / backend, model="mlp", epochs=1, backend=backend, hidden=(16,))
        )
        for backend in ("numpy", "numba")
    }
    for key, value in runs["numpy"].params.items():
        np.testing.assert_allclose(runs["numba"].params[key], value, rtol=1e-6, atol=1e-9)


def test_bad_config_is_named():
    with pytest.raises(TrainError, match="optimizer"):
        Config(model="mlp", optimizer="rmsprop").resolved()
    with pytest.raises(TrainError, match="model"):
        Config(model="lstm").resolved()
    with pytest.raises(TrainError, match="gate_bias"):
        Config(model="grn-adding", gate_bias="big").resolved()


# --- resuming ------------------------------------------------------------------------


def assert_same_state(a: train.Checkpoint, b: train.Checkpoint) -> None:
    assert a.params.keys() == b.params.keys()
    for key in a.params:
        # Bit for bit: the same bytes, not merely close.
        assert a.params[key].tobytes() == b.params[key].tobytes(), key
    for slot in a.optimizer_state:
        for key in a.optimizer_state[slot]:
            assert np.array_equal(a.optimizer_state[slot][key], b.optimizer_state[slot][key])
    assert a.optimizer_t == b.optimizer_t and a.step == b.step
    assert a.rng_state == b.rng_state
    assert a.history.step_loss == b.history.step_loss


@pytest.mark.parametrize(
    "fields",
    [
        {"model": "mlp", "optimizer": "sgd", "lr": 0.05, "hidden": (16,), "epochs": 3},
        {
            "model": "grn-adding",
            "seq_len": 8,
            "n_train": 200,
            "n_test": 50,
            "hidden": (8,),
            "epochs": 3,
            "batch_size": 30,
        },
    ],
    ids=["mlp-sgd", "grn-adding-adam-clip"],
)
def test_resumed_run_equals_uninterrupted_run(tmp_path, fields):
    whole = train.train(quick(tmp_path / "whole", **fields))
    # Interrupted twice: mid-epoch (the epoch's order must be restored), then again.
    first = train.train(quick(tmp_path / "parts", stop_after=11, **fields))
    assert first.status == "stopped" and first.step == 11
    second = train.train(quick(tmp_path / "parts", resume=True, stop_after=9))
    assert second.step == 20
    last = train.train(quick(tmp_path / "parts", resume=True))
    assert last.status == "done" and last.step == whole.step
    assert_same_state(
        train.load_checkpoint(tmp_path / "whole" / train.CHECKPOINT),
        train.load_checkpoint(tmp_path / "parts" / train.CHECKPOINT),
    )
    for key, value in whole.params.items():
        assert value.tobytes() == last.params[key].tobytes()
    assert last.test_metric == whole.test_metric


def test_resume_refuses_a_different_model_shape(tmp_path):
    train.train(quick(tmp_path, model="mlp", hidden=(8,), steps=2))
    with pytest.raises(TrainError, match="hidden"):
        train.train(quick(tmp_path, model="mlp", hidden=(9,), resume=True))
    with pytest.raises(TrainError, match="no checkpoint"):
        train.train(quick(tmp_path / "empty", model="mlp", resume=True))


def test_resume_reads_a_checkpoint_of_the_old_model_names(tmp_path):
    # Written before --cell: model "grn-adding", no "cell" field.
    fields = {**ADDING, "hidden": (4,), "epochs": 2, "batch_size": 25}
    train.train(quick(tmp_path, stop_after=3, **fields))
    path = tmp_path / train.CHECKPOINT
    with np.load(path) as archive:
        arrays = {name: archive[name] for name in archive.files}
    meta = json.loads(str(arrays["meta"]))
    del meta["config"]["cell"]
    meta["config"]["model"] = "grn-adding"
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)
    result = train.train(quick(tmp_path, model="grn-adding", resume=True))
    assert result.status == "done" and result.step == 8
    assert (result.config.model, result.config.cell) == ("adding", "grn")
    with pytest.raises(TrainError, match="cell = 'gru' differs"):
        train.train(quick(tmp_path, cell="gru", resume=True))


def test_resume_may_change_the_learning_rate(tmp_path):
    train.train(quick(tmp_path, model="mlp", hidden=(8,), epochs=2, stop_after=5))
    notes = io.StringIO()
    result = train.train(quick(tmp_path, model="mlp", lr=0.001, resume=True), stream=notes)
    assert result.config.lr == 0.001 and result.status == "done"
    assert "lr changed" in notes.getvalue()


# --- divergence and atomic checkpoints ---------------------------------------------------


ADDING = {"model": "grn-adding", "seq_len": 6, "n_train": 100, "n_test": 20, "hidden": (4,)}
# Plain SGD with this rate overflows float32 within a few steps (Adam's steps are
# bounded by lr, so it would only make the parameters huge).
EXPLODE = {"optimizer": "sgd", "lr": 1e12, "clip": 0.0}


def test_divergence_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    # One good epoch, then resumed with an absurd learning rate: the linear readout
    # overflows within a few steps.
    train.train(quick(tmp_path, epochs=3, stop_after=4, batch_size=25, optimizer="sgd", **ADDING))
    path = tmp_path / train.CHECKPOINT
    before = path.read_bytes()
    good = train.load_checkpoint(path)
    result = train.train(quick(tmp_path, resume=True, lr=1e12, clip=0.0), stream=io.StringIO())
    assert result.status == "diverged"
    assert "became" in result.message and str(path) in result.message
    assert "step 4" in result.message  # names the last good checkpoint's step
    assert path.read_bytes() == before
    assert result.step == good.step
    for key, value in good.params.items():
        np.testing.assert_array_equal(result.params[key], value)
    assert not list(tmp_path.glob(".*.tmp"))


def test_divergence_from_the_start_writes_no_checkpoint(tmp_path):
    explode = {**EXPLODE, "lr": 1e30}  # the first update overflows float32
    result = train.train(quick(tmp_path, epochs=2, **explode, **ADDING))
    assert result.status == "diverged" and result.checkpoint is None
    assert "no checkpoint was written" in result.message
    assert not (tmp_path / train.CHECKPOINT).exists()
    assert np.isfinite(result.test_metric)  # reported for the initial, good parameters


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    train.train(quick(tmp_path, model="mlp", hidden=(8,), steps=3))
    path = tmp_path / train.CHECKPOINT
    before = path.read_bytes()

    def broken_savez(handle, **arrays):
        handle.write(b"PK\x03\x04 half a zip file")
        raise OSError("disk full")

    monkeypatch.setattr(train.np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        train.train(quick(tmp_path, model="mlp", hidden=(8,), steps=6, resume=True))
    assert path.read_bytes() == before
    assert train.load_checkpoint(path).step == 3
    assert not list(tmp_path.glob(".*.tmp"))


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "file.bin"
    write.atomic_write(path, lambda handle: handle.write(b"old"))

    def fail(handle):
        handle.write(b"new, but not all of it")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write.atomic_write(path, fail)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_bytes(b"not a zip")
    with pytest.raises(TrainError, match="not a readable"):
        train.load_checkpoint(path)


# --- the command line ----------------------------------------------------------------


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    train.add_arguments(parser)
    return parser.parse_args(argv)


def test_cli_trains_and_reports(tmp_path, capsys):
    code = train.main(
        parse(["--model", "mlp", "--epochs", "2", "--hidden", "16", "--out", str(tmp_path)])
    )
    assert code == 0
    captured = capsys.readouterr()
    assert "test accuracy" in captured.out and "wall time" in captured.out
    assert str(tmp_path / train.PLOT) in captured.out
    assert (tmp_path / train.PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((tmp_path / train.SUMMARY).read_text())
    assert summary["status"] == "done" and summary["step"] == 90
    assert summary["cell"] == "dense_sigmoid"
    # The test curve: one row per epoch.
    assert [row["step"] for row in summary["curve"]] == [45, 90]
    assert summary["curve"][-1]["test_accuracy"] == summary["test_metric"]
    # Not a terminal: the bar prints periodic lines, not carriage returns.
    assert "\r" not in captured.err and 1 <= captured.err.count("\n") <= 12


def test_cli_errors(tmp_path, capsys):
    args = parse(["--model", "mlp", "--resume", "--out", str(tmp_path / "none")])
    assert train.main(args) == 2
    assert "no checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse(["--hidden", "0"])
    with pytest.raises(SystemExit):
        parse(["--epochs", "2", "--steps", "3"])


def test_cli_divergence_exit_code(tmp_path, capsys):
    argv = ["--model", "grn-adding", "--seq-len", "6", "--n-train", "100", "--n-test", "20"]
    argv += ["--optimizer", "sgd", "--lr", "1e12", "--clip", "0", "--out", str(tmp_path)]
    assert train.main(parse(argv)) == 1
    out = capsys.readouterr().out
    assert "DIVERGED: the " in out and "became" in out


# --- the progress bar ----------------------------------------------------------------


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_redraws_one_line():
    stream = FakeTerminal()
    with progress.Progress(5, "run", stream=stream) as bar:
        for _ in range(5):
            bar.update(1, loss="0.5")
    text = stream.getvalue()
    assert text.startswith("\r") and text.endswith("\n") and text.count("\n") == 1
    assert "100% 5/5" in text and "loss 0.5" in text


def test_progress_elsewhere_prints_periodic_lines():
    stream = io.StringIO()
    with progress.Progress(1000, "run", stream=stream) as bar:
        for _ in range(1000):
            bar.update(1)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 10  # 10%, 20%, ..., 90%, and the final line
    assert lines[-1].startswith("run: [####################] 100% 1000/1000")
    silent = io.StringIO()
    with progress.Progress(10, stream=silent, enabled=False) as bar:
        bar.update(10)
    assert silent.getvalue() == ""


def test_format_duration():
    assert progress.format_duration(4.25) == "4.2s"
    assert progress.format_duration(75) == "1:15"
    assert progress.format_duration(3725) == "1:02:05"


# --- the tour ------------------------------------------------------------------------


def tour_args(tmp_path, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    tour.add_arguments(parser)
    return parser.parse_args(["--quick", "--no-progress", "--out", str(tmp_path), *extra])


def test_tour_quick(tmp_path, capsys, monkeypatch):
    # The paper's verification and the generated check have their own tests (and take
    # ~15 s); here they are stand-ins, and the tour's own work runs for real.
    findings = [
        Finding("a", 3, "x", "holds"),
        Finding("b", 9, "y", "fails", corrected="z"),
        Finding("c", 12, "w", "holds-locally", corrected="v"),
    ]
    monkeypatch.setattr(tour, "run_verification", lambda: tour.summarise_findings(findings, 0.5))
    monkeypatch.setattr(
        tour, "run_check", lambda: tour.Step("generated modules", True, "current", 0.1)
    )
    assert tour.main(tour_args(tmp_path)) == 0
    out = capsys.readouterr().out
    assert "3 formulas: 1 holds, 1 holds-locally, 1 fails" in out
    assert "line   9  fails" in out
    assert "MLP on digits" in out and "GRN on digits" in out and "test accuracy" in out
    assert str(tmp_path / "mlp" / train.PLOT) in out
    assert (tmp_path / "digits-rows" / train.PLOT).exists()


def test_tour_reports_a_failed_step_and_goes_on(tmp_path, capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_paper(name, *args, **kwargs):
        if name == "symbolic.verify":
            raise ImportError("symbolic.verify is being written")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_paper)
    monkeypatch.setattr(tour, "run_check", lambda: tour.Step("generated modules", True, "ok", 0))
    monkeypatch.setattr(tour, "TOUR_MODELS", tour.TOUR_MODELS[:1])
    assert tour.main(tour_args(tmp_path)) == 1
    out = capsys.readouterr().out
    assert "FAILED: could not run: ImportError: symbolic.verify is being written" in out
    assert "MLP on digits" in out


def test_digits_used_by_train_are_the_held_out_split(tmp_path):
    config = quick(tmp_path, model="mlp").resolved()
    data = train.load_data(config)
    np.testing.assert_array_equal(data.y_test, digits_flat().y_test)
