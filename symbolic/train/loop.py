"""The training loop: :func:`train` sets a run up (new, or resumed from its checkpoint),
steps through the epochs with its engine (NumPy, or torch: :mod:`symbolic.train.engine`),
scores the test set at each epoch's end, checkpoints, stops cleanly on divergence or
interruption, and reports a :class:`~symbolic.train.result.Result`. A run of several
processes is each process running this loop on its shard (process 0 writes the files);
:func:`train` starts them for ``--nproc`` (:mod:`symbolic.train.launch`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import sys
import time
from pathlib import Path
from typing import IO, Any

import numpy as np

from symbolic import write
from symbolic.progress import Progress
from symbolic.train import distributed
from symbolic.train.checkpoint import (
    CHECKPOINT,
    Checkpoint,
    TrainState,
    check_resumable,
    check_specs,
    load_checkpoint,
    save_checkpoint,
)
from symbolic.train.config import STREAM_SHUFFLE, TORCH, Config, default_out, merge_resume
from symbolic.train.data import Dataset, one_hot
from symbolic.train.engine import NumpyEngine
from symbolic.train.errors import Diverged, TrainError
from symbolic.train.launch import launch
from symbolic.train.models import DEFAULT_MODEL
from symbolic.train.network import Network, build_network, init_params
from symbolic.train.optim import learning_rate, make_optimizer
from symbolic.train.plot import PLOT, save_plot
from symbolic.train.result import SUMMARY, Result, format_metric


def load_data(config: Config) -> Dataset:
    """The data set of ``config.model``, in ``config.dtype``: its record's loader, given
    the model's data options (``seq_len``, ``n_train``, ``n_test`` for the adding problem)."""
    record = config.record
    options = {name: getattr(config, name) for name in record.data_options}
    return record.load_data(dtype=np.dtype(config.dtype), **options)


def _targets(data: Dataset, labels: np.ndarray, dtype: np.dtype) -> np.ndarray:
    return one_hot(labels, data.n_classes, dtype) if data.n_classes else labels


def evaluate(
    network: Network, params: dict[str, np.ndarray], data: Dataset, metric: str
) -> tuple[float, float]:
    """The test cost and the test ``metric`` (accuracy in [0, 1], or MSE)."""
    out = network.predict(params, data.x_test)
    target = _targets(data, data.y_test, out.dtype)
    cost, _ = network.loss(out, target)
    if metric == "accuracy":
        return cost, float(np.mean(np.argmax(out, axis=1) == data.y_test))
    return cost, float(np.mean((out.astype(np.float64) - target) ** 2))


def train(config: Config, *, stream: IO[str] | None = None) -> Result:
    """Train (or resume) a model as ``config`` says.

    With ``config.nproc`` > 1 (torch backend), the run is ``nproc`` new processes
    (:mod:`symbolic.train.launch`), data-parallel; in a process that ``torchrun`` (or
    such a launch) started, it is this process's part of the group's run.

    Args:
        config: What to train; ``None`` fields take the model's defaults.
        stream: Where the progress bar and notes go (default stderr).

    Returns:
        A :class:`Result`; ``status`` says whether the run finished, stopped on
        ``stop_after`` or diverged (non-finite loss or gradient).

    Raises:
        TrainError: A bad configuration, a checkpoint that does not fit it, or a process
            of a distributed run that failed.
    """
    stream = sys.stderr if stream is None else stream
    place = distributed.place_from_env()
    launching = place is None and (config.nproc or 1) > 1
    if launching or (place is not None and place.rank != 0):
        # One process speaks: process 0 (here, the launched one).
        stream = io.StringIO()
    given, (config, saved) = config, _configure(config, stream)
    distributed.check_place(place, config.backend, config.nproc)
    try:  # before any work: an unwritable --out fails now, not at the first checkpoint
        write.check_folder(config.out)
    except write.WriteError as exc:
        raise TrainError(str(exc)) from None
    if launching:
        return _launched(given, config)
    data = load_data(config)
    network = build_network(_numpy_modules(config), data)
    if saved is not None:
        state = _resumed_state(config, saved, network, data, stream)
    else:
        state = _new_state(config, network, data)
    engine = _engine(config, network, data, place)
    with contextlib.ExitStack() as stack:
        stack.callback(engine.close)
        # Overflow is detected and reported as divergence: numpy's warnings would only
        # repeat it, from inside the generated modules.
        stack.enter_context(np.errstate(over="ignore", invalid="ignore"))
        if config.blas_threads:
            from threadpoolctl import threadpool_limits

            stack.enter_context(threadpool_limits(limits=config.blas_threads, user_api="blas"))
        state = engine.adopt(state)
        return _Run(config, data, network, engine, state, saved is not None, stream).run()


def _numpy_modules(config: Config) -> Config:
    """The configuration whose network of NumPy (or Numba) modules the run builds: a
    torch run's is the NumPy one, for its init, its layout and the test set's scores."""
    if config.backend != TORCH:
        return config
    return dataclasses.replace(config, backend="numpy")


def _engine(config: Config, network: Network, data: Dataset, place: distributed.Place | None):
    """The engine that computes the steps (:mod:`symbolic.train.engine`)."""
    targets = _targets(data, data.y_train, np.dtype(config.dtype))
    if config.backend != TORCH:
        return NumpyEngine(network, data, targets, config.tbptt)
    try:
        from symbolic.train.torch_engine import TorchEngine
    except ModuleNotFoundError as exc:
        if exc.name != "torch":
            raise
        raise TrainError(
            "backend torch: torch is not installed (pip install 'derivgen[torch]')"
        ) from None
    return TorchEngine(config, network, data, targets, place)


def _launched(given: Config, config: Config) -> Result:
    """The result of a run in ``config.nproc`` new processes (process 0's): each is
    given the options as given (each resolves them, and resumes, itself)."""
    fields = launch(run_in_group, given, config.nproc)
    network = build_network(_numpy_modules(config), load_data(config))
    return Result(**fields, network=network)


def run_in_group(config: Config) -> dict[str, Any] | None:
    """What a process of a launched run does: its part of the run; process 0 returns
    its result's fields (all but the network, which the parent rebuilds)."""
    result = train(config)
    if distributed.rank_from_env() != 0:
        return None
    return {
        field.name: getattr(result, field.name)
        for field in dataclasses.fields(result)
        if field.name != "network"
    }


def _configure(config: Config, stream: IO[str]) -> tuple[Config, Checkpoint | None]:
    """The run's resolved configuration, and the checkpoint it resumes (None: a new run)."""
    if not config.resume:
        return config.resolved(), None
    model = config.model or DEFAULT_MODEL
    out = default_out(model, config.cell) if config.out is None else Path(config.out)
    saved = load_checkpoint(out / CHECKPOINT)
    config, notes = merge_resume(dataclasses.replace(config, out=out), saved.config)
    for note in notes:
        print(f"note: {note}: the run no longer matches an uninterrupted one", file=stream)
    return config, saved


def _resumed_state(
    config: Config, saved: Checkpoint, network: Network, data: Dataset, stream: IO[str]
) -> TrainState:
    """The state ``saved`` holds, once checked to fit the network and the data."""
    expected = network.init_params(0, np.dtype(config.dtype))
    optimizer = make_optimizer(config)
    try:
        check_specs(saved, network.spec_digests(), network.specs())
        check_resumable(saved, expected, optimizer, data.n_train)
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
    return state


def _new_state(config: Config, network: Network, data: Dataset) -> TrainState:
    """The state of a new run: initial parameters, a fresh optimizer, step 0."""
    # The shuffling has its own stream, independent of the layers' init streams.
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, STREAM_SHUFFLE]))
    return TrainState(
        init_params(network, config), make_optimizer(config), rng, np.arange(data.n_train)
    )


class _Run:
    """One run of :func:`train`, set up: steps, evaluations at epoch ends, checkpoints,
    then the figures, the plot and ``summary.json``.

    Args:
        config: The resolved configuration.
        data: The model's data set.
        network: The network, built for ``data`` (of NumPy modules: it scores the test set).
        engine: What computes the steps (:mod:`symbolic.train.engine`); only its process
            0 writes files and shows the progress bar.
        state: Where the run starts (step 0, or the checkpoint's), adopted by ``engine``.
        resumed: Whether ``state`` was read from the checkpoint (it is then on disk).
        stream: Where the progress bar and notes go.
    """

    def __init__(
        self,
        config: Config,
        data: Dataset,
        network: Network,
        engine: Any,
        state: TrainState,
        resumed: bool,
        stream: IO[str],
    ) -> None:
        self.config, self.data, self.network, self.engine = config, data, network, engine
        self.writer = engine.rank == 0
        self.state, self.history, self.stream = state, state.history, stream
        self.per_epoch = -(-data.n_train // config.batch_size)
        self.total = config.steps or config.epochs * self.per_epoch
        self.stop_at = (
            self.total
            if config.stop_after is None
            else min(self.total, state.step + config.stop_after)
        )
        self.checkpoint = config.out / CHECKPOINT
        # The step of the checkpoint on disk, if there is one.
        self.saved_step = state.step if resumed else None
        self.metric = config.record.metric
        self.start = time.perf_counter()
        self.bar = Progress(
            self.total,
            config.model,
            stream=stream,
            enabled=config.progress and self.writer,
            initial=state.step,
        )

    def run(self) -> Result:
        """Train to the end (or ``stop_after``, or divergence); write the plot and the
        summary."""
        status, message = self._loop()
        wall = time.perf_counter() - self.start
        return self._finish(status, message, wall)

    def _loop(self) -> tuple[str, str]:
        """Steps until ``stop_at``: ``("done", "finished")``, or ``"diverged"`` and why."""
        try:
            while self.state.step < self.stop_at:
                running = self._steps()
                self._epoch_end(running)
        except Diverged as exc:
            return "diverged", f"{exc}; stopped without saving: {self._last_good()}"
        except TrainError as exc:  # a process of the group was lost
            last = f"step {self.saved_step}" if self.saved_step is not None else "none yet"
            raise TrainError(
                f"{exc}; last checkpoint: {self.checkpoint} ({last}); continue with --resume"
            ) from None
        except KeyboardInterrupt:
            self.bar.close()
            last = f"step {self.saved_step}" if self.saved_step is not None else "none yet"
            print(
                f"\ninterrupted at step {self.state.step}; last checkpoint: {self.checkpoint} "
                f"({last}); continue with --resume",
                file=self.stream,
            )
            raise
        finally:
            self.bar.close()
        return "done", "finished"

    def _steps(self) -> float:
        """The steps to the end of the epoch (or to ``stop_at``); returns the epoch's mean
        training cost so far."""
        state, config = self.state, self.config
        epoch, position = divmod(state.step, self.per_epoch)
        if position == 0:
            state.order = state.rng.permutation(self.data.n_train)
        # The running loss of the epoch, including the steps before a resume.
        running = float(np.sum(self.history.step_loss[epoch * self.per_epoch :]))
        end = min(self.per_epoch, position + self.stop_at - state.step)
        for index in range(position, end):
            rows = state.order[index * config.batch_size : (index + 1) * config.batch_size]
            lr = learning_rate(config, state.step, self.total)
            cost = self.engine.step(state, rows, lr, config.clip)
            state.step += 1
            self.history.step_loss.append(cost)
            running += cost
            self.bar.update(1, **self._shown(running / (index + 1)))
        return running / end

    def _epoch_end(self, running: float) -> None:
        """After a stretch of steps: check the parameters, evaluate at an epoch's end (or
        the run's), checkpoint at an epoch's end (or where this run stops)."""
        step, view = self.state.step, self.engine.snapshot(self.state)
        if not all(np.all(np.isfinite(p)) for p in view.params.values()):
            raise Diverged(f"a parameter became non-finite by step {step}")
        if step % self.per_epoch == 0 or step >= self.total:
            self._evaluate(view.params)
            self.bar.update(0, **self._shown(running))
        if step % self.per_epoch == 0 or step >= self.stop_at:
            if self.writer:
                elapsed = time.perf_counter() - self.start
                digests = self.network.spec_digests()
                save_checkpoint(self.checkpoint, self.config, view, elapsed, digests)
            self.saved_step = step

    def _evaluate(self, params: dict[str, np.ndarray]) -> None:
        """Score the test set and add a row to the history's evaluations."""
        step, history = self.state.step, self.history
        last_eval = int(history.evals[-1][0]) if history.evals else 0
        test_loss, test_metric = evaluate(self.network, params, self.data, self.metric)
        if not math.isfinite(test_loss):
            raise Diverged(f"the test loss became {test_loss} by step {step}")
        train_loss = float(np.mean(history.step_loss[last_eval:]))
        history.evals.append((step, step / self.per_epoch, train_loss, test_loss, test_metric))

    def _shown(self, loss: float) -> dict[str, str]:
        """The progress bar's fields: epoch, the epoch's mean cost, the last test figure."""
        fields = {
            "epoch": f"{self.state.step / self.per_epoch:.1f}/{self.total / self.per_epoch:.4g}",
            "loss": f"{loss:.4g}",
        }
        if self.history.evals:
            fields["test"] = format_metric(self.metric, self.history.evals[-1][4])
        return fields

    def _last_good(self) -> str:
        """Where a diverged run can continue from."""
        if self.saved_step is not None:
            return (
                f"the last good checkpoint is {self.checkpoint} (step {self.saved_step}); "
                "continue from it with --resume and a smaller --lr, or a --clip"
            )
        return "no checkpoint was written; rerun with a smaller --lr, or a --clip"

    def _finish(self, status: str, message: str, wall: float) -> Result:
        """The run's result, with its plot and ``summary.json`` written."""
        params, step = self.engine.snapshot(self.state).params, self.state.step
        if status == "diverged":
            # Report the last good parameters (those on disk), not the ones that blew up.
            if self.saved_step is not None:
                params, step = load_checkpoint(self.checkpoint).params, self.saved_step
            else:
                params, step = init_params(self.network, self.config), 0
        elif step < self.total:
            status = "stopped"
            message = f"stopped after step {step} of {self.total}: continue with --resume"
        train_loss, test_loss, test_metric = self._figures(status, params, step)
        plot = None
        if self.config.plot and self.history.step_loss and self.writer:
            plot = self.config.out / PLOT
            save_plot(plot, self.config, self.history, self.metric, self.per_epoch)
        result = Result(
            config=self.config,
            status=status,
            message=message,
            step=step,
            epoch=step / self.per_epoch,
            metric=self.metric,
            test_metric=test_metric,
            test_loss=test_loss,
            train_loss=train_loss,
            wall_time=wall,
            total_wall_time=self.state.wall_time + wall,
            checkpoint=self.checkpoint if self.saved_step is not None else None,
            plot=plot,
            params=params,
            history=self.history,
            network=self.network,
        )
        if self.writer:
            text = json.dumps(result.to_json(), indent=2) + "\n"
            write.atomic_write(self.config.out / SUMMARY, text)
        return result

    def _figures(
        self, status: str, params: dict[str, np.ndarray], step: int
    ) -> tuple[float, float, float]:
        """The training cost, test cost and test metric of ``params`` at ``step``: the
        last evaluation's when it was of these parameters."""
        history = self.history
        if status != "diverged" and history.evals and history.evals[-1][0] == step:
            _, _, train_loss, test_loss, test_metric = history.evals[-1]
            return train_loss, test_loss, test_metric
        test_loss, test_metric = evaluate(self.network, params, self.data, self.metric)
        last_eval = int(history.evals[-1][0]) if history.evals else 0
        recent = history.step_loss[last_eval:step]
        train_loss = float(np.mean(recent)) if recent else float("nan")
        return train_loss, test_loss, test_metric
