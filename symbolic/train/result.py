"""What a run reports: :class:`Result`, the lines ``derivgen train`` prints at the end
and ``summary.json``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from symbolic.progress import format_duration
from symbolic.train.checkpoint import History
from symbolic.train.config import Config
from symbolic.train.network import Network

SUMMARY = "summary.json"


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
        tbptt = f", truncated BPTT in chunks of {c.tbptt} steps" if c.tbptt else ""
        if c.class_weights == "balanced":
            tbptt += ", balanced class weights"
        lines = [
            f"{c.model} ({c.backend}, {c.dtype}): {self.network.describe()}",
            f"  {c.optimizer} lr {c.lr:g}{schedule}, batch {c.batch_size}, {length}, clip "
            f"{c.clip:g}, seed {c.seed}{tbptt}",
            f"  {state}",
            f"  test {format_metric(self.metric, self.test_metric)}   "
            f"test loss {self.test_loss:.4g}{train}",
            f"  wall time {format_duration(self.wall_time)} (this run), "
            f"{format_duration(self.total_wall_time)} in all",
        ]
        baseline = self.config.record.baseline
        if baseline is not None:
            lines.append(f"  (predicting the mean scores MSE {baseline:.3f})")
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
