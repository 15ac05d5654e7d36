"""What computes a run's steps: an engine, chosen by the backend.

The loop (:mod:`symbolic.train.loop`) owns the run: the order of the samples, the
learning rate, evaluations, checkpoints, the history. An engine owns the arithmetic of a
step and where the parameters live. The NumPy engine here steps the generated NumPy or
Numba modules on the NumPy arrays of the :class:`~symbolic.train.checkpoint.TrainState`
itself; the torch engine (:mod:`symbolic.train.torch_engine`) keeps them as the
parameters of ``torch.nn.Module`` cells, possibly in several processes, and hands the
loop NumPy snapshots to score and to checkpoint. Every engine has this interface:

- ``rank``, ``world``: this process and the number of processes (0 and 1 here);
- ``adopt(state)``: the state the engine steps, from one of NumPy arrays (new or read
  from a checkpoint);
- ``step(state, rows, lr, clip)``: one optimizer step on the training samples ``rows``
  (the whole global batch: an engine with several processes takes its shard), returning
  the batch's cost; raises :class:`~symbolic.train.errors.Diverged`;
- ``snapshot(state)``: the state with NumPy arrays, to score, save and report;
- ``close()``: release what the engine holds (a process group).
"""

from __future__ import annotations

import math

import numpy as np

from symbolic.train.checkpoint import TrainState
from symbolic.train.data import Dataset
from symbolic.train.errors import Diverged
from symbolic.train.network import Network
from symbolic.train.optim import Optimizer, global_norm


def train_step(
    network: Network,
    params: dict[str, np.ndarray],
    optimizer: Optimizer,
    x: np.ndarray,
    target: np.ndarray,
    lr: float,
    clip: float = 0.0,
    tbptt: int = 0,
) -> float:
    """One minibatch step: forward, cost, backward, clipping, update (in place).

    Args:
        tbptt: Backpropagate through chunks of this many steps (truncated BPTT,
            :meth:`Network.tbptt_gradients`); 0, or sequences no longer: through all.

    Returns:
        The minibatch's cost (before the update).

    Raises:
        Diverged: The cost or the gradient is not finite; ``params`` are unchanged.
    """
    if tbptt and network.sequential and x.shape[0] > tbptt:
        cost, grads = network.tbptt_gradients(params, x, target, tbptt)
        if not math.isfinite(cost):
            raise Diverged(f"the loss became {cost} at step {optimizer.t + 1}")
    else:
        out, caches = network.forward(params, x)
        cost, dout = network.loss(out, target)
        if not math.isfinite(cost):
            raise Diverged(f"the loss became {cost} at step {optimizer.t + 1}")
        grads = network.backward(params, caches, dout)
    norm = global_norm(grads)
    if not math.isfinite(norm):
        raise Diverged(f"the gradient norm became {norm} at step {optimizer.t + 1}")
    if clip and norm > clip:
        # One scale for all gradients keeps the update's direction (global-norm clipping).
        scale = next(iter(grads.values())).dtype.type(clip / norm)
        # Not in place: a backend may hand out arrays it still holds.
        grads = {key: grad * scale for key, grad in grads.items()}
    optimizer.lr = lr
    optimizer.step(params, grads)
    return cost


class NumpyEngine:
    """Steps with the generated NumPy or Numba modules, in this process.

    Args:
        network: The network of the run's modules.
        data: The data set.
        targets: The training targets as the cost takes them (one-hot for classes).
        tbptt: Truncated BPTT's chunk length (0: backpropagate through whole sequences).
    """

    rank = 0
    world = 1

    def __init__(
        self, network: Network, data: Dataset, targets: np.ndarray, tbptt: int = 0
    ) -> None:
        self.network, self.data, self.targets, self.tbptt = network, data, targets, tbptt

    def adopt(self, state: TrainState) -> TrainState:
        """The state itself: its arrays are what this engine updates."""
        return state

    def step(self, state: TrainState, rows: np.ndarray, lr: float, clip: float) -> float:
        """One step on the samples ``rows``; returns their cost."""
        data = self.data
        x = data.x_train[:, rows] if data.sequential else data.x_train[rows]
        return train_step(
            self.network,
            state.params,
            state.optimizer,
            x,
            self.targets[rows],
            lr,
            clip,
            self.tbptt,
        )

    def snapshot(self, state: TrainState) -> TrainState:
        """The state itself (already NumPy arrays)."""
        return state

    def close(self) -> None:
        """Nothing to release."""
