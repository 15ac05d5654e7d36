"""The plot of a run (``training.png``): the training cost per step and the test cost,
and the test accuracy or MSE per evaluation.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from symbolic import write
from symbolic.train import specs
from symbolic.train.checkpoint import History
from symbolic.train.config import Config
from symbolic.train.models import ModelRecord

if TYPE_CHECKING:  # matplotlib is imported only when a plot is drawn
    from matplotlib.axes import Axes

PLOT = "training.png"


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
    evals = np.asarray(history.evals, dtype=np.float64).reshape(-1, 5)
    _draw_cost(left, config, history.step_loss, evals, per_epoch)
    if len(evals):
        _draw_metric(right, config.record, evals, metric)
    right.set_xlabel("epoch")
    right.grid(alpha=0.3)
    left.grid(alpha=0.3)
    write.atomic_write(path, lambda handle: figure.savefig(handle, format="png", dpi=100))


def _draw_cost(
    axes: Axes, config: Config, step_loss: list[float], evals: np.ndarray, per_epoch: int
) -> None:
    """The left panel: the cost of every step, and the training and test cost of every
    evaluation, by epoch on a log scale."""
    steps = np.arange(1, len(step_loss) + 1) / per_epoch
    axes.plot(steps, step_loss, color="tab:blue", alpha=0.3, lw=0.8, label="train (step)")
    if len(evals):
        axes.plot(evals[:, 1], evals[:, 2], "o-", color="tab:blue", ms=3, label="train (epoch)")
        axes.plot(evals[:, 1], evals[:, 3], "s-", color="tab:orange", ms=3, label="test")
    axes.set_yscale("log")
    axes.set_xlabel("epoch")
    axes.set_ylabel(f"cost ({config.dtype}, {config.backend})")
    cell = Path(config.cell).stem if specs.is_path(config.cell) else config.cell
    what = f"{config.model}, {cell} {','.join(map(str, config.hidden))}"
    if "seq_len" in config.record.data_options:
        what += f", T = {config.seq_len}"
    axes.set_title(f"{what}: squared-error cost")
    axes.legend()


def _draw_metric(axes: Axes, record: ModelRecord, evals: np.ndarray, metric: str) -> None:
    """The right panel: the test metric of every evaluation; for an MSE, the model's
    baseline and "solved" lines where it has them."""
    if metric == "accuracy":
        axes.plot(evals[:, 1], 100 * evals[:, 4], "o-", color="tab:green", ms=3)
        axes.set_ylabel("test accuracy (%)")
        axes.set_title(f"test accuracy: {100 * evals[-1, 4]:.2f}%")
        return
    axes.plot(evals[:, 1], evals[:, 4], "o-", color="tab:green", ms=3, label="test")
    if record.baseline is not None:
        axes.axhline(record.baseline, color="gray", ls="--", label="predict the mean")
    if record.solved is not None:
        axes.axhline(record.solved, color="tab:red", ls=":", label="solved")
    axes.set_yscale("log")
    axes.set_ylabel("test MSE")
    axes.set_title(f"test MSE: {evals[-1, 4]:.4g}")
    axes.legend()
