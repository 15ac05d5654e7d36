"""Training with the generated modules (symbolic/train.py, progress.py, tour.py).

These runs are short: they check that the models learn (the cost falls well below its
start), that runs resume bit for bit, stop cleanly on divergence and write checkpoints
atomically; not the final figures. The defaults' figures are measured with
``derivgen train --model mlp|grn-digits|grn-adding`` (see MODEL_DEFAULTS).
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json

import numpy as np
import pytest

from symbolic import progress, tour, train
from symbolic.data import digits_flat
from symbolic.train import Config, TrainError
from symbolic.verdict import Finding


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
    train.atomic_write(path, lambda handle: handle.write(b"old"))

    def fail(handle):
        handle.write(b"new, but not all of it")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train.atomic_write(path, fail)
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
    assert (tmp_path / "grn-digits" / train.PLOT).exists()


def test_tour_reports_a_failed_step_and_goes_on(tmp_path, capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_paper(name, *args, **kwargs):
        if name == "symbolic.paper":
            raise ImportError("symbolic.paper is being written")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_paper)
    monkeypatch.setattr(tour, "run_check", lambda: tour.Step("generated modules", True, "ok", 0))
    monkeypatch.setattr(tour, "TOUR_MODELS", tour.TOUR_MODELS[:1])
    assert tour.main(tour_args(tmp_path)) == 1
    out = capsys.readouterr().out
    assert "FAILED: could not run: ImportError: symbolic.paper is being written" in out
    assert "MLP on digits" in out


def test_digits_used_by_train_are_the_held_out_split(tmp_path):
    config = quick(tmp_path, model="mlp").resolved()
    data = train.load_data(config)
    np.testing.assert_array_equal(data.y_test, digits_flat().y_test)
