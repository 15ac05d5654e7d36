"""Training with the torch backend in one process (symbolic/train/torch_engine.py,
symbolic/train/torch_network.py): a torch run follows a NumPy run of the same options
(float64: the torch cells are an independent second implementation of every layer's
forward and backward, started from the same parameters), float32 trains, checkpoints
resume across backends, the NumPy path never imports torch, CUDA where present."""

from __future__ import annotations

import dataclasses
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from train_helpers import ADDING, quick

from symbolic import backends
from symbolic.train.checkpoint import CHECKPOINT, load_checkpoint
from symbolic.train.config import Config
from symbolic.train.errors import TrainError
from symbolic.train.loop import load_data, train
from symbolic.train.network import build_network, init_params

torch = pytest.importorskip("torch")

RUNS = {
    "mlp-adam-cosine": {"model": "mlp", "hidden": (16,), "batch_size": 50},
    "adding-every-clip": {**ADDING, "readout": "every", "batch_size": 30, "clip": 0.5},
    "digits-rows-gru-sgd": {
        "model": "digits-rows",
        "cell": "gru",
        "hidden": (8, 8),
        "optimizer": "sgd",
        "clip": 0.1,
    },
}


def assert_params_close(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        np.testing.assert_allclose(a[key], b[key], rtol=0, atol=atol, err_msg=key)


@pytest.mark.parametrize("fields", RUNS.values(), ids=RUNS.keys())
def test_a_torch_run_follows_a_numpy_run(tmp_path, fields):
    runs = {
        backend: train(
            quick(tmp_path / backend, backend=backend, dtype="float64", steps=6, **fields)
        )
        for backend in ("numpy", "torch")
    }
    assert runs["torch"].config.backend == "torch" and runs["torch"].step == 6
    assert_params_close(runs["torch"].params, runs["numpy"].params, 1e-10)
    losses = [run.history.step_loss for run in runs.values()]
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-10)
    assert losses[0][0] != losses[0][-1]  # the parameters moved: matching means something
    assert runs["torch"].test_metric == pytest.approx(runs["numpy"].test_metric, abs=1e-9)


def test_a_torch_run_starts_from_the_numpy_init(tmp_path):
    # One step so small that it changes nothing: the parameters are the initial ones.
    fields = {**ADDING, "model": "adding", "backend": "torch", "steps": 1, "lr": 1e-300}
    config = quick(tmp_path, **fields).resolved()
    network = build_network(dataclasses.replace(config, backend="numpy"), load_data(config))
    expected = init_params(network, config)  # with the chrono gate bias of the adding model
    result = train(config)
    assert_params_close(result.params, expected, 1e-12)


def test_float32_trains_with_torch(tmp_path):
    fields = {"model": "mlp", "hidden": (16,), "epochs": 4, "lr": 0.05, "dtype": "float32"}
    numpy_run = train(quick(tmp_path / "numpy", **fields))
    result = train(quick(tmp_path / "torch", backend="torch", **fields))
    assert result.status == "done" and result.test_metric > 0.3  # 10 classes: 0.1 by chance
    assert result.history.step_loss[-1] < 0.5 * result.history.step_loss[0]
    # float32 rounding differs between the implementations, but only that.
    assert result.test_metric == pytest.approx(numpy_run.test_metric, abs=0.02)
    for key, value in numpy_run.params.items():
        np.testing.assert_allclose(result.params[key], value, rtol=1e-3, atol=1e-4)
    saved = load_checkpoint(tmp_path / "torch" / CHECKPOINT)
    assert all(value.dtype == np.float32 for value in saved.params.values())
    assert all(v.dtype == np.float32 for s in saved.optimizer_state.values() for v in s.values())


def test_a_torch_run_resumes_where_it_stopped(tmp_path):
    fields = {**ADDING, "epochs": 2, "batch_size": 30, "backend": "torch", "dtype": "float64"}
    whole = train(quick(tmp_path / "whole", **fields))
    first = train(quick(tmp_path / "parts", stop_after=5, **fields))
    assert first.status == "stopped"
    last = train(quick(tmp_path / "parts", resume=True))
    assert last.status == "done" and last.step == whole.step
    assert_params_close(last.params, whole.params, 1e-13)
    assert last.history.step_loss == pytest.approx(whole.history.step_loss, rel=1e-13)


def test_a_numpy_checkpoint_resumes_with_torch(tmp_path):
    fields = {**ADDING, "epochs": 2, "batch_size": 30, "dtype": "float64"}
    whole = train(quick(tmp_path / "whole", **fields))
    train(quick(tmp_path / "parts", stop_after=4, **fields))
    notes = io.StringIO()
    last = train(quick(tmp_path / "parts", resume=True, backend="torch"), stream=notes)
    assert "backend changed from 'numpy' to 'torch'" in notes.getvalue()
    assert last.config.backend == "torch"
    assert_params_close(last.params, whole.params, 1e-10)


def test_an_empty_shard_costs_nothing_and_reaches_every_parameter(tmp_path):
    from symbolic.train.torch_network import TorchNetwork

    config = quick(tmp_path, model="digits-rows", hidden=(4,)).resolved()
    network = build_network(config, load_data(config))
    net = TorchNetwork(network, torch.float64, torch.device("cpu"))
    cost = net(torch.zeros((8, 0, 8), dtype=torch.float64), torch.zeros((0, 10)))
    cost.backward()
    assert float(cost.detach()) == 0.0
    assert all(p.grad is not None and not p.grad.any() for p in net.parameters())


def test_options_that_need_torch_are_refused_elsewhere(tmp_path):
    with pytest.raises(TrainError, match="nproc: needs --backend torch"):
        Config(model="mlp", nproc=2).resolved()
    with pytest.raises(TrainError, match="device: needs --backend torch"):
        Config(model="mlp", backend="numba", device="cpu").resolved()
    with pytest.raises(TrainError, match="nproc: expected a positive number"):
        Config(model="mlp", backend="torch", nproc=0).resolved()


@pytest.fixture
def framework_backend():
    """A backend whose modules take a framework's tensors (an ``adapt``), as jax's do."""
    numpy = backends.get("numpy")
    fake = dataclasses.replace(numpy, name="tensorlike", adapt=lambda module: module)
    backends.register(fake)
    yield fake
    backends.unregister("tensorlike")


def test_a_framework_backend_without_an_engine_points_to_the_readme(framework_backend):
    names = [framework_backend.name, *(["jax"] if "jax" in backends.names() else [])]
    for name in names:
        with pytest.raises(TrainError, match=f"backend {name}: .*Three ways to train"):
            Config(model="mlp", backend=name).resolved()


def test_the_numpy_path_does_not_import_torch(tmp_path):
    script = (
        "import sys\n"
        "from symbolic.train import Config, train\n"
        f"train(Config(model='mlp', steps=2, hidden=(4,), out={str(tmp_path)!r}, "
        "progress=False, plot=False))\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / CHECKPOINT).exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_a_cuda_run_follows_a_numpy_run(tmp_path):
    fields = {**RUNS["adding-every-clip"], "dtype": "float64", "steps": 6}
    numpy_run = train(quick(tmp_path / "numpy", **fields))
    cuda_run = train(quick(tmp_path / "cuda", backend="torch", device="cuda", **fields))
    assert_params_close(cuda_run.params, numpy_run.params, 1e-10)
