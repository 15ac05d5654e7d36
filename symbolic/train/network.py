"""The network: generated layers stacked under a cost, built for a model, and its
initial parameters.

A network is a stack of generated modules (``generated/<spec>_<backend>.py``) used only
through their public API (DESIGN.md, "Generated module API"): ``init_params``,
``forward``, ``backward`` and the cost's ``loss``. Nothing here knows a layer's
equations, so a regenerated module trains unchanged, and the Numba backend is chosen
by module name alone.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from symbolic.train.cells import MEMORY, Memory, indrnn_weights
from symbolic.train.config import STREAM_GATES, STREAM_LAYERS, Config
from symbolic.train.data import Dataset
from symbolic.train.errors import TrainError

# Scoring runs the test set in chunks of at most this many samples, and of at most
# _EVAL_BUDGET values per cached sequence array (T x chunk x width): long test sequences
# (the adding problem at T = 1000) would otherwise cache gigabytes.
_EVAL_CHUNK = 1000
_EVAL_BUDGET = 4_000_000


def load_module(spec: str, backend: str) -> ModuleType:
    """Import ``generated/<spec>_<backend>.py``.

    Raises:
        TrainError: The module does not exist (e.g. the Numba backend not generated yet).
    """
    name = f"generated.{spec}_{backend}"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name not in (name, "numba", "torch"):
            raise
        what = f"{exc.name} is not installed" if exc.name != name else f"no module {name}"
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

    @property
    def last_step_layer(self) -> int | None:
        """The layer whose last step alone reaches the layers above it (the top recurrent
        one, with the ``last`` readout); None when every step does."""
        return self._select_last

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
            entropy = [seed, STREAM_LAYERS, index]
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
    """The network of ``config.model`` for ``data``'s input and output widths: hidden
    layers of ``config.cell`` under the model's readout layer (a linear one for a cost on
    logits), and the cost ``config.cost`` (squared error by default).

    Raises:
        TrainError: A module is missing, or its ``KIND`` is not what the model needs
            (a module generated from an older version of its spec).
    """
    record = config.record
    sizes = [data.n_in, *config.hidden, data.n_out]
    specs = [config.cell] * len(config.hidden) + [record.readout_for(config.cost)]
    kinds = [record.cell_kind] * len(config.hidden) + ["feedforward"]
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
    return Network(layers, load_module(config.cost, config.backend), config.readout)


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
    steps = config.time_steps()
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, STREAM_GATES]))
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
        value, tied = _memory_init(
            memory, config.gate_bias, rng, shape, steps, layer is recurrent[-1]
        )
        params[name] = value.astype(dtype)
        if tied is not None:
            params[f"{layer.key}.{memory.tied}"] = tied.astype(dtype)
    return params


def _memory_init(
    memory: Memory,
    gate_bias: str,
    rng: np.random.Generator,
    shape: tuple[int, ...],
    steps: int,
    top: bool,
) -> tuple[np.ndarray, np.ndarray | None]:
    """One layer's memory parameter as ``gate_bias`` sets it, and its tied parameter's
    value (None: left as generated)."""
    if memory.form == "weight" and gate_bias in ("auto", "chrono"):
        return indrnn_weights(rng, shape, steps, top), None
    if gate_bias == "auto":
        return np.full(shape, float(memory.standard)), None
    if gate_bias == "chrono":
        horizon = max(steps, 3)
        log_times = np.log(rng.uniform(1.0, horizon - 1.0, shape))
        value = log_times if memory.form == "keep" else -log_times
        return value, -value if memory.tied else None
    return np.full(shape, float(gate_bias)), None
