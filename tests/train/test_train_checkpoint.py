"""Checkpoints and resuming (symbolic/train/checkpoint.py, the resume path of
symbolic/train/loop.py and symbolic/train/config.py): runs resume bit for bit, stop
cleanly on divergence keeping the last good checkpoint, write checkpoints atomically, and
refuse a truncated, empty, bit-flipped or hand-crafted checkpoint in one line."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import derivgen, one_line_error
from train_helpers import ADDING, EXPLODE, quick

from symbolic import write
from symbolic.train.checkpoint import CHECKPOINT, Checkpoint, load_checkpoint
from symbolic.train.config import Config
from symbolic.train.errors import TrainError
from symbolic.train.loop import train

# --- resuming ------------------------------------------------------------------------


def assert_same_state(a: Checkpoint, b: Checkpoint) -> None:
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
    whole = train(quick(tmp_path / "whole", **fields))
    # Interrupted twice: mid-epoch (the epoch's order must be restored), then again.
    first = train(quick(tmp_path / "parts", stop_after=11, **fields))
    assert first.status == "stopped" and first.step == 11
    second = train(quick(tmp_path / "parts", resume=True, stop_after=9))
    assert second.step == 20
    last = train(quick(tmp_path / "parts", resume=True))
    assert last.status == "done" and last.step == whole.step
    assert_same_state(
        load_checkpoint(tmp_path / "whole" / CHECKPOINT),
        load_checkpoint(tmp_path / "parts" / CHECKPOINT),
    )
    for key, value in whole.params.items():
        assert value.tobytes() == last.params[key].tobytes()
    assert last.test_metric == whole.test_metric


def test_resume_refuses_a_different_model_shape(tmp_path):
    train(quick(tmp_path, model="mlp", hidden=(8,), steps=2))
    with pytest.raises(TrainError, match="hidden"):
        train(quick(tmp_path, model="mlp", hidden=(9,), resume=True))
    with pytest.raises(TrainError, match="no checkpoint"):
        train(quick(tmp_path / "empty", model="mlp", resume=True))


def test_resume_reads_a_checkpoint_of_the_old_model_names(tmp_path):
    # Written before --cell: model "grn-adding", no "cell" field.
    fields = {**ADDING, "hidden": (4,), "epochs": 2, "batch_size": 25}
    train(quick(tmp_path, stop_after=3, **fields))
    path = tmp_path / CHECKPOINT
    with np.load(path) as archive:
        arrays = {name: archive[name] for name in archive.files}
    meta = json.loads(str(arrays["meta"]))
    del meta["config"]["cell"]
    meta["config"]["model"] = "grn-adding"
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)
    result = train(quick(tmp_path, model="grn-adding", resume=True))
    assert result.status == "done" and result.step == 8
    assert (result.config.model, result.config.cell) == ("adding", "grn")
    with pytest.raises(TrainError, match="cell = 'gru' differs"):
        train(quick(tmp_path, cell="gru", resume=True))


def test_resume_may_change_the_learning_rate(tmp_path):
    train(quick(tmp_path, model="mlp", hidden=(8,), epochs=2, stop_after=5))
    notes = io.StringIO()
    result = train(quick(tmp_path, model="mlp", lr=0.001, resume=True), stream=notes)
    assert result.config.lr == 0.001 and result.status == "done"
    assert "lr changed" in notes.getvalue()


# --- divergence and atomic checkpoints ---------------------------------------------------


def test_divergence_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    # One good epoch, then resumed with an absurd learning rate: the linear readout
    # overflows within a few steps.
    train(quick(tmp_path, epochs=3, stop_after=4, batch_size=25, optimizer="sgd", **ADDING))
    path = tmp_path / CHECKPOINT
    before = path.read_bytes()
    good = load_checkpoint(path)
    result = train(quick(tmp_path, resume=True, lr=1e12, clip=0.0), stream=io.StringIO())
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
    result = train(quick(tmp_path, epochs=2, **explode, **ADDING))
    assert result.status == "diverged" and result.checkpoint is None
    assert "no checkpoint was written" in result.message
    assert not (tmp_path / CHECKPOINT).exists()
    assert np.isfinite(result.test_metric)  # reported for the initial, good parameters


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    train(quick(tmp_path, model="mlp", hidden=(8,), steps=3))
    path = tmp_path / CHECKPOINT
    before = path.read_bytes()

    def broken_savez(handle, **arrays):
        handle.write(b"PK\x03\x04 half a zip file")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        train(quick(tmp_path, model="mlp", hidden=(8,), steps=6, resume=True))
    assert path.read_bytes() == before
    assert load_checkpoint(path).step == 3
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
        load_checkpoint(path)


# --- bad checkpoints -------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    train(Config(out=out, model="mlp", hidden=(8,), steps=3, progress=False, plot=False))
    return out / CHECKPOINT


def _edited(path: Path, target: Path, edit) -> Path:
    """A copy of the checkpoint with its arrays and metadata edited."""
    with np.load(path, allow_pickle=False) as archive:
        files = {name: archive[name] for name in archive.files}
    meta = json.loads(str(files["meta"]))
    edit(files, meta)
    files["meta"] = np.array(json.dumps(meta))
    buffer = io.BytesIO()
    np.savez(buffer, **files)
    target.write_bytes(buffer.getvalue())
    return target


def _drop(files, prefix):
    for key in [k for k in files if k.startswith(prefix)]:
        del files[key]


BAD_CHECKPOINTS = {
    "truncated": lambda p, t: t.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]) and t,
    "empty": lambda p, t: t.write_bytes(b"") or t,
    "bit-flipped": lambda p, t: (
        t.write_bytes((lambda b: b[:200] + bytes([b[200] ^ 0x10]) + b[201:])(p.read_bytes())) and t
    ),
    "order-all-minus-one": lambda p, t: _edited(
        p, t, lambda f, m: f.__setitem__("order", np.full_like(f["order"], -1))
    ),
    "negative-step": lambda p, t: _edited(p, t, lambda f, m: m.__setitem__("step", -5)),
    "missing-optimizer-state": lambda p, t: _edited(p, t, lambda f, m: _drop(f, "opt/")),
    "step-as-text": lambda p, t: _edited(p, t, lambda f, m: m.__setitem__("step", "3")),
    "not-a-zip": lambda p, t: t.write_bytes(b"PK\x03\x04 but nothing more") and t,
    "pickled-object": lambda p, t: t.write_bytes((lambda z: z)(_pickled_npz())) and t,
}


def _pickled_npz() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, meta=np.array([{"format": 1}], dtype=object))
    return buffer.getvalue()


@pytest.mark.parametrize("kind", sorted(BAD_CHECKPOINTS))
def test_a_bad_checkpoint_is_refused_in_one_line(checkpoint, tmp_path, kind):
    out = tmp_path / "run"
    out.mkdir()
    BAD_CHECKPOINTS[kind](checkpoint, out / CHECKPOINT)
    before = (out / CHECKPOINT).read_bytes()
    done = derivgen("train", "--resume", "--out", str(out), "--no-progress", "--no-plot",
                    cwd=tmp_path)  # fmt: skip
    one_line_error(done, 2, str(out / CHECKPOINT))
    assert (out / CHECKPOINT).read_bytes() == before


def test_the_good_checkpoint_resumes(checkpoint, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / CHECKPOINT).write_bytes(checkpoint.read_bytes())
    result = train(Config(out=out, resume=True, steps=5, progress=False, plot=False))
    assert result.step == 5


def test_zipfile_is_what_numpy_reads():
    """(the corrupt-checkpoint cases above rely on npz being a zip)"""
    buffer = io.BytesIO()
    np.savez(buffer, a=np.zeros(2))
    assert zipfile.is_zipfile(io.BytesIO(buffer.getvalue()))
