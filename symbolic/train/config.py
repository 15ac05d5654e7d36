"""What to train and how: :class:`Config`, its defaults and checks, and how a resumed run's
configuration is merged with its checkpoint's.

A ``None`` field takes the model's default (its record's ``defaults_for`` its cell,
:mod:`symbolic.train.models`); :meth:`Config.resolved` fills them in and checks every
field, so the rest of the package only sees resolved configurations.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from symbolic import backends
from symbolic.train import specs
from symbolic.train.cells import check_cell, check_spec
from symbolic.train.errors import TrainError
from symbolic.train.models import DEFAULT_MODEL, ModelRecord, canonical_model, find, get

#: The backends whose modules a model can be built from: the registry's.
BACKENDS = backends.names()
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "cosine")
READOUTS = ("last", "every")
DTYPES = ("float32", "float64")
# The backend whose modules take torch tensors: its runs have their own engine
# (symbolic.train.torch_engine), and may use several processes (torch.distributed).
# Every other backend whose modules take a framework's tensors (its registry entry has
# an ``adapt``) is trained from a user's code (README, "Three ways to train"); one that
# takes NumPy arrays trains with the NumPy engine.
TORCH = "torch"
#: The cost of every built-in model unless ``--spec`` gives another.
DEFAULT_COST = "squared_error"
# Independent random streams derived from the seed: the layers' init, the shuffling
# (stream 1 drew the gate biases the trainer once set). Changing how one is drawn leaves
# the others as they were.
STREAM_LAYERS, STREAM_SHUFFLE = 0, 2
# What a checkpoint's run is: a resumed run must not change these.
STRUCTURAL = (
    "model",
    "cell",
    "readout_spec",
    "cost",
    "hidden",
    "seq_len",
    "n_train",
    "n_test",
    "readout",
    "seed",
    "dtype",
    "batch_size",
    "optimizer",
)
# How a checkpoint's run is trained: a resumed run may change these (it then no longer
# matches an uninterrupted run, which is the point of changing them).
TUNABLE = (
    "backend",
    "lr",
    "schedule",
    "momentum",
    "clip",
    "epochs",
    "steps",
    "tbptt",
    "class_weights",
)
#: ``--class-weights``: ``balanced`` weighs each class by n / (classes x its count) in a
#: cost that declares a unit input (``[inputs]``, e.g. weighted_softmax_cross_entropy).
CLASS_WEIGHTS = ("none", "balanced")


def default_out(model: str, cell: str | None = None) -> Path:
    """Where a run writes by default: ``runs/<model>``, or ``runs/<model>-<cell>`` for a
    cell other than the model's default (so that runs of different cells keep their own
    checkpoints)."""
    model = canonical_model(model)
    record = find(model)
    if cell is None or (record is not None and cell == record.default_cell):
        return Path("runs") / model
    return Path("runs") / f"{model}-{Path(cell).stem if specs.is_path(cell) else cell}"


@dataclass
class Config:
    """What to train and how. ``None`` means the model's default (its record's
    ``defaults``, then its ``cell_defaults`` for its cell: :mod:`symbolic.train.models`).

    Attributes:
        model: A registered model or one of its aliases (default ``mlp``; when
            resuming, the checkpoint's).
        cell: The spec of the hidden layers: a recurrent spec for ``digits-rows`` and
            ``adding`` (default ``grn``), a feedforward one for ``mlp`` (default
            ``dense_sigmoid``); any built-in spec of that kind with generated modules, or
            a spec file of that kind (``PATH.toml``: generated on the fly,
            :mod:`symbolic.train.specs`).
        readout_spec: The spec of the readout layer (a feedforward one; default the
            model's): a built-in name or a spec file.
        cost: The cost's spec (default ``squared_error``): a built-in name or a spec file.
        backend: ``numpy``, ``numba`` or ``torch``: which generated modules to import
            (``torch``: the cells' ``torch.nn.Module``, :mod:`symbolic.train.torch_engine`).
        optimizer: ``sgd`` (with momentum) or ``adam``.
        lr: Learning rate (the peak one with a schedule).
        schedule: ``constant``, or ``cosine``: decay to 0 over the run (the lr of step s
            is lr * (1 + cos(pi s / total)) / 2), so the last epochs settle instead of
            hopping between minibatch minima.
        momentum: SGD momentum.
        epochs: Passes over the training set (ignored when ``steps`` is set).
        steps: Total optimizer steps, instead of whole epochs; 0 or None: use epochs.
        batch_size: Samples per step.
        hidden: Sizes of the hidden layers (one ``cell`` layer each).
        seq_len: Sequence length of the adding problem.
        n_train: Training sequences of the adding problem.
        n_test: Test sequences of the adding problem.
        readout: ``last`` (the readout sees the last step of the recurrent layer) or
            ``every`` (the readout is applied at every step and trained on the target at
            every step; the prediction is the last step's).
        clip: Clip the gradient to this global norm; 0 disables.
        tbptt: Truncated backpropagation through time: split the sequences into chunks
            of this many steps, carry the state across chunks, backpropagate within
            each (:meth:`~symbolic.train.network.Network.tbptt_gradients`); 0: through
            whole sequences. Recurrent models, NumPy and Numba backends.
        class_weights: ``none``, or ``balanced``: the cost's unit input (class weights,
            a cost spec's ``[inputs]``) gets n / (classes x count) for each class of the
            training set, so that rare classes weigh as much as common ones.
        seed: Seed of the initial parameters and of the shuffling.
        dtype: ``float32`` or ``float64``.
        out: Output folder (default :func:`default_out`).
        resume: Continue the checkpoint in ``out``.
        stop_after: Stop (with a checkpoint) after this many steps in this run, as if
            interrupted; ``resume`` continues.
        nproc: Processes of a data-parallel torch run on this machine (None or 1: one;
            under ``torchrun``, its ``WORLD_SIZE`` instead): each takes its shard of
            every batch (:mod:`symbolic.train.distributed`).
        device: The torch device (``cpu``, ``cuda``, ``cuda:1``); None: each process's
            CUDA device when CUDA is present, the CPU otherwise.
        progress: Show the progress bar on stderr.
        plot: Save the loss and accuracy/MSE plot.
        blas_threads: BLAS threads while training (and torch's threads, at most, in a
            torch run); the matrices here are small, so one thread avoids
            synchronisation costs that exceed the work.
    """

    model: str | None = None
    cell: str | None = None
    readout_spec: str | None = None
    cost: str | None = None
    backend: str | None = None
    optimizer: str | None = None
    lr: float | None = None
    schedule: str | None = None
    momentum: float | None = None
    epochs: int | None = None
    steps: int | None = None
    batch_size: int | None = None
    hidden: tuple[int, ...] | None = None
    seq_len: int | None = None
    n_train: int | None = None
    n_test: int | None = None
    readout: str | None = None
    clip: float | None = None
    tbptt: int | None = None
    class_weights: str | None = None
    seed: int | None = None
    dtype: str | None = None
    out: Path | None = None
    resume: bool = False
    stop_after: int | None = None
    nproc: int | None = None
    device: str | None = None
    progress: bool = True
    plot: bool = True
    blas_threads: int | None = 1

    @property
    def record(self) -> ModelRecord:
        """The model's record (raises :class:`TrainError` for an unknown model)."""
        return get(self.model or DEFAULT_MODEL)

    def time_steps(self) -> int:
        """Time steps of a sequence model's input: its ``seq_len`` where the model takes
        one, its record's fixed length otherwise."""
        record = self.record
        return self.seq_len if "seq_len" in record.data_options else record.time_steps

    def resolved(self) -> Config:
        """A copy with every ``None`` training field set to the model's default."""
        record = self.record
        cell = specs.canonical(self.cell or record.default_cell)
        check_cell(record, cell)
        readout_spec = specs.canonical(self.readout_spec or record.readout_spec)
        check_spec("spec", readout_spec, "feedforward", "the readout layer")
        cost = specs.canonical(self.cost or DEFAULT_COST)
        check_spec("spec", cost, "cost", "the cost")
        defaults = record.defaults_for(cell)
        values = {
            name: defaults[name] if getattr(self, name) is None else getattr(self, name)
            for name in (*STRUCTURAL, *TUNABLE)
            if name not in ("model", "cell", "readout_spec", "cost")
        }
        out = default_out(record.name, cell) if self.out is None else Path(self.out)
        config = dataclasses.replace(
            self,
            **values,
            model=record.name,
            cell=cell,
            readout_spec=readout_spec,
            cost=cost,
            out=out,
        )
        config.hidden = tuple(int(h) for h in config.hidden)
        config.validate()
        return config

    def validate(self) -> None:
        """Raise :class:`TrainError` naming the first bad field."""
        self._check_choices()
        self._check_backend()
        self._check_numbers()

    def _check_choices(self) -> None:
        choices = {
            "backend": backends.names(),
            "optimizer": OPTIMIZERS,
            "schedule": SCHEDULES,
            "readout": READOUTS,
            "dtype": DTYPES,
            "class_weights": CLASS_WEIGHTS,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise TrainError(
                    f"{name}: expected one of {', '.join(allowed)}, got {getattr(self, name)!r}"
                )

    def _check_backend(self) -> None:
        if self.backend != TORCH and backends.get(self.backend).adapt is not None:
            raise TrainError(
                f"backend {self.backend}: derivgen train runs the NumPy, Numba and torch "
                f"modules; train with generated/<spec>_{self.backend}.py from your own code "
                '(the README\'s "Three ways to train" shows how: for jax, apply, jax.grad and an '
                "update under jit)"
            )
        if self.nproc is not None and self.nproc < 1:
            raise TrainError(f"nproc: expected a positive number, got {self.nproc}")
        torch_only = {"nproc": (self.nproc or 1) > 1, "device": self.device is not None}
        for name, given in torch_only.items():
            if given and self.backend != TORCH:
                raise TrainError(f"{name}: needs --backend torch (the backend is {self.backend})")

    def _check_numbers(self) -> None:
        record = self.record
        positive = {"batch_size": self.batch_size, "lr": self.lr}
        if not self.steps:
            positive["epochs"] = self.epochs
        positive.update({name: getattr(self, name) for name in record.data_options})
        for name, value in positive.items():
            if not value or value <= 0:
                raise TrainError(f"{name}: expected a positive number, got {value!r}")
        if not self.hidden or any(h <= 0 for h in self.hidden):
            raise TrainError(f"hidden: expected positive sizes, got {self.hidden!r}")
        for name in ("lr", "clip", "momentum"):
            value = getattr(self, name)
            if not math.isfinite(value):
                raise TrainError(f"{name}: expected a finite number, got {value!r}")
        if self.clip < 0 or self.momentum < 0 or (self.steps or 0) < 0:
            raise TrainError("clip, momentum and steps must not be negative")
        if self.momentum >= 1:
            raise TrainError(f"momentum: expected a number in [0, 1), got {self.momentum!r}")
        if not 0 <= self.seed < 2**63:
            raise TrainError(f"seed: expected a number from 0 to 2**63 - 1, got {self.seed!r}")
        if self.stop_after is not None and self.stop_after <= 0:
            raise TrainError(f"stop_after: expected a positive number, got {self.stop_after}")
        if "seq_len" in record.data_options and self.seq_len < 2:
            raise TrainError(f"seq_len: expected at least 2, got {self.seq_len}")
        self._check_tbptt()

    def _check_tbptt(self) -> None:
        if isinstance(self.tbptt, bool) or not isinstance(self.tbptt, int) or self.tbptt < 0:
            raise TrainError(f"tbptt: expected a number of steps (0: off), got {self.tbptt!r}")
        if not self.tbptt:
            return
        if self.record.cell_kind != "recurrent":
            raise TrainError(f"tbptt: the {self.model} model has no recurrent layer")
        if self.backend == TORCH:
            raise TrainError(
                "tbptt: the numpy and numba backends train with truncated BPTT; the torch "
                "engine backpropagates through whole sequences (drop --tbptt or use "
                "--backend numpy)"
            )

    def run_fields(self) -> dict[str, Any]:
        """The fields a checkpoint records (JSON-ready)."""
        values = {name: getattr(self, name) for name in (*STRUCTURAL, *TUNABLE)}
        values["hidden"] = list(values["hidden"])
        return values


def merge_resume(config: Config, saved: dict[str, Any]) -> tuple[Config, list[str]]:
    """The configuration of a resumed run: the checkpoint's, with allowed changes.

    Args:
        config: The options of the resumed run (``None``: the checkpoint's).
        saved: The checkpoint's run fields (:meth:`Config.run_fields`).

    Returns:
        The resolved configuration and a note for each changed training setting.

    Raises:
        TrainError: ``config`` sets a structural field to a different value.
    """
    # Checkpoints written before the models were renamed and had cells: the GRN's.
    model = canonical_model(saved["model"])
    record = find(model)
    default_cell = record.default_cell if record is not None else None
    saved = {
        # Checkpoints written before the readout layer and the cost could be chosen.
        "readout_spec": record.readout_spec if record is not None else None,
        "cost": DEFAULT_COST,
        "tbptt": 0,
        "class_weights": "none",
        **saved,
        "model": model,
        "cell": saved.get("cell") or default_cell,
    }
    if config.model is not None and canonical_model(config.model) != model:
        raise TrainError(f"--model {config.model}: the checkpoint is of model {model}")
    config = dataclasses.replace(config, model=model)
    if config.epochs is not None and config.steps is None:
        # Epochs asked for: they replace a step count the checkpoint's run may have had.
        config = dataclasses.replace(config, steps=0)
    values, notes = {}, []
    for name in (*STRUCTURAL, *TUNABLE):
        given = getattr(config, name)
        before = tuple(saved[name]) if name == "hidden" else saved[name]
        if given is not None and name == "hidden":
            given = tuple(given)
        if given is not None and name in ("cell", "readout_spec", "cost"):
            given = specs.canonical(given)
        if given is None or given == before:
            values[name] = before
        elif name in STRUCTURAL:
            raise TrainError(
                f"{name} = {given!r} differs from the checkpoint's {before!r}: "
                "drop the option to resume, or start a new run in another --out"
            )
        else:
            values[name] = given
            notes.append(f"{name} changed from {before!r} to {given!r}")
    merged = dataclasses.replace(config, **values).resolved()
    return merged, notes
