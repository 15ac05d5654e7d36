"""The network in PyTorch: the cells of ``generated/<spec>_torch.py`` stacked as
:class:`~symbolic.train.network.Network` stacks the NumPy modules, under the cost.

Each layer is its module's ``Cell`` (a ``torch.nn.Module`` whose parameters are named as
in ``PARAMS``), registered under the layer's key, so the module's ``named_parameters``
are the flat dict's keys (``grn0.Wu``, ``dense1.W``) that the optimizer and the
checkpoint use. The layers' parameters are copied in from the NumPy init, so a torch run
starts where a NumPy run starts. Calling the module gives the cost: its ``backward`` runs
the derived backward of every layer (the modules register it with ``torch.library``), so
``DistributedDataParallel`` can wrap it like any other module.
"""

from __future__ import annotations

import numpy as np
import torch

from symbolic.train.errors import TrainError
from symbolic.train.network import Network, load_module

DTYPES = {"float32": torch.float32, "float64": torch.float64}


class TorchNetwork(torch.nn.Module):
    """The torch cells of ``network``'s layers, and its cost.

    Args:
        network: The network (NumPy modules) whose layout to follow.
        dtype: The parameters' dtype.
        device: Their device.

    Raises:
        TrainError: A torch module is missing, or its parameters are not its NumPy
            module's (one of them generated from an older spec).
    """

    def __init__(self, network: Network, dtype: torch.dtype, device: torch.device) -> None:
        super().__init__()
        self.keys = [layer.key for layer in network.layers]
        self.recurrent = [layer.recurrent for layer in network.layers]
        self.last_step_layer = network.last_step_layer
        for layer in network.layers:
            module = load_module(layer.spec, "torch")
            if tuple(module.PARAMS) != tuple(layer.module.PARAMS):
                raise TrainError(
                    f"generated/{layer.spec}_torch.py has parameters {module.PARAMS}, its NumPy "
                    f"module {layer.module.PARAMS}: run `derivgen generate`"
                )
            cell = module.Cell(layer.n_in, layer.n_out, dtype=dtype, device=device)
            self.add_module(layer.key, cell)
        self.cost = load_module(network.cost_spec, "torch")
        self.cost_inputs = {
            name: torch.as_tensor(value, dtype=dtype, device=device)
            for name, value in network.cost_inputs.items()
        }

    def outputs(self, x: torch.Tensor) -> torch.Tensor:
        """The network's output for ``x``, as :meth:`Network.forward` computes it."""
        h = x
        for index, (key, recurrent) in enumerate(zip(self.keys, self.recurrent, strict=True)):
            cell = self.get_submodule(key)
            if recurrent:
                h, _ = cell(h)
            elif h.ndim == 3:
                steps, batch, width = h.shape
                h = cell(h.reshape(steps * batch, width)).reshape(steps, batch, -1)
            else:
                h = cell(h)
            if index == self.last_step_layer:
                h = h[-1]
        return h

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The cost of the batch ``x`` against ``target``, differentiable.

        With the ``every`` readout the target holds at every step, and the cost is
        averaged over the steps, as :meth:`Network.loss` does. An empty batch (a shard of
        a batch smaller than the number of processes) costs 0, through every parameter,
        so that its process still takes part in the gradients' all-reduce.
        """
        if x.shape[-2] == 0:
            return sum(p.sum() for p in self.parameters()) * 0.0
        out = self.outputs(x)
        if out.ndim == 3:
            steps = out.shape[0]
            full = target.expand(out.shape).contiguous()
            return self.cost.cost(out, full, **self.cost_inputs) / steps
        return self.cost.cost(out, target, **self.cost_inputs)

    def load_numpy(self, params: dict[str, np.ndarray]) -> None:
        """Copy ``params`` (the flat dict of NumPy arrays) into the parameters."""
        own = dict(self.named_parameters())
        if set(own) != set(params):
            raise TrainError(
                f"the torch cells' parameters {sorted(own)} are not the network's "
                f"{sorted(params)}: run `derivgen generate`"
            )
        with torch.no_grad():
            for key, param in own.items():
                param.copy_(torch.from_numpy(np.ascontiguousarray(params[key])))
