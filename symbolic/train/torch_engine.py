"""The torch engine: a run's steps with the generated torch cells, in one process or in
several (data-parallel, ``torch.distributed``).

The engine keeps the parameters as the :class:`~symbolic.train.torch_network.TorchNetwork`'s
and updates them with the package's own optimizers (:mod:`symbolic.train.optim`: the
NumPy run's update rules, on tensors), so a torch run follows a NumPy run to rounding.

With several processes, every process draws the same global batches (the same seed, the
same shuffling) and takes its shard of each: a contiguous slice of the batch's rows,
the slices differing by one row at most. Its cost, the mean over its rows, is weighted
by ``world * rows here / rows in the batch`` before ``backward``: the all-reduce of
``DistributedDataParallel`` averages over the processes, so the gradient every process
then holds is the global batch's, also when the batch does not divide evenly. The batch's
cost is all-reduced too, so every process sees the same cost and gradient norm and takes
the same decisions (clipping, divergence). The loop calls :meth:`TorchEngine.snapshot`
to score and checkpoint (process 0 writes).
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import math
import os

import numpy as np
import torch

from symbolic.train import distributed
from symbolic.train.checkpoint import TrainState
from symbolic.train.config import Config
from symbolic.train.data import Dataset
from symbolic.train.distributed import Place
from symbolic.train.errors import Diverged, TrainError
from symbolic.train.network import Network
from symbolic.train.optim import global_norm
from symbolic.train.torch_network import DTYPES, TorchNetwork


class TorchEngine:
    """Steps with the torch cells, in this process and the others of its group.

    Args:
        config: The resolved configuration (``dtype``, ``device``).
        network: The network of NumPy modules (the layout, and the init).
        data: The data set.
        targets: The training targets as the cost takes them.
        place: This process's place in its group (None: alone).
    """

    def __init__(
        self,
        config: Config,
        network: Network,
        data: Dataset,
        targets: np.ndarray,
        place: Place | None = None,
    ) -> None:
        self.place = place or Place()
        self.rank, self.world = self.place.rank, self.place.world
        self.device = distributed.pick_device(config.device, self.place)
        self.data, self.targets = data, targets
        self.net = TorchNetwork(network, DTYPES[config.dtype], self.device)
        self.model: torch.nn.Module = self.net
        self.fail_at = distributed.fail_step(self.rank)
        self.threads = torch.get_num_threads()  # restored by close()
        torch.set_num_threads(distributed.threads(self.place, config.blas_threads))
        if self.world > 1:
            distributed.join(self.place, self.device)

    def adopt(self, state: TrainState) -> TrainState:
        """The state with the network's parameters (loaded from ``state``'s arrays) and
        the optimizer's slots as tensors on the device."""
        self.net.load_numpy(state.params)
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.net, device_ids=ids)
        optimizer = state.optimizer
        optimizer.state = {
            slot: {key: torch.tensor(value, device=self.device) for key, value in held.items()}
            for slot, held in optimizer.state.items()
        }
        params = {key: param.detach() for key, param in self.net.named_parameters()}
        return dataclasses.replace(state, params=params)

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array)).to(self.device)

    def step(self, state: TrainState, rows: np.ndarray, lr: float, clip: float) -> float:
        """One step on this process's shard of the global batch ``rows``; returns the
        global batch's cost (before the update).

        Raises:
            Diverged: The cost or the gradient is not finite; the parameters are unchanged.
            TrainError: Another process of the group is lost.
        """
        if self.fail_at == state.step:
            os._exit(distributed.FAIL_EXIT)
        shard = np.array_split(rows, self.world)[self.rank]
        data = self.data
        x = data.x_train[:, shard] if data.sequential else data.x_train[shard]
        for param in self.net.parameters():
            param.grad = None
        try:
            cost = self.model(self._tensor(x), self._tensor(self.targets[shard]))
            (cost * (self.world * len(shard) / len(rows))).backward()
            total = self._batch_cost(cost, len(shard), len(rows))
        except RuntimeError as exc:
            if self.world == 1:
                raise
            raise TrainError(
                f"rank {self.rank}: step {state.step + 1} failed, another process is "
                f"probably lost ({str(exc).splitlines()[0][:200]})"
            ) from None
        if not math.isfinite(total):
            raise Diverged(f"the loss became {total} at step {state.optimizer.t + 1}")
        self._update(state, lr, clip)
        return total

    def _batch_cost(self, cost: torch.Tensor, here: int, rows: int) -> float:
        """The global batch's cost: this shard's, or the weighted sum of every shard's."""
        if self.world == 1:
            return float(cost.detach())
        import torch.distributed as dist

        total = torch.tensor([float(cost.detach()) * here], dtype=torch.float64, device=self.device)
        dist.all_reduce(total)
        return float(total) / rows

    def _update(self, state: TrainState, lr: float, clip: float) -> None:
        """Clip the gradients (global norm) and apply the optimizer's update."""
        grads = {key: param.grad for key, param in self.net.named_parameters()}
        norm = global_norm(grads)
        if not math.isfinite(norm):
            raise Diverged(f"the gradient norm became {norm} at step {state.optimizer.t + 1}")
        if clip and norm > clip:
            scale = clip / norm
            grads = {key: grad * scale for key, grad in grads.items()}
        state.optimizer.lr = lr
        with torch.no_grad():
            state.optimizer.step(state.params, grads)

    def snapshot(self, state: TrainState) -> TrainState:
        """The state with NumPy copies of the parameters and the optimizer's slots."""
        optimizer = copy.copy(state.optimizer)
        optimizer.state = {
            slot: {key: _numpy(value) for key, value in held.items()}
            for slot, held in state.optimizer.state.items()
        }
        params = {key: _numpy(value) for key, value in state.params.items()}
        return dataclasses.replace(state, params=params, optimizer=optimizer)

    def close(self) -> None:
        """Leave the process group (when in one); the threads are as they were."""
        torch.set_num_threads(self.threads)
        if self.world > 1:
            # The DDP wrapper's reducer holds the group and its gloo threads: it goes
            # first, so that nothing of the group is left for the interpreter's exit.
            self.model = self.net
            gc.collect()
            distributed.leave()


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy().copy()
