"""The training loop: :func:`train` sets a run up (new, or resumed from its checkpoint),
steps through the epochs, scores the test set at each epoch's end, checkpoints, stops
cleanly on divergence or interruption, and reports a :class:`~symbolic.train.result.Result`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import IO

import numpy as np

from symbolic import write
from symbolic.progress import Progress
from symbolic.train.checkpoint import (
    CHECKPOINT,
    Checkpoint,
    TrainState,
    check_resumable,
    load_checkpoint,
    save_checkpoint,
)
from symbolic.train.config import STREAM_SHUFFLE, Config, default_out, merge_resume
from symbolic.train.data import Dataset, one_hot
from symbolic.train.errors import TrainError
from symbolic.train.models import DEFAULT_MODEL
from symbolic.train.network import Network, build_network, init_params
from symbolic.train.optim import Optimizer, global_norm, learning_rate, make_optimizer
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
    cost, _ = network.cost.loss(out, target)
    if metric == "accuracy":
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
    config, saved = _configure(config, stream)
    try:  # before any work: an unwritable --out fails now, not at the first checkpoint
        write.check_folder(config.out)
    except write.WriteError as exc:
        raise TrainError(str(exc)) from None
    data = load_data(config)
    network = build_network(config, data)
    if saved is not None:
        state = _resumed_state(config, saved, network, data, stream)
    else:
        state = _new_state(config, network, data)
    with contextlib.ExitStack() as stack:
        # Overflow is detected and reported as divergence: numpy's warnings would only
        # repeat it, from inside the generated modules.
        stack.enter_context(np.errstate(over="ignore", invalid="ignore"))
        if config.blas_threads:
            from threadpoolctl import threadpool_limits

            stack.enter_context(threadpool_limits(limits=config.blas_threads, user_api="blas"))
        return _Run(config, data, network, state, saved is not None, stream).run()


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


class _Run:
    """One run of :func:`train`, set up: steps, evaluations at epoch ends, checkpoints,
    then the figures, the plot and ``summary.json``.

    Args:
        config: The resolved configuration.
        data: The model's data set.
        network: The network, built for ``data``.
        state: Where the run starts (step 0, or the checkpoint's).
        resumed: Whether ``state`` was read from the checkpoint (it is then on disk).
        stream: Where the progress bar and notes go.
    """

    def __init__(
        self,
        config: Config,
        data: Dataset,
        network: Network,
        state: TrainState,
        resumed: bool,
        stream: IO[str],
    ) -> None:
        self.config, self.data, self.network = config, data, network
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
        self.targets = _targets(data, data.y_train, np.dtype(config.dtype))
        self.metric = config.record.metric
        self.start = time.perf_counter()
        self.bar = Progress(
            self.total, config.model, stream=stream, enabled=config.progress, initial=state.step
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
        except _Diverged as exc:
            return "diverged", f"{exc}; stopped without saving: {self._last_good()}"
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
        state, config, data = self.state, self.config, self.data
        epoch, position = divmod(state.step, self.per_epoch)
        if position == 0:
            state.order = state.rng.permutation(data.n_train)
        # The running loss of the epoch, including the steps before a resume.
        running = float(np.sum(self.history.step_loss[epoch * self.per_epoch :]))
        end = min(self.per_epoch, position + self.stop_at - state.step)
        for index in range(position, end):
            rows = state.order[index * config.batch_size : (index + 1) * config.batch_size]
            x = data.x_train[:, rows] if data.sequential else data.x_train[rows]
            lr = learning_rate(config, state.step, self.total)
            cost = train_step(
                self.network, state.params, state.optimizer, x, self.targets[rows], lr, config.clip
            )
            state.step += 1
            self.history.step_loss.append(cost)
            running += cost
            self.bar.update(1, **self._shown(running / (index + 1)))
        return running / end

    def _epoch_end(self, running: float) -> None:
        """After a stretch of steps: check the parameters, evaluate at an epoch's end (or
        the run's), checkpoint at an epoch's end (or where this run stops)."""
        step = self.state.step
        if not all(np.all(np.isfinite(p)) for p in self.state.params.values()):
            raise _Diverged(f"a parameter became non-finite by step {step}")
        if step % self.per_epoch == 0 or step >= self.total:
            self._evaluate()
            self.bar.update(0, **self._shown(running))
        if step % self.per_epoch == 0 or step >= self.stop_at:
            save_checkpoint(
                self.checkpoint, self.config, self.state, time.perf_counter() - self.start
            )
            self.saved_step = step

    def _evaluate(self) -> None:
        """Score the test set and add a row to the history's evaluations."""
        step, history = self.state.step, self.history
        last_eval = int(history.evals[-1][0]) if history.evals else 0
        test_loss, test_metric = evaluate(self.network, self.state.params, self.data, self.metric)
        if not math.isfinite(test_loss):
            raise _Diverged(f"the test loss became {test_loss} by step {step}")
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
        params, step = self.state.params, self.state.step
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
        if self.config.plot and self.history.step_loss:
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
