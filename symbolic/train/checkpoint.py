"""What a run carries from step to step, and its checkpoint file.

Runs are resumable bit for bit: a checkpoint holds the parameters, the optimizer's
state, the shuffling generator's state, the current epoch's order and the history, and
is replaced atomically. A resumed run ends with exactly the parameters of an
uninterrupted one.

The file (``checkpoint.npz``, format 1) is an ``.npz`` archive, read without pickle:
``params/<key>`` and ``opt/<slot>/<key>`` arrays, ``order``, ``step_loss``, ``evals``
(5 columns) and ``meta``, a JSON string (format, derivgen version, the run's fields,
step, optimizer updates, the generator's state, wall time, and the sha256 of each
layer's spec and of the cost's: a resume with an edited spec is refused).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from symbolic import __version__, write
from symbolic.train.config import Config
from symbolic.train.errors import TrainError
from symbolic.train.optim import Optimizer

CHECKPOINT = "checkpoint.npz"
CHECKPOINT_FORMAT = 1


@dataclass
class History:
    """What happened so far, for the plot and the summary.

    Attributes:
        step_loss: The training cost of every step.
        evals: One row per evaluation: step, epoch, mean training cost since the previous
            evaluation, test cost, test metric (accuracy in [0, 1], or MSE).
    """

    step_loss: list[float] = field(default_factory=list)
    evals: list[tuple[float, float, float, float, float]] = field(default_factory=list)


@dataclass
class TrainState:
    """Everything a run needs to continue exactly where it was.

    Attributes:
        params: The parameters (flat dict).
        optimizer: The optimizer, with its state.
        rng: The generator that shuffles the training set.
        order: The current epoch's order of the training samples.
        step: Optimizer steps done.
        history: Costs and evaluations so far.
        wall_time: Seconds spent training before this run (by the runs that wrote the
            checkpoint it resumes).
    """

    params: dict[str, np.ndarray]
    optimizer: Optimizer
    rng: np.random.Generator
    order: np.ndarray
    step: int = 0
    history: History = field(default_factory=History)
    wall_time: float = 0.0


def save_checkpoint(
    path: Path,
    config: Config,
    state: TrainState,
    elapsed: float = 0.0,
    specs: dict[str, str] | None = None,
) -> None:
    """Write ``state`` (and the run's configuration) to ``path`` atomically.

    Args:
        path: The checkpoint file.
        config: The run's configuration.
        state: What to save.
        elapsed: Seconds this run has trained so far (added to ``state.wall_time``).
        specs: The sha256 of each spec the network is made of, by layer key
            (:meth:`~symbolic.train.network.Network.spec_digests`).
    """
    arrays = {f"params/{key}": value for key, value in state.params.items()}
    for slot, values in state.optimizer.state.items():
        arrays.update({f"opt/{slot}/{key}": value for key, value in values.items()})
    arrays["order"] = state.order
    arrays["step_loss"] = np.asarray(state.history.step_loss, dtype=np.float64)
    arrays["evals"] = np.asarray(state.history.evals, dtype=np.float64).reshape(-1, 5)
    meta = {
        "format": CHECKPOINT_FORMAT,
        "derivgen": __version__,
        "config": config.run_fields(),
        "step": state.step,
        "optimizer_t": state.optimizer.t,
        "rng": state.rng.bit_generator.state,
        "wall_time": state.wall_time + elapsed,
    }
    if specs is not None:
        meta["specs"] = specs
    arrays["meta"] = np.array(json.dumps(meta))
    write.atomic_write(path, lambda handle: np.savez(handle, **arrays))


@dataclass
class Checkpoint:
    """A checkpoint as read from disk.

    Attributes:
        config: The run's fields (:meth:`Config.run_fields`).
        step: Optimizer steps done.
        params: The parameters.
        optimizer_state: ``{slot: {key: array}}``.
        optimizer_t: Updates the optimizer had applied.
        rng_state: The shuffling generator's ``bit_generator.state``.
        order: The current epoch's order.
        history: Costs and evaluations.
        wall_time: Seconds spent training.
        specs: The sha256 of each spec of the run's network, by layer key (None: a
            checkpoint written before they were recorded).
    """

    config: dict[str, Any]
    step: int
    params: dict[str, np.ndarray]
    optimizer_state: dict[str, dict[str, np.ndarray]]
    optimizer_t: int
    rng_state: dict[str, Any]
    order: np.ndarray
    history: History
    wall_time: float
    specs: dict[str, str] | None = None


def load_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`, and check what it holds.

    Raises:
        TrainError: The file is missing, unreadable (truncated, empty, corrupted) or
            holds something a checkpoint cannot (a negative step, a missing field); one
            line naming the file and what is wrong.
    """
    path = Path(path)
    if not path.is_file():
        raise TrainError(f"no checkpoint at {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            files = {name: archive[name] for name in archive.files}
        meta = json.loads(str(files.pop("meta")))
    except Exception as exc:  # noqa: BLE001 - zip, zlib, npy and JSON each have their own
        what = f"{type(exc).__name__}: {exc}"[:200]
        raise TrainError(f"{path}: not a readable derivgen checkpoint ({what})") from None
    try:
        return _checked_checkpoint(meta, files)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise TrainError(f"{path}: not a valid derivgen checkpoint ({exc})"[:300]) from None


def _checked_checkpoint(meta: Any, files: dict[str, np.ndarray]) -> Checkpoint:
    """A checkpoint from its parts, every field checked (raises ValueError naming it)."""
    if not isinstance(meta, dict):
        raise ValueError("its metadata is not a table")
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"format {meta.get('format')!r}, expected {CHECKPOINT_FORMAT}")
    step, optimizer_t = _count(meta, "step"), _count(meta, "optimizer_t")
    wall = meta["wall_time"]
    if isinstance(wall, bool) or not isinstance(wall, int | float) or not wall >= 0:
        raise ValueError(f"wall_time {wall!r} is not a duration")
    if not isinstance(meta["config"], dict) or not isinstance(meta["rng"], dict):
        raise ValueError("config and rng must be tables")
    rng = np.random.default_rng()
    try:
        rng.bit_generator.state = meta["rng"]
    except Exception as exc:  # noqa: BLE001 - whatever numpy says of a bad state
        raise ValueError(f"rng: not a generator state ({exc})") from None
    params, opt_state = _checked_arrays(files)
    return Checkpoint(
        config=meta["config"],
        step=step,
        params=params,
        optimizer_state=opt_state,
        optimizer_t=optimizer_t,
        rng_state=meta["rng"],
        order=_checked_order(files["order"]),
        history=_checked_history(files["step_loss"], files["evals"], step),
        wall_time=float(wall),
        specs=_checked_specs(meta.get("specs")),
    )


def _checked_specs(specs: Any) -> dict[str, str] | None:
    if specs is None:
        return None
    if not isinstance(specs, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in specs.items()
    ):
        raise ValueError("specs: expected a table of sha256 digests")
    return specs


def _count(meta: dict[str, Any], name: str) -> int:
    value = meta[name]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} {value!r} is not a count")
    return value


def _checked_arrays(
    files: dict[str, np.ndarray],
) -> tuple[dict[str, np.ndarray], dict[str, dict[str, np.ndarray]]]:
    """The parameters and the optimizer's state, each a float array."""
    params, opt_state = {}, {}
    for name, value in files.items():
        if name.startswith("params/"):
            params[name.removeprefix("params/")] = value
        elif name.startswith("opt/"):
            _, slot, key = name.split("/", 2)
            opt_state.setdefault(slot, {})[key] = value
        elif name not in ("order", "step_loss", "evals"):
            raise ValueError(f"an unknown entry {name!r}")
    for key, value in [
        *params.items(),
        *((k, v) for s in opt_state.values() for k, v in s.items()),
    ]:
        if value.dtype.kind != "f":
            raise ValueError(f"{key}: {value.dtype} values, expected floats")
    return params, opt_state


def _checked_order(order: np.ndarray) -> np.ndarray:
    if order.ndim != 1 or order.dtype.kind not in "iu" or order.size == 0:
        raise ValueError("order: expected a 1-D array of sample indices")
    if not np.array_equal(np.sort(order), np.arange(order.size)):
        raise ValueError("order: not a permutation of the training samples")
    return order


def _checked_history(step_loss: np.ndarray, evals: np.ndarray, step: int) -> History:
    if step_loss.ndim != 1 or evals.ndim != 2 or evals.shape[1:] != (5,):
        raise ValueError("history: step_loss and evals have the wrong shapes")
    if step_loss.size != step:
        raise ValueError(f"history: {step_loss.size} step costs for step {step}")
    return History(
        step_loss=step_loss.tolist(),
        evals=[tuple(row) for row in evals.tolist()],
    )


def check_specs(saved: Checkpoint, digests: dict[str, str], specs: dict[str, str]) -> None:
    """Raise :class:`TrainError` if a spec of the run is not the one the checkpoint was
    trained with (its text edited since).

    Args:
        saved: The checkpoint.
        digests: The sha256 of each spec of the run's network, by layer key.
        specs: Each layer's spec (a name or a file), by layer key, to name it.
    """
    for key, before in (saved.specs or {}).items():
        now = digests.get(key)
        if now is not None and now != before:
            raise TrainError(
                f"checkpoint: the spec of {key} ({specs[key]}) changed since the checkpoint "
                f"was written (sha256 {before[:12]}... then, {now[:12]}... now): resume with "
                "the spec as it was, or start a new run in another --out"
            )


def check_resumable(
    saved: Checkpoint, expected: dict[str, np.ndarray], optimizer: Optimizer, n_train: int
) -> None:
    """Raise :class:`TrainError` unless ``saved`` fits the run that resumes it.

    Args:
        saved: The checkpoint.
        expected: Parameters of the run's network (their keys, shapes and dtypes).
        optimizer: The run's optimizer, fresh.
        n_train: Training samples of the run's data set.
    """
    _check_params(saved.params, expected)
    _check_optimizer(saved, optimizer, expected)
    if saved.order.size != n_train:
        raise TrainError(f"checkpoint: an order of {saved.order.size} samples for {n_train}")


def _check_params(params: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    for key, value in expected.items():
        if key not in params or params[key].shape != value.shape:
            raise TrainError(f"checkpoint: parameter {key} is missing or of the wrong shape")
        if params[key].dtype != value.dtype:
            raise TrainError(
                f"checkpoint: parameter {key} is {params[key].dtype}, not {value.dtype}"
            )
    extra = sorted(set(params) - set(expected))
    if extra:
        raise TrainError(f"checkpoint: parameters the model does not have: {', '.join(extra)}")


def _check_optimizer(saved: Checkpoint, optimizer: Optimizer, expected: dict) -> None:
    """A resumed optimizer's state must be whole: every slot for every parameter once a
    step was taken (a missing one would silently restart from zeros)."""
    if set(saved.optimizer_state) - set(optimizer.slots):
        raise TrainError(f"checkpoint: optimizer state {sorted(saved.optimizer_state)} is not "
                         f"{optimizer.name}'s ({', '.join(optimizer.slots)})")  # fmt: skip
    if saved.optimizer_t != saved.step:
        raise TrainError(f"checkpoint: {saved.optimizer_t} updates at step {saved.step}")
    for slot in optimizer.slots:
        held = saved.optimizer_state.get(slot, {})
        if saved.step and set(held) != set(expected):
            raise TrainError(f"checkpoint: the optimizer's {slot} is missing for some parameters")
        for key, value in held.items():
            if key in expected and value.shape != expected[key].shape:
                raise TrainError(f"checkpoint: the optimizer's {slot} of {key} has the wrong shape")
