"""Train models composed of generated layers: ``derivgen train``.

A model is a stack of generated modules (``generated/<spec>_<backend>.py``) used only
through their public API (DESIGN.md, "Generated module API"): ``init_params``,
``forward``, ``backward`` and the cost's ``loss``. Nothing here knows a layer's
equations, so a regenerated module trains unchanged, and the Numba backend is chosen
by module name alone.

Models (the paper's two networks, "Neural Networks Derivatives", W. Moraes, 2020, and
any other cell shipped as a spec in their place):

- ``mlp``: dense layers (``--cell``: dense_sigmoid by default) with the squared-error
  cost on one-hot targets, the paper's "Artificial Neural Network"
  (C = sum_i (a_i^L - y_i)^2), on the 8x8 digits.
- ``digits-rows`` (alias ``grn-digits``): a recurrent layer (``--cell``: the paper's
  gated recurrent neuron by default; any recurrent spec: gru, lstm, mingru, indrnn, ...)
  reading the digits row by row, with a dense sigmoid readout at the last step.
- ``adding`` (alias ``grn-adding``): a recurrent layer and a dense linear readout on the
  adding problem.

The cells are discovered from the built-in specs (:func:`symbolic.generate.builtin_specs`)
by their ``kind``: a new recurrent spec, once generated, trains with ``--cell NAME``.

Runs are resumable bit for bit: a checkpoint holds the parameters, the optimizer's
state, the shuffling generator's state, the current epoch's order and the history, and
is replaced atomically. A resumed run ends with exactly the parameters of an
uninterrupted one.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import json
import math
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import IO, Any

import numpy as np

from symbolic import __version__, write
from symbolic.train.data import Dataset, adding, digits_flat, digits_rows, one_hot
from symbolic.progress import Progress, format_duration

MODELS = ("mlp", "digits-rows", "adding")
# The models' first names, when the GRN was their only cell: still accepted everywhere
# (options, checkpoints), and read as the new name (with the GRN as the default cell).
MODEL_ALIASES = {"grn-digits": "digits-rows", "grn-adding": "adding"}
DEFAULT_MODEL = "mlp"
# The spec each model's hidden layers are made of unless --cell says otherwise, and the
# kind of spec --cell must name.
DEFAULT_CELLS = {"mlp": "dense_sigmoid", "digits-rows": "grn", "adding": "grn"}
CELL_KINDS = {"mlp": "feedforward", "digits-rows": "recurrent", "adding": "recurrent"}
BACKENDS = ("numpy", "numba")
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "cosine")
READOUTS = ("last", "every")
DTYPES = ("float32", "float64")
GATE_BIAS_MODES = ("auto", "none", "chrono")
CHECKPOINT = "checkpoint.npz"
PLOT = "training.png"
SUMMARY = "summary.json"
CHECKPOINT_FORMAT = 1
# MSE of the best constant prediction on the adding problem: Var(U1 + U2) = 2/12.
ADDING_BASELINE_MSE = 1 / 6
# The test MSE below which the adding problem counts as solved here (the target of the
# "Long memory" issue; drawn on the plot).
ADDING_SOLVED_MSE = 0.01
# Independent random streams derived from the seed: the layers' init, the gate biases,
# the shuffling. Changing how one is drawn leaves the others as they were.
_STREAM_LAYERS, _STREAM_GATES, _STREAM_SHUFFLE = 0, 1, 2
# Scoring runs the test set in chunks of at most this many samples, and of at most
# _EVAL_BUDGET values per cached sequence array (T x chunk x width): long test sequences
# (the adding problem at T = 1000) would otherwise cache gigabytes.
_EVAL_CHUNK = 1000
_EVAL_BUDGET = 4_000_000

# The defaults of each model (with its default cell), tuned so that a run with no
# options meets its target on the held-out test set. Measured (numpy backend, 2-core
# machine, seeds 0-4 / 0-2):
#   mlp          target >= 96%: 97.22-97.78% (97.50% at seed 0), ~0.5 s of training
#   digits-rows  target >= 95%: 95.56-96.39% (96.39% at seed 0), ~2 s;
#                two stacked GRN layers (--hidden 128,128) reach ~97.5% in ~6 s
#   adding       target MSE < 0.01 at T = 100: 0.00016-0.00082 (0.00048 at seed 0),
#                ~15 s; without the chrono gate bias it sits at the mean's 0.167 for ~4
#                epochs before it finds the markers.
#                At T = 1000 (--seq-len 1000; chrono init scales with T): 0.00053 at
#                seed 0 after the 10 epochs (2000 steps; below 0.01 from epoch 4 on):
#                2:37 with the numpy backend (~54 ms a step), ~2x that with numba.
# Other cells: CELL_DEFAULTS (their figures are measured there).
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "mlp": {
        "hidden": (64,),
        "optimizer": "adam",
        "lr": 0.01,
        "schedule": "cosine",
        "epochs": 40,
        "batch_size": 32,
        "clip": 0.0,
        "dtype": "float64",
        "readout": "last",
        "gate_bias": "auto",
    },
    "digits-rows": {
        "hidden": (128,),
        "optimizer": "adam",
        "lr": 0.02,
        "schedule": "cosine",
        "epochs": 40,
        "batch_size": 32,
        "clip": 1.0,
        "dtype": "float32",
        "readout": "last",
        "gate_bias": "auto",
    },
    "adding": {
        "hidden": (32,),
        "optimizer": "adam",
        "lr": 0.003,
        "schedule": "constant",
        "epochs": 10,
        "batch_size": 50,
        "clip": 1.0,
        "dtype": "float32",
        "readout": "last",
        "gate_bias": "chrono",
        "seq_len": 100,
        "n_train": 10000,
        "n_test": 2000,
    },
}
# What differs from MODEL_DEFAULTS for a model with another cell. Measured with
# `derivgen train --model digits-rows --cell NAME [--seed S]` (numpy backend, float32,
# 2-core machine; the lowest to highest of seeds 0-4, and seed 0's):
#   gru     target >= 95%: 98.33-99.17% (99.17% at seed 0), ~7 s; at the GRN's lr 0.02:
#           97.50-98.06%
#   lstm    target >= 95%: 97.78-99.44% (99.44% at seed 0), ~8 s; at lr 0.02:
#           95.83-98.89%; at lr 0.02 without the forget-gate bias 1: 24.4% at seed 0
#   mingru  no target: 94.72% at seed 0 (94.44% at seed 1), ~3 s
#   indrnn  no target: 93.33% at seed 0 (93.06% at seed 1), ~1 s; with the generated
#           init of u instead of IndRNN's: 89.17%
CELL_DEFAULTS: dict[tuple[str, str], dict[str, Any]] = {
    ("digits-rows", "gru"): {"lr": 0.01},
    ("digits-rows", "lstm"): {"lr": 0.01},
}
_COMMON_DEFAULTS: dict[str, Any] = {
    "backend": "numpy",
    "schedule": "constant",
    "momentum": 0.9,
    "seed": 0,
    "steps": 0,
    "seq_len": 0,
    "n_train": 0,
    "n_test": 0,
}
# What a checkpoint's run is: a resumed run must not change these.
_STRUCTURAL = (
    "model",
    "cell",
    "hidden",
    "seq_len",
    "n_train",
    "n_test",
    "readout",
    "gate_bias",
    "seed",
    "dtype",
    "batch_size",
    "optimizer",
)
# How a checkpoint's run is trained: a resumed run may change these (it then no longer
# matches an uninterrupted run, which is the point of changing them).
_TUNABLE = ("backend", "lr", "schedule", "momentum", "clip", "epochs", "steps")


class TrainError(ValueError):
    """A configuration or checkpoint problem, reported to the user as one message."""


def canonical_model(model: str) -> str:
    """The model's current name (``grn-digits`` -> ``digits-rows``); others unchanged."""
    return MODEL_ALIASES.get(model, model)


def default_out(model: str, cell: str | None = None) -> Path:
    """Where a run writes by default: ``runs/<model>``, or ``runs/<model>-<cell>`` for a
    cell other than the model's default (so that runs of different cells keep their own
    checkpoints)."""
    model = canonical_model(model)
    if cell is None or cell == DEFAULT_CELLS.get(model):
        return Path("runs") / model
    return Path("runs") / f"{model}-{cell}"


# --- the cells -----------------------------------------------------------------------


def spec_kinds() -> dict[str, str]:
    """The built-in specs by name, with their kind (``feedforward``, ``recurrent``, ``cost``).

    Read from the spec files' ``name`` and ``kind`` only (no parsing of the equations), so
    a spec added to ``symbolic/specs`` is a ``--cell`` as soon as it is generated. A spec
    file that cannot be read (being edited) is left out.
    """
    from symbolic.generate import builtin_specs

    kinds = {}
    for path in builtin_specs():
        try:
            with path.open("rb") as handle:
                spec = tomllib.load(handle)
        except (OSError, tomllib.TOMLDecodeError):
            continue
        name, kind = spec.get("name", path.stem), spec.get("kind")
        if isinstance(name, str) and isinstance(kind, str):
            kinds[name] = kind
    return kinds


def cells(kind: str) -> list[str]:
    """The names of the built-in specs of ``kind`` (``recurrent`` or ``feedforward``), sorted."""
    return sorted(name for name, k in spec_kinds().items() if k == kind)


def check_cell(model: str, cell: str) -> None:
    """Raise :class:`TrainError` unless ``cell`` is a built-in spec ``model`` can use.

    Args:
        model: A model name (canonical).
        cell: A spec name.
    """
    kind = CELL_KINDS[model]
    kinds = spec_kinds()
    allowed = ", ".join(sorted(name for name, k in kinds.items() if k == kind))
    if cell not in kinds:
        raise TrainError(
            f"cell: no built-in spec named {cell!r}; the {model} model takes a {kind} "
            f"spec: {allowed}"
        )
    if kinds[cell] != kind:
        raise TrainError(
            f"cell: {cell!r} is a {kinds[cell]} spec; the {model} model takes a {kind} "
            f"spec: {allowed}"
        )


@dataclass(frozen=True)
class Memory:
    """Which parameter of a built-in recurrent cell sets how long its state lasts.

    The usual inits below are keyed by cell *and* parameter name: the same name can mean
    opposite things (the GRU's ``bz`` opens the gate that keeps the state, the minGRU's
    the one that overwrites it).

    Attributes:
        param: The parameter (a vector: one value per neuron).
        form: How a step keeps the state: ``keep``: sigmoid(param) of it (the GRU's update
            gate z, the LSTM's forget gate); ``write``: 1 - sigmoid(param) (the GRN's
            update gate G, the minGRU's z); ``weight``: param times it (IndRNN's
            recurrent weight, in relu's linear range).
        standard: The init of ``param`` that is standard practice for the cell, used by
            ``gate_bias = auto``: a number, ``indrnn`` (see :func:`indrnn_weights`), or
            None for the generated init.
        tied: A parameter that chrono init sets to minus ``param`` (the LSTM's
            input-gate bias: b_i = -b_f, Tallec & Ollivier, 2018).
    """

    param: str
    form: str
    standard: float | str | None = None
    tied: str | None = None


MEMORY: dict[str, Memory] = {
    "grn": Memory("Bu", "write"),
    "gru": Memory("bz", "keep"),
    # Forget-gate bias 1: Gers et al. (2000); Jozefowicz et al. (2015).
    "lstm": Memory("bf", "keep", standard=1.0, tied="bi"),
    "mingru": Memory("bz", "write"),
    # u ~ U(0, 2^(1/T)), the top layer's U(2^(-1/T), 2^(1/T)): Li et al. (2018) and their
    # reference code; the generated U(-0.1, 0.1) forgets 90% of the state at every step.
    "indrnn": Memory("u", "weight", standard="indrnn"),
}


@dataclass
class Config:
    """What to train and how. ``None`` means the model's default (:data:`MODEL_DEFAULTS`,
    then :data:`CELL_DEFAULTS` for its cell).

    Attributes:
        model: One of :data:`MODELS` or :data:`MODEL_ALIASES` (default ``mlp``; when
            resuming, the checkpoint's).
        cell: The spec of the hidden layers: a recurrent spec for ``digits-rows`` and
            ``adding`` (default ``grn``), a feedforward one for ``mlp`` (default
            ``dense_sigmoid``); any built-in spec of that kind with generated modules.
        backend: ``numpy`` or ``numba``: which generated modules to import.
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
        gate_bias: Init of the recurrent cell's memory parameter (:data:`MEMORY`: GRN
            ``Bu``, GRU ``bz``, LSTM ``bf``, minGRU ``bz``, IndRNN ``u``): ``auto`` (the
            cell's standard init: LSTM forget bias 1, IndRNN's T-scaled recurrent
            weights; the generated init otherwise), ``none`` (the generated init),
            ``chrono`` (retention times spread up to the sequence length T, Tallec &
            Ollivier, 2018: a keep-gate bias log U(1, T-1), a write-gate bias minus
            that, the LSTM's input-gate bias minus its forget-gate bias; IndRNN: its
            T-scaled init) or a number (that value).
        seed: Seed of the initial parameters and of the shuffling.
        dtype: ``float32`` or ``float64``.
        out: Output folder (default :func:`default_out`).
        resume: Continue the checkpoint in ``out``.
        stop_after: Stop (with a checkpoint) after this many steps in this run, as if
            interrupted; ``resume`` continues.
        progress: Show the progress bar on stderr.
        plot: Save the loss and accuracy/MSE plot.
        blas_threads: BLAS threads while training; the matrices here are small, so one
            thread avoids synchronisation costs that exceed the work.
    """

    model: str | None = None
    cell: str | None = None
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
    gate_bias: str | None = None
    seed: int | None = None
    dtype: str | None = None
    out: Path | None = None
    resume: bool = False
    stop_after: int | None = None
    progress: bool = True
    plot: bool = True
    blas_threads: int | None = 1

    def resolved(self) -> Config:
        """A copy with every ``None`` training field set to the model's default."""
        model = canonical_model(self.model or DEFAULT_MODEL)
        if model not in MODELS:
            names = ", ".join((*MODELS, *MODEL_ALIASES))
            raise TrainError(f"model: expected one of {names}, got {model!r}")
        cell = self.cell or DEFAULT_CELLS[model]
        check_cell(model, cell)
        defaults = {
            **_COMMON_DEFAULTS,
            **MODEL_DEFAULTS[model],
            **CELL_DEFAULTS.get((model, cell), {}),
        }
        values = {
            name: defaults[name] if getattr(self, name) is None else getattr(self, name)
            for name in (*_STRUCTURAL, *_TUNABLE)
            if name not in ("model", "cell")
        }
        out = default_out(model, cell) if self.out is None else Path(self.out)
        config = dataclasses.replace(self, **values, model=model, cell=cell, out=out)
        config.hidden = tuple(int(h) for h in config.hidden)
        config.gate_bias = str(config.gate_bias)
        config.validate()
        return config

    def validate(self) -> None:
        """Raise :class:`TrainError` naming the first bad field."""
        choices = {
            "backend": BACKENDS,
            "optimizer": OPTIMIZERS,
            "schedule": SCHEDULES,
            "readout": READOUTS,
            "dtype": DTYPES,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise TrainError(
                    f"{name}: expected one of {', '.join(allowed)}, got {getattr(self, name)!r}"
                )
        positive = {"batch_size": self.batch_size, "lr": self.lr}
        if not self.steps:
            positive["epochs"] = self.epochs
        if self.model == "adding":
            positive.update(seq_len=self.seq_len, n_train=self.n_train, n_test=self.n_test)
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
        if self.model == "adding" and self.seq_len < 2:
            raise TrainError(f"seq_len: expected at least 2, got {self.seq_len}")
        if self.gate_bias not in GATE_BIAS_MODES:
            try:
                float(self.gate_bias)
            except ValueError:
                raise TrainError(
                    f"gate_bias: expected auto, none, chrono or a number, got {self.gate_bias!r}"
                ) from None
            if not math.isfinite(float(self.gate_bias)):
                raise TrainError(f"gate_bias: expected a finite number, got {self.gate_bias!r}")
        if self.gate_bias not in ("auto", "none") and self.cell not in MEMORY:
            what = (
                "the mlp model has no recurrent layer"
                if self.model == "mlp"
                else f"the {self.cell} cell has no known gate parameter (known: "
                f"{', '.join(MEMORY)})"
            )
            raise TrainError(f"gate_bias {self.gate_bias}: {what}; use auto or none")

    def run_fields(self) -> dict[str, Any]:
        """The fields a checkpoint records (JSON-ready)."""
        values = {name: getattr(self, name) for name in (*_STRUCTURAL, *_TUNABLE)}
        values["hidden"] = list(values["hidden"])
        return values


# --- the network -------------------------------------------------------------------


def load_module(spec: str, backend: str) -> ModuleType:
    """Import ``generated/<spec>_<backend>.py``.

    Raises:
        TrainError: The module does not exist (e.g. the Numba backend not generated yet).
    """
    name = f"generated.{spec}_{backend}"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name not in (name, "numba"):
            raise
        what = "numba is not installed" if exc.name == "numba" else f"no module {name}"
        raise TrainError(
            f"backend {backend}: cannot import {name} ({what}); "
            f"run `derivgen generate --backend {backend}` or use --backend numpy"
        ) from exc


@dataclass
class Layer:
    """One generated module in a stack, with its place and sizes.

    Attributes:
        key: Prefix of its parameters in the model's flat dict (``grn0``, ``dense1``).
        spec: The spec it was generated from (``grn``, ``dense_sigmoid``).
        module: The generated module.
        n_in: Input width.
        n_out: Output width.
    """

    key: str
    spec: str
    module: ModuleType
    n_in: int
    n_out: int

    @property
    def recurrent(self) -> bool:
        """Whether the layer runs over time (``KIND == "recurrent"``)."""
        return self.module.KIND == "recurrent"


class Network:
    """A stack of generated layers and a cost.

    Feedforward layers above a recurrent one run on every step at once (the steps are
    folded into the batch). With the ``last`` readout, only the last step of the top
    recurrent layer reaches the layers above it; in backward, the other steps of that
    layer get a zero gradient from above (their gradient still flows through time).

    Parameters live in one flat dict, ``"<layer key>.<parameter>"``, which the
    optimizer and the checkpoint treat uniformly.

    Args:
        layers: Bottom to top.
        cost: The generated cost module.
        readout: ``last`` or ``every``.
    """

    def __init__(self, layers: list[Layer], cost: ModuleType, readout: str = "last") -> None:
        self.layers = layers
        self.cost = cost
        self.readout = readout
        recurrent = [i for i, layer in enumerate(layers) if layer.recurrent]
        self.sequential = bool(recurrent)
        self._select_last = recurrent[-1] if recurrent and readout == "last" else None

    def describe(self) -> str:
        """``"64 -> dense_sigmoid 64 -> dense_sigmoid 10, squared_error"``."""
        parts = [str(self.layers[0].n_in)]
        parts += [f"{layer.spec} {layer.n_out}" for layer in self.layers]
        tail = f", readout at {'the last' if self.readout == 'last' else 'every'} step"
        return " -> ".join(parts) + f", {self.cost.NAME}" + (tail if self.sequential else "")

    def init_params(self, seed: int, dtype: np.dtype) -> dict[str, np.ndarray]:
        """Each layer's generated ``init_params``, seeded independently from ``seed``."""
        params = {}
        for index, layer in enumerate(self.layers):
            entropy = [seed, _STREAM_LAYERS, index]
            layer_seed = int(np.random.SeedSequence(entropy).generate_state(1)[0])
            for name, value in layer.module.init_params(
                layer.n_in, layer.n_out, seed=layer_seed, dtype=dtype
            ).items():
                params[f"{layer.key}.{name}"] = value
        return params

    def _params(self, params: dict[str, np.ndarray], layer: Layer) -> dict[str, np.ndarray]:
        return {name: params[f"{layer.key}.{name}"] for name in layer.module.PARAMS}

    def forward(self, params: dict[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, list]:
        """The output for ``x`` (``(B, n_in)``, or ``(T, B, n_in)`` for a sequence model)
        and the caches ``backward`` needs."""
        caches = []
        h = x
        for index, layer in enumerate(self.layers):
            p = self._params(params, layer)
            if layer.recurrent:
                h, cache = layer.module.forward(p, h)
            elif h.ndim == 3:
                steps, batch, width = h.shape
                a, cache = layer.module.forward(p, h.reshape(steps * batch, width))
                h = a.reshape(steps, batch, layer.n_out)
            else:
                h, cache = layer.module.forward(p, h)
            caches.append((cache, h.shape))
            if index == self._select_last:
                h = h[-1]
        return h, caches

    def backward(
        self, params: dict[str, np.ndarray], caches: list, dout: np.ndarray
    ) -> dict[str, np.ndarray]:
        """The gradients of the cost by every parameter, given its gradient by the output."""
        grads = {}
        d = dout
        for index in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[index]
            cache, shape = caches[index]
            p = self._params(params, layer)
            if index == self._select_last:
                full = np.zeros(shape, dtype=d.dtype)
                full[-1] = d
                d = full
            need_dx = index > 0  # the data needs no gradient
            if layer.recurrent:
                g, d, _ = layer.module.backward(p, cache, d, need_dx=need_dx)
            elif d.ndim == 3:
                steps, batch, width = d.shape
                g, dx = layer.module.backward(
                    p, cache, d.reshape(steps * batch, width), need_dx=need_dx
                )
                d = None if dx is None else dx.reshape(steps, batch, layer.n_in)
            else:
                g, d = layer.module.backward(p, cache, d, need_dx=need_dx)
            for name, value in g.items():
                grads[f"{layer.key}.{name}"] = value
        return grads

    def loss(self, out: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
        """The cost of ``out`` against ``target`` ``(B, n_out)`` and its gradient.

        With the ``every`` readout the target holds at every step; the cost is averaged
        over the steps so that its scale (and a good learning rate) does not depend on T.
        """
        if out.ndim == 3:
            steps = out.shape[0]
            cost, dout = self.cost.loss(out, np.broadcast_to(target, out.shape))
            return cost / steps, dout / out.dtype.type(steps)
        return self.cost.loss(out, target)

    def predict(self, params: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
        """The output for ``x`` (the last step's for the ``every`` readout), in chunks."""
        axis = 1 if self.sequential else 0
        if self.sequential:
            # Bound what one chunk caches: T x chunk x (the widest layer) per array.
            width = max(layer.n_out for layer in self.layers)
            size = max(1, min(_EVAL_CHUNK, _EVAL_BUDGET // (x.shape[0] * width)))
        else:
            size = _EVAL_CHUNK
        outs = []
        for start in range(0, x.shape[axis], size):
            chunk = x[:, start : start + size] if axis else x[start : start + size]
            out, _ = self.forward(params, chunk)
            outs.append(out[-1] if out.ndim == 3 else out)
        return np.concatenate(outs, axis=0)


def build_network(config: Config, data: Dataset) -> Network:
    """The network of ``config.model`` for ``data``'s input and output widths.

    Raises:
        TrainError: A module is missing, or its ``KIND`` is not what the model needs
            (a module generated from an older version of its spec).
    """
    # Classes: sigmoid outputs against one-hot targets, as in the paper's MLP. The adding
    # problem's target (0..2) is outside a sigmoid's range: a linear readout.
    readout_spec = "dense_linear" if config.model == "adding" else "dense_sigmoid"
    sizes = [data.n_in, *config.hidden, data.n_out]
    specs = [config.cell] * len(config.hidden) + [readout_spec]
    kinds = [CELL_KINDS[config.model]] * len(config.hidden) + ["feedforward"]
    layers = []
    for index, (spec, kind) in enumerate(zip(specs, kinds, strict=True)):
        module = load_module(spec, config.backend)
        if module.KIND != kind:
            raise TrainError(
                f"generated/{spec}_{config.backend}.py is of kind {module.KIND}, its spec of "
                f"kind {kind}: run `derivgen generate`"
            )
        key = f"{'dense' if spec.startswith('dense') else spec}{index}"
        layers.append(Layer(key, spec, module, sizes[index], sizes[index + 1]))
    return Network(layers, load_module("squared_error", config.backend), config.readout)


def init_params(network: Network, config: Config) -> dict[str, np.ndarray]:
    """The generated init, and the memory init ``config.gate_bias`` asks for.

    A recurrent cell's state lasts as long as its memory parameter (:data:`MEMORY`) lets
    it: the GRN keeps (1 - G) of its state per step (a = G*ac + (1 - G)*h), so its gate
    bias Bu sets a retention time of about 1/sigmoid(Bu) steps. The generated biases
    ~ U(-0.1, 0.1) forget about half of the state at every step; the adding problem needs
    memory over ~T steps from the start ("chrono" init, Tallec & Ollivier, 2018:
    retention times spread uniformly up to the sequence length).

    Every recurrent layer of a cell in :data:`MEMORY` gets the init; the draws come from
    their own stream of the seed, layer by layer, bottom to top.
    """
    params = network.init_params(config.seed, np.dtype(config.dtype))
    memory = MEMORY.get(config.cell)
    if config.gate_bias == "none" or memory is None:
        return params
    if config.gate_bias == "auto" and memory.standard is None:
        return params
    steps = data_steps(config)
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, _STREAM_GATES]))
    recurrent = [layer for layer in network.layers if layer.recurrent]
    for layer in recurrent:
        missing = {memory.param, memory.tied} - {None, *layer.module.PARAMS}
        if missing:
            raise TrainError(
                f"gate_bias {config.gate_bias}: the {config.cell} spec has no parameter "
                f"{', '.join(sorted(missing))} any more (train.MEMORY names it); "
                "use --gate-bias none"
            )
        name = f"{layer.key}.{memory.param}"
        shape, dtype = params[name].shape, params[name].dtype
        top = layer is recurrent[-1]
        tied = None
        if memory.form == "weight" and config.gate_bias in ("auto", "chrono"):
            value = indrnn_weights(rng, shape, steps, top)
        elif config.gate_bias == "auto":
            value = np.full(shape, float(memory.standard))
        elif config.gate_bias == "chrono":
            horizon = max(steps, 3)
            log_times = np.log(rng.uniform(1.0, horizon - 1.0, shape))
            value = log_times if memory.form == "keep" else -log_times
            if memory.tied:
                tied = -value
        else:
            value = np.full(shape, float(config.gate_bias))
        params[name] = value.astype(dtype)
        if tied is not None:
            params[f"{layer.key}.{memory.tied}"] = tied.astype(dtype)
    return params


def indrnn_weights(
    rng: np.random.Generator, shape: tuple[int, ...], steps: int, top: bool
) -> np.ndarray:
    """IndRNN's recurrent weights for sequences of ``steps`` steps (Li et al., 2018).

    u ~ U(0, 2^(1/T)); for the top recurrent layer, which must carry the sequence to the
    readout, u ~ U(2^(-1/T), 2^(1/T)): a neuron's state then neither vanishes nor grows
    by more than a factor 2 over the whole sequence (in relu's linear range).

    Args:
        rng: The generator to draw from.
        shape: The weights' shape.
        steps: The sequence length T.
        top: Whether the layer is the top recurrent one.

    Returns:
        The weights, float64.
    """
    bound = 2.0 ** (1.0 / steps)
    return rng.uniform(1.0 / bound if top else 0.0, bound, shape)


def data_steps(config: Config) -> int:
    """Time steps of a sequence model's input."""
    return config.seq_len if config.model == "adding" else 8


def load_data(config: Config) -> Dataset:
    """The data set of ``config.model``, in ``config.dtype``."""
    dtype = np.dtype(config.dtype)
    if config.model == "mlp":
        return digits_flat(dtype=dtype)
    if config.model == "digits-rows":
        return digits_rows(dtype=dtype)
    return adding(config.seq_len, n_train=config.n_train, n_test=config.n_test, seed=0, dtype=dtype)


# --- optimizers ----------------------------------------------------------------------


class Optimizer:
    """Updates parameters in place from their gradients; its state is a dict of arrays.

    Args:
        lr: Learning rate.
    """

    name = ""
    slots: tuple[str, ...] = ()

    def __init__(self, lr: float) -> None:
        self.lr = lr
        self.t = 0
        self.state: dict[str, dict[str, np.ndarray]] = {slot: {} for slot in self.slots}

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        """Apply one update."""
        raise NotImplementedError

    def _slot(self, slot: str, key: str, like: np.ndarray) -> np.ndarray:
        store = self.state[slot]
        if key not in store:
            store[key] = np.zeros_like(like)
        return store[key]


class SGD(Optimizer):
    """SGD with (heavy-ball) momentum: v = mu v + g; p -= lr v.

    Args:
        lr: Learning rate.
        momentum: mu; 0 is plain SGD.
    """

    name = "sgd"
    slots = ("velocity",)

    def __init__(self, lr: float, momentum: float = 0.9) -> None:
        super().__init__(lr)
        self.momentum = momentum

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        self.t += 1
        for key, grad in grads.items():
            velocity = self._slot("velocity", key, grad)
            velocity *= self.momentum
            velocity += grad
            params[key] -= self.lr * velocity


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) with bias correction.

    Args:
        lr: Learning rate.
        betas: Decay rates of the first and second moment estimates.
        eps: Added to the denominator.
    """

    name = "adam"
    slots = ("m", "v")

    def __init__(
        self, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
    ) -> None:
        super().__init__(lr)
        self.betas = betas
        self.eps = eps

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        self.t += 1
        beta1, beta2 = self.betas
        # Bias corrections folded into the step size, as in the paper's Algorithm 1.
        step_size = self.lr * math.sqrt(1 - beta2**self.t) / (1 - beta1**self.t)
        for key, grad in grads.items():
            m = self._slot("m", key, grad)
            v = self._slot("v", key, grad)
            m *= beta1
            m += (1 - beta1) * grad
            v *= beta2
            v += (1 - beta2) * grad * grad
            params[key] -= step_size * m / (np.sqrt(v) + self.eps)


def make_optimizer(config: Config) -> Optimizer:
    """The optimizer ``config`` names, with a fresh state."""
    if config.optimizer == "sgd":
        return SGD(config.lr, config.momentum)
    return Adam(config.lr)


def learning_rate(config: Config, step: int, total: int) -> float:
    """The learning rate of step ``step`` (0-based) of ``total``."""
    if config.schedule == "cosine":
        return config.lr * 0.5 * (1.0 + math.cos(math.pi * step / total))
    return config.lr


def global_norm(grads: dict[str, np.ndarray]) -> float:
    """The L2 norm of all gradients together (in float64: float32 squares overflow)."""
    total = 0.0
    for grad in grads.values():
        flat = grad.ravel().astype(np.float64, copy=False)
        total += float(np.dot(flat, flat))
    return math.sqrt(total)


# --- checkpoints ---------------------------------------------------------------------


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


def save_checkpoint(path: Path, config: Config, state: TrainState, elapsed: float = 0.0) -> None:
    """Write ``state`` (and the run's configuration) to ``path`` atomically.

    Args:
        path: The checkpoint file.
        config: The run's configuration.
        state: What to save.
        elapsed: Seconds this run has trained so far (added to ``state.wall_time``).
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

    def count(name: str) -> int:
        value = meta[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} {value!r} is not a count")
        return value

    step, optimizer_t = count("step"), count("optimizer_t")
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
    order = files["order"]
    if order.ndim != 1 or order.dtype.kind not in "iu" or order.size == 0:
        raise ValueError("order: expected a 1-D array of sample indices")
    if not np.array_equal(np.sort(order), np.arange(order.size)):
        raise ValueError("order: not a permutation of the training samples")
    step_loss, evals = files["step_loss"], files["evals"]
    if step_loss.ndim != 1 or evals.ndim != 2 or evals.shape[1:] != (5,):
        raise ValueError("history: step_loss and evals have the wrong shapes")
    if step_loss.size != step:
        raise ValueError(f"history: {step_loss.size} step costs for step {step}")
    history = History(
        step_loss=step_loss.tolist(),
        evals=[tuple(row) for row in evals.tolist()],
    )
    return Checkpoint(
        config=meta["config"],
        step=step,
        params=params,
        optimizer_state=opt_state,
        optimizer_t=optimizer_t,
        rng_state=meta["rng"],
        order=order,
        history=history,
        wall_time=float(wall),
    )


def merge_resume(config: Config, saved: dict[str, Any]) -> tuple[Config, list[str]]:
    """The configuration of a resumed run: the checkpoint's, with allowed changes.

    Returns:
        The resolved configuration and a note for each changed training setting.

    Raises:
        TrainError: ``config`` sets a structural field to a different value.
    """
    # Checkpoints written before the models were renamed and had cells: the GRN's.
    model = canonical_model(saved["model"])
    saved = {**saved, "model": model, "cell": saved.get("cell") or DEFAULT_CELLS.get(model)}
    if config.model is not None and canonical_model(config.model) != model:
        raise TrainError(f"--model {config.model}: the checkpoint is of model {model}")
    config = dataclasses.replace(config, model=model)
    if config.epochs is not None and config.steps is None:
        # Epochs asked for: they replace a step count the checkpoint's run may have had.
        config = dataclasses.replace(config, steps=0)
    values, notes = {}, []
    for name in (*_STRUCTURAL, *_TUNABLE):
        given = getattr(config, name)
        before = tuple(saved[name]) if name == "hidden" else saved[name]
        if given is not None and name == "hidden":
            given = tuple(given)
        if given is None or given == before:
            values[name] = before
        elif name in _STRUCTURAL:
            raise TrainError(
                f"{name} = {given!r} differs from the checkpoint's {before!r}: "
                "drop the option to resume, or start a new run in another --out"
            )
        else:
            values[name] = given
            notes.append(f"{name} changed from {before!r} to {given!r}")
    merged = dataclasses.replace(config, **values).resolved()
    return merged, notes


# --- training ------------------------------------------------------------------------


@dataclass
class Result:
    """The outcome of :func:`train`.

    Attributes:
        config: The configuration the run used (resolved).
        status: ``done``, ``stopped`` (``stop_after`` reached) or ``diverged``.
        message: One sentence on how the run ended.
        step: Optimizer steps done.
        epoch: Epochs done (fractional when stopped mid-epoch).
        metric: ``accuracy`` or ``mse``.
        test_metric: Test accuracy in [0, 1], or test MSE.
        test_loss: The cost on the test set.
        train_loss: Mean training cost over the last epoch (or since the last evaluation).
        wall_time: Seconds spent training in this run.
        total_wall_time: Seconds spent training over every run of the checkpoint.
        checkpoint: The checkpoint file (the last good one when diverged), if any.
        plot: The plot file, if saved.
        params: The final (or last good) parameters.
        history: Costs and evaluations.
        network: The network, for predictions.
    """

    config: Config
    status: str
    message: str
    step: int
    epoch: float
    metric: str
    test_metric: float
    test_loss: float
    train_loss: float
    wall_time: float
    total_wall_time: float
    checkpoint: Path | None
    plot: Path | None
    params: dict[str, np.ndarray]
    history: History
    network: Network

    def summary(self) -> str:
        """The lines ``derivgen train`` prints at the end."""
        c = self.config
        length = f"{c.steps} steps" if c.steps else f"{c.epochs} epochs"
        schedule = f" ({c.schedule})" if c.schedule != "constant" else ""
        where = f"step {self.step}, epoch {self.epoch:.4g}"
        if self.status == "diverged":
            state = f"DIVERGED: {self.message}\n  figures of the last good parameters ({where}):"
        else:
            state = f"{self.status} at {where}"
        train = f"   train loss {self.train_loss:.4g}" if math.isfinite(self.train_loss) else ""
        lines = [
            f"{c.model} ({c.backend}, {c.dtype}): {self.network.describe()}",
            f"  {c.optimizer} lr {c.lr:g}{schedule}, batch {c.batch_size}, {length}, clip "
            f"{c.clip:g}, seed {c.seed}",
            f"  {state}",
            f"  test {format_metric(self.metric, self.test_metric)}   "
            f"test loss {self.test_loss:.4g}{train}",
            f"  wall time {format_duration(self.wall_time)} (this run), "
            f"{format_duration(self.total_wall_time)} in all",
        ]
        if self.metric == "mse":
            lines.append(f"  (predicting the mean scores MSE {ADDING_BASELINE_MSE:.3f})")
        if self.plot:
            lines.append(f"  plot        {self.plot}")
        if self.checkpoint:
            lines.append(f"  checkpoint  {self.checkpoint}")
        if self.status == "stopped":
            lines.append(f"  {self.message}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """The figures, as written to ``summary.json``, with the test curve: one row per
        evaluation (``step``, ``epoch``, ``train_loss``, ``test_loss`` and
        ``test_accuracy`` or ``test_mse``)."""
        curve = [
            {
                "step": int(step),
                "epoch": float(epoch),
                "train_loss": float(train_loss),
                "test_loss": float(test_loss),
                f"test_{self.metric}": float(test_metric),
            }
            for step, epoch, train_loss, test_loss, test_metric in self.history.evals
        ]
        return {
            "model": self.config.model,
            "cell": self.config.cell,
            "config": self.config.run_fields(),
            "status": self.status,
            "message": self.message,
            "step": self.step,
            "epoch": self.epoch,
            "metric": self.metric,
            "test_metric": self.test_metric,
            "test_loss": self.test_loss,
            "train_loss": self.train_loss,
            "wall_time": self.wall_time,
            "total_wall_time": self.total_wall_time,
            "checkpoint": str(self.checkpoint) if self.checkpoint else None,
            "plot": str(self.plot) if self.plot else None,
            # One row per evaluation (every epoch's end, and the run's last step).
            "curve": curve,
        }


def format_metric(metric: str, value: float) -> str:
    """``accuracy 97.22%`` or ``MSE 0.00123``."""
    if metric == "accuracy":
        return f"accuracy {100 * value:.2f}%"
    return f"MSE {value:.4g}"


def _targets(data: Dataset, labels: np.ndarray, dtype: np.dtype) -> np.ndarray:
    return one_hot(labels, data.n_classes, dtype) if data.n_classes else labels


def evaluate(network: Network, params: dict[str, np.ndarray], data: Dataset) -> tuple[float, float]:
    """The test cost and the test metric (accuracy in [0, 1], or MSE)."""
    out = network.predict(params, data.x_test)
    target = _targets(data, data.y_test, out.dtype)
    cost, _ = network.cost.loss(out, target)
    if data.n_classes:
        return cost, float(np.mean(np.argmax(out, axis=1) == data.y_test))
    return cost, float(np.mean((out.astype(np.float64) - target) ** 2))


def train(config: Config, *, stream: IO[str] | None = None) -> Result:
    """Train (or resume) a model as ``config`` says.

    Args:
        config: What to train; ``None`` fields take the model's defaults.
        stream: Where the progress bar and notes go (default stderr).

    Returns:
        A :class:`Result`; ``status`` says whether the run finished, stopped on
        ``stop_after`` or diverged (non-finite loss or gradient).

    Raises:
        TrainError: A bad configuration, or a checkpoint that does not fit it.
    """
    stream = sys.stderr if stream is None else stream
    if config.resume:
        model = config.model or DEFAULT_MODEL
        out = default_out(model, config.cell) if config.out is None else Path(config.out)
        saved = load_checkpoint(out / CHECKPOINT)
        config, notes = merge_resume(dataclasses.replace(config, out=out), saved.config)
        for note in notes:
            print(f"note: {note}: the run no longer matches an uninterrupted one", file=stream)
    else:
        config, saved = config.resolved(), None
    try:  # before any work: an unwritable --out fails now, not at the first checkpoint
        write.check_folder(config.out)
    except write.WriteError as exc:
        raise TrainError(str(exc)) from None
    data = load_data(config)
    network = build_network(config, data)
    if saved is not None:
        expected = network.init_params(0, np.dtype(config.dtype))
        optimizer = make_optimizer(config)
        try:
            _check_params(saved.params, expected)
            _check_optimizer(saved, optimizer, expected)
            if saved.order.size != data.n_train:
                raise TrainError(
                    f"checkpoint: an order of {saved.order.size} samples for {data.n_train}"
                )
        except TrainError as exc:
            raise TrainError(f"{config.out / CHECKPOINT}: {exc}") from None
        optimizer.state.update(saved.optimizer_state)
        optimizer.t = saved.optimizer_t
        rng = np.random.default_rng()
        rng.bit_generator.state = saved.rng_state
        state = TrainState(
            saved.params, optimizer, rng, saved.order, saved.step, saved.history, saved.wall_time
        )
        print(f"resuming {config.out / CHECKPOINT} at step {saved.step}", file=stream)
    else:
        # The shuffling has its own stream, independent of the layers' init streams.
        rng = np.random.default_rng(np.random.SeedSequence([config.seed, _STREAM_SHUFFLE]))
        state = TrainState(
            init_params(network, config), make_optimizer(config), rng, np.arange(data.n_train)
        )
    with contextlib.ExitStack() as stack:
        # Overflow is detected and reported as divergence: numpy's warnings would only
        # repeat it, from inside the generated modules.
        stack.enter_context(np.errstate(over="ignore", invalid="ignore"))
        if config.blas_threads:
            from threadpoolctl import threadpool_limits

            stack.enter_context(threadpool_limits(limits=config.blas_threads, user_api="blas"))
        return _run(config, data, network, state, saved is not None, stream)


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


class _Diverged(Exception):
    """Raised inside the loop when a cost, a gradient or a parameter is not finite."""


def train_step(
    network: Network,
    params: dict[str, np.ndarray],
    optimizer: Optimizer,
    x: np.ndarray,
    target: np.ndarray,
    lr: float,
    clip: float = 0.0,
) -> float:
    """One minibatch step: forward, cost, backward, clipping, update (in place).

    Returns:
        The minibatch's cost (before the update).

    Raises:
        _Diverged: The cost or the gradient is not finite; ``params`` are unchanged.
    """
    out, caches = network.forward(params, x)
    cost, dout = network.loss(out, target)
    if not math.isfinite(cost):
        raise _Diverged(f"the loss became {cost} at step {optimizer.t + 1}")
    grads = network.backward(params, caches, dout)
    norm = global_norm(grads)
    if not math.isfinite(norm):
        raise _Diverged(f"the gradient norm became {norm} at step {optimizer.t + 1}")
    if clip and norm > clip:
        # One scale for all gradients keeps the update's direction (global-norm clipping).
        scale = out.dtype.type(clip / norm)
        # Not in place: a backend may hand out arrays it still holds.
        grads = {key: grad * scale for key, grad in grads.items()}
    optimizer.lr = lr
    optimizer.step(params, grads)
    return cost


def _run(
    config: Config,
    data: Dataset,
    network: Network,
    state: TrainState,
    resumed: bool,
    stream: IO[str],
) -> Result:
    """The training loop of :func:`train`: steps, evaluations at epoch ends, checkpoints."""
    dtype = np.dtype(config.dtype)
    per_epoch = -(-data.n_train // config.batch_size)
    total = config.steps or config.epochs * per_epoch
    stop_at = total if config.stop_after is None else min(total, state.step + config.stop_after)
    checkpoint = config.out / CHECKPOINT
    saved_step = state.step if resumed else None
    targets = _targets(data, data.y_train, dtype)
    metric = "accuracy" if data.n_classes else "mse"
    history = state.history
    status, message = "done", "finished"
    start = time.perf_counter()
    bar = Progress(total, config.model, stream=stream, enabled=config.progress, initial=state.step)

    def shown(loss: float) -> dict[str, str]:
        fields = {
            "epoch": f"{state.step / per_epoch:.1f}/{total / per_epoch:.4g}",
            "loss": f"{loss:.4g}",
        }
        if history.evals:
            fields["test"] = format_metric(metric, history.evals[-1][4])
        return fields

    try:
        while state.step < stop_at:
            epoch, position = divmod(state.step, per_epoch)
            if position == 0:
                state.order = state.rng.permutation(data.n_train)
            # The running loss of the epoch, including the steps before a resume.
            running = float(np.sum(history.step_loss[epoch * per_epoch :]))
            for index in range(position, min(per_epoch, position + stop_at - state.step)):
                rows = state.order[index * config.batch_size : (index + 1) * config.batch_size]
                x = data.x_train[:, rows] if data.sequential else data.x_train[rows]
                lr = learning_rate(config, state.step, total)
                cost = train_step(
                    network, state.params, state.optimizer, x, targets[rows], lr, config.clip
                )
                state.step += 1
                history.step_loss.append(cost)
                running += cost
                bar.update(1, **shown(running / (index + 1)))
            if not all(np.all(np.isfinite(p)) for p in state.params.values()):
                raise _Diverged(f"a parameter became non-finite by step {state.step}")
            if state.step % per_epoch == 0 or state.step >= total:
                last_eval = int(history.evals[-1][0]) if history.evals else 0
                test_loss, test_metric = evaluate(network, state.params, data)
                if not math.isfinite(test_loss):
                    raise _Diverged(f"the test loss became {test_loss} by step {state.step}")
                train_loss = float(np.mean(history.step_loss[last_eval:]))
                history.evals.append(
                    (state.step, state.step / per_epoch, train_loss, test_loss, test_metric)
                )
                bar.update(0, **shown(running / (index + 1)))
            if state.step % per_epoch == 0 or state.step >= stop_at:
                save_checkpoint(checkpoint, config, state, time.perf_counter() - start)
                saved_step = state.step
    except _Diverged as exc:
        status = "diverged"
        if saved_step is not None:
            where = (
                f"the last good checkpoint is {checkpoint} (step {saved_step}); continue "
                "from it with --resume and a smaller --lr, or a --clip"
            )
        else:
            where = "no checkpoint was written; rerun with a smaller --lr, or a --clip"
        message = f"{exc}; stopped without saving: {where}"
    except KeyboardInterrupt:
        bar.close()
        last = f"step {saved_step}" if saved_step is not None else "none yet"
        print(
            f"\ninterrupted at step {state.step}; last checkpoint: {checkpoint} ({last}); "
            "continue with --resume",
            file=stream,
        )
        raise
    finally:
        bar.close()
    wall = time.perf_counter() - start
    params, step = state.params, state.step
    if status == "diverged":
        # Report the last good parameters (those on disk), not the ones that blew up.
        if saved_step is not None:
            params, step = load_checkpoint(checkpoint).params, saved_step
        else:
            params, step = init_params(network, config), 0
    elif state.step < total:
        status = "stopped"
        message = f"stopped after step {state.step} of {total}: continue with --resume"
    if status != "diverged" and history.evals and history.evals[-1][0] == step:
        _, _, train_loss, test_loss, test_metric = history.evals[-1]
    else:
        test_loss, test_metric = evaluate(network, params, data)
        last_eval = int(history.evals[-1][0]) if history.evals else 0
        recent = history.step_loss[last_eval:step]
        train_loss = float(np.mean(recent)) if recent else float("nan")
    plot = None
    if config.plot and history.step_loss:
        plot = config.out / PLOT
        save_plot(plot, config, history, metric, per_epoch)
    result = Result(
        config=config,
        status=status,
        message=message,
        step=step,
        epoch=step / per_epoch,
        metric=metric,
        test_metric=test_metric,
        test_loss=test_loss,
        train_loss=train_loss,
        wall_time=wall,
        total_wall_time=state.wall_time + wall,
        checkpoint=checkpoint if saved_step is not None else None,
        plot=plot,
        params=params,
        history=history,
        network=network,
    )
    text = json.dumps(result.to_json(), indent=2) + "\n"
    write.atomic_write(config.out / SUMMARY, text)
    return result


# --- the plot ------------------------------------------------------------------------


def save_plot(path: Path, config: Config, history: History, metric: str, per_epoch: int) -> None:
    """The training cost per step and the test cost and metric per epoch, as a PNG.

    Uses matplotlib's object API with the Agg canvas, so importing this module never
    switches the backend of a user's pyplot session.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2)
    steps = np.arange(1, len(history.step_loss) + 1) / per_epoch
    left.plot(steps, history.step_loss, color="tab:blue", alpha=0.3, lw=0.8, label="train (step)")
    evals = np.asarray(history.evals, dtype=np.float64).reshape(-1, 5)
    if len(evals):
        left.plot(evals[:, 1], evals[:, 2], "o-", color="tab:blue", ms=3, label="train (epoch)")
        left.plot(evals[:, 1], evals[:, 3], "s-", color="tab:orange", ms=3, label="test")
    left.set_yscale("log")
    left.set_xlabel("epoch")
    left.set_ylabel(f"cost ({config.dtype}, {config.backend})")
    what = f"{config.model}, {config.cell} {','.join(map(str, config.hidden))}"
    if config.model == "adding":
        what += f", T = {config.seq_len}"
    left.set_title(f"{what}: squared-error cost")
    left.legend()
    if len(evals):
        if metric == "accuracy":
            right.plot(evals[:, 1], 100 * evals[:, 4], "o-", color="tab:green", ms=3)
            right.set_ylabel("test accuracy (%)")
            right.set_title(f"test accuracy: {100 * evals[-1, 4]:.2f}%")
        else:
            right.plot(evals[:, 1], evals[:, 4], "o-", color="tab:green", ms=3, label="test")
            right.axhline(ADDING_BASELINE_MSE, color="gray", ls="--", label="predict the mean")
            right.axhline(ADDING_SOLVED_MSE, color="tab:red", ls=":", label="solved")
            right.set_yscale("log")
            right.set_ylabel("test MSE")
            right.set_title(f"test MSE: {evals[-1, 4]:.4g}")
            right.legend()
    right.set_xlabel("epoch")
    right.grid(alpha=0.3)
    left.grid(alpha=0.3)
    write.atomic_write(path, lambda handle: figure.savefig(handle, format="png", dpi=100))


# --- the command line ----------------------------------------------------------------


def _hidden(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 64 or 64,32, got {text!r}") from None
    if any(size <= 0 for size in sizes):
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
    return sizes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``derivgen train`` (unset options take the model's defaults)."""

    def describe(values: dict[str, Any]) -> str:
        text = (
            f"hidden {','.join(map(str, values['hidden']))}, {values['optimizer']} lr "
            f"{values['lr']:g} {values['schedule']}, {values['epochs']} epochs, batch "
            f"{values['batch_size']}, clip {values['clip']:g}, {values['dtype']}"
        )
        if values["gate_bias"] not in ("none", "auto"):
            text += f", gate-bias {values['gate_bias']}"
        if "seq_len" in values:
            text += f",\n{'':16}seq-len {values['seq_len']}, n-train {values['n_train']}, "
            text += f"n-test {values['n_test']}"
        return text

    def changes(values: dict[str, Any]) -> str:
        return ", ".join(f"{name.replace('_', '-')} {value}" for name, value in values.items())

    rows = [
        f"  {model:<14}{describe(values)}\n{'':16}cell {DEFAULT_CELLS[model]} (--cell: "
        f"{', '.join(cells(CELL_KINDS[model]))})"
        for model, values in MODEL_DEFAULTS.items()
    ]
    rows += [
        f"  {model} --cell {cell}: {changes(values)}"
        for (model, cell), values in CELL_DEFAULTS.items()
    ]
    aliases = ", ".join(f"{old} = {new}" for old, new in MODEL_ALIASES.items())
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = (
        "Train a model built from generated modules: checkpoints, a plot and a summary "
        "go to --out.\n\nDefaults (any option overrides them):\n"
        + "\n".join(rows)
        + f"\n\nOld model names, still accepted: {aliases} (with the GRN cell by default)."
    )
    parser.add_argument(
        "--model",
        choices=(*MODELS, *MODEL_ALIASES),
        help="what to train (mlp; with --resume: the checkpoint's)",
    )
    parser.add_argument(
        "--cell",
        metavar="SPEC",
        help="the spec of the hidden layers: recurrent for digits-rows and adding (grn), "
        "feedforward for mlp (dense_sigmoid)",
    )
    parser.add_argument("--backend", choices=BACKENDS, help="generated modules to use (numpy)")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, help="sgd (with momentum) or adam")
    parser.add_argument("--lr", type=float, help="learning rate")
    parser.add_argument(
        "--schedule", choices=SCHEDULES, help="learning rate: constant, or cosine decay to 0"
    )
    parser.add_argument("--momentum", type=float, help="SGD momentum (0.9)")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=int, help="passes over the training set")
    length.add_argument("--steps", type=int, help="optimizer steps in all, instead of epochs")
    parser.add_argument("--batch-size", type=int, help="samples per step")
    parser.add_argument("--hidden", type=_hidden, help="hidden sizes, e.g. 64 or 64,32")
    parser.add_argument("--seq-len", type=int, help="adding problem: sequence length (100)")
    parser.add_argument("--n-train", type=int, help="adding problem: training sequences")
    parser.add_argument("--n-test", type=int, help="adding problem: test sequences")
    parser.add_argument(
        "--readout", choices=READOUTS, help="recurrent models: read out at the last or every step"
    )
    parser.add_argument("--clip", type=float, help="clip the gradient's global norm (0: off)")
    parser.add_argument(
        "--gate-bias",
        help="init of the recurrent cell's memory parameter (GRN Bu, GRU bz, LSTM bf, "
        "minGRU bz, IndRNN u): auto (the cell's usual init), none (the generated init), "
        "chrono (scaled to the sequence length) or a number",
    )
    parser.add_argument("--seed", type=int, help="seed of the init and the shuffling (0)")
    parser.add_argument("--dtype", choices=DTYPES, help="float32 or float64")
    parser.add_argument(
        "--out",
        type=write.path_argument,
        help="output folder (runs/<model>, or runs/<model>-<cell>)",
    )
    parser.add_argument("--resume", action="store_true", help="continue the checkpoint in --out")
    parser.add_argument(
        "--stop-after",
        type=int,
        help="stop after this many steps (checkpointed; --resume continues)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--no-plot", action="store_true", help="do not save the plot")


def config_from_args(args: argparse.Namespace) -> Config:
    """The :class:`Config` that parsed ``derivgen train`` options describe."""
    return Config(
        model=args.model,
        cell=args.cell,
        backend=args.backend,
        optimizer=args.optimizer,
        lr=args.lr,
        schedule=args.schedule,
        momentum=args.momentum,
        epochs=args.epochs,
        steps=args.steps,
        batch_size=args.batch_size,
        hidden=args.hidden,
        seq_len=args.seq_len,
        n_train=args.n_train,
        n_test=args.n_test,
        readout=args.readout,
        clip=args.clip,
        gate_bias=args.gate_bias,
        seed=args.seed,
        dtype=args.dtype,
        out=args.out,
        resume=args.resume,
        stop_after=args.stop_after,
        progress=not args.no_progress,
        plot=not args.no_plot,
    )


def main(args: argparse.Namespace) -> int:
    """``derivgen train``: 0 when the run finished or stopped as asked, 1 when it
    diverged, 2 on a bad configuration."""
    try:
        result = train(config_from_args(args))
    except TrainError as exc:
        print(f"derivgen train: error: {exc}", file=sys.stderr)
        return 2
    print(result.summary())
    return 1 if result.status == "diverged" else 0


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="python -m symbolic.train")
    add_arguments(_parser)
    sys.exit(main(_parser.parse_args()))
