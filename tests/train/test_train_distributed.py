"""Data-parallel training on torch.distributed (symbolic/train/distributed.py,
symbolic/train/launch.py, the sharding of symbolic/train/torch_engine.py): two processes
(gloo, float64) end where one process ends on the same global batches, also when a batch
does not divide evenly; a process that dies stops the others with one clear error and
leaves the last checkpoint whole, and the run resumes from it."""

from __future__ import annotations

import re

import numpy as np
import pytest
from cli_helpers import derivgen
from train_helpers import quick

from symbolic.train import distributed
from symbolic.train.checkpoint import CHECKPOINT, load_checkpoint
from symbolic.train.errors import TrainError
from symbolic.train.launch import describe_failure
from symbolic.train.loop import train
from symbolic.train.result import SUMMARY

torch = pytest.importorskip("torch")
needs_gloo = pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="torch.distributed with gloo is not available",
)

# 1437 training images in batches of 500: 3 steps an epoch, the last batch of 437 rows
# (shards of 219 and 218 rows); Adam with the cosine schedule.
FIELDS = {"model": "mlp", "hidden": (8,), "batch_size": 500, "epochs": 2, "dtype": "float64"}
ARGV = ["--model", "mlp", "--hidden", "8", "--batch-size", "500", "--epochs", "2",
        "--dtype", "float64", "--backend", "torch", "--no-progress", "--no-plot"]  # fmt: skip


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The reference run: one process, the same global batches."""
    return train(quick(tmp_path_factory.mktemp("one"), backend="torch", **FIELDS))


def assert_same_run(checkpoint, reference, atol=1e-12):
    assert checkpoint.step == reference.step
    for key, value in reference.params.items():
        np.testing.assert_allclose(checkpoint.params[key], value, rtol=0, atol=atol, err_msg=key)
    np.testing.assert_allclose(checkpoint.history.step_loss, reference.history.step_loss,
                               rtol=1e-12)  # fmt: skip


@pytest.mark.slow
@needs_gloo
def test_two_processes_end_where_one_process_ends(tmp_path, reference):
    out = tmp_path / "two"
    done = derivgen("train", *ARGV, "--nproc", "2", "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    # Process 0 alone reports and writes.
    assert done.stdout.count("mlp (torch, float64)") == 1
    assert sorted(p.name for p in out.iterdir()) == sorted([CHECKPOINT, SUMMARY])
    assert_same_run(load_checkpoint(out / CHECKPOINT), reference)


@pytest.mark.slow
@needs_gloo
def test_a_lost_process_stops_the_run_and_its_checkpoint_resumes(tmp_path, monkeypatch, reference):
    out = tmp_path / "two"
    # Process 1 exits as it starts step 5, as if killed: the checkpoint of epoch 1 (step
    # 3) is on disk.
    monkeypatch.setenv(distributed.FAIL_ENV, "1:4")
    done = derivgen("train", *ARGV, "--nproc", "2", "--out", str(out), cwd=tmp_path)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("derivgen train: error")]
    assert f"process 1 of 2 exited with status {distributed.FAIL_EXIT}" in line
    # Process 0 notices at step 5, or at the end of step 4 when process 1's exit resets
    # a connection that still held data of step 4's all-reduce.
    assert re.search(r"process 0: rank 0: step [45] failed, another process is probably lost",
                     line)  # fmt: skip
    assert f"{out / CHECKPOINT} (step 3); continue with --resume" in line
    assert load_checkpoint(out / CHECKPOINT).step == 3
    monkeypatch.delenv(distributed.FAIL_ENV)
    done = derivgen("train", "--backend", "torch", "--nproc", "2", "--resume", "--no-plot",
                    "--out", str(out), cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert_same_run(load_checkpoint(out / CHECKPOINT), reference)


@pytest.mark.slow
@pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.device_count() < 2,
    reason="needs two CUDA devices",
)
def test_two_cuda_processes_end_where_one_ends(tmp_path):
    reference = train(quick(tmp_path / "one", backend="torch", device="cuda:0", **FIELDS))
    out = tmp_path / "two"
    done = derivgen("train", *ARGV, "--nproc", "2", "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert_same_run(load_checkpoint(out / CHECKPOINT), reference, atol=1e-10)


# --- the parts, without processes ------------------------------------------------------


def test_the_failure_names_the_process_that_died_first():
    # Process 1 died without a word; process 0 then lost it and said so.
    text = describe_failure([2, -9], {0: "rank 0: step 5 failed"})
    assert text == "process 1 of 2 was killed by SIGKILL; process 0: rank 0: step 5 failed"
    text = describe_failure([2, 0], {0: "checkpoint: bad"})
    assert text == "process 0 of 2 exited with status 2; process 0: checkpoint: bad"
    text = describe_failure([-15, 3], {0: "still running 60 s later: terminated"})
    assert text.startswith("process 1 of 2 exited with status 3; process 0: still running")


def test_a_place_is_read_from_the_environment(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.place_from_env() is None and distributed.rank_from_env() == 0
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    assert distributed.place_from_env() is None  # a group of one is no group
    # torchrun --nnodes 2 --nproc-per-node 2: the second machine's first process.
    env = {"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    place = distributed.place_from_env()
    assert place == distributed.Place(rank=2, world=4, local_rank=0, local_world=2)
    assert distributed.rank_from_env() == 2
    distributed.check_place(place, "torch", 2)
    with pytest.raises(TrainError, match="only --backend torch trains data-parallel"):
        distributed.check_place(place, "numpy", None)
    with pytest.raises(TrainError, match="drop --nproc"):
        distributed.check_place(place, "torch", 4)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(TrainError, match="ranks do not fit"):
        distributed.place_from_env()


def test_the_failure_point_is_one_process_and_one_step(monkeypatch):
    monkeypatch.setenv(distributed.FAIL_ENV, "1:4")
    assert distributed.fail_step(1) == 4 and distributed.fail_step(0) is None
    monkeypatch.delenv(distributed.FAIL_ENV)
    assert distributed.fail_step(1) is None
