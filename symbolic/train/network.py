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

from symbolic.train import specs
from symbolic.train.config import STREAM_LAYERS, Config
from symbolic.train.data import Dataset
from symbolic.train.errors import TrainError

# Scoring runs the test set in chunks of at most this many samples, and of at most
# _EVAL_BUDGET values per cached sequence array (T x chunk x width): long test sequences
# (the adding problem at T = 1000) would otherwise cache gigabytes.
_EVAL_CHUNK = 1000
_EVAL_BUDGET = 4_000_000


def load_module(spec: str, backend: str) -> ModuleType:
    """Import ``generated/<spec>_<backend>.py``, or, for a spec file, its module generated
    into the cache (:func:`symbolic.train.specs.load`).

    Raises:
        TrainError: The module does not exist (e.g. the Numba backend not generated yet).
        SpecError: A spec file that is not a valid spec.
    """
    if specs.is_path(spec):
        return specs.load(spec, backend)
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
        spec: The spec it was generated from (``grn``, ``dense_sigmoid``, or a spec
            file's path).
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
        cost_spec: The cost's spec (a name or a spec file; default its module's name).
    """

    def __init__(
        self,
        layers: list[Layer],
        cost: ModuleType,
        readout: str = "last",
        cost_spec: str | None = None,
    ) -> None:
        self.layers = layers
        self.cost = cost
        self.cost_spec = cost.NAME if cost_spec is None else cost_spec
        self.readout = readout
        #: The cost's unit inputs (``[inputs]``), e.g. class weights; a missing one is
        #: ones, as is every row input (the data sets' sequences are of one length: no
        #: step is padding, so a mask would be all ones)
        self.cost_inputs: dict[str, np.ndarray] = {}
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
        parts += [f"{layer.module.NAME} {layer.n_out}" for layer in self.layers]
        tail = f", readout at {'the last' if self.readout == 'last' else 'every'} step"
        return " -> ".join(parts) + f", {self.cost.NAME}" + (tail if self.sequential else "")

    def spec_digests(self) -> dict[str, str]:
        """The sha256 of each layer's spec and of the cost's, by layer key (``cost``)."""
        digests = {layer.key: layer.module.SPEC_SHA256 for layer in self.layers}
        return {**digests, "cost": self.cost.SPEC_SHA256}

    def specs(self) -> dict[str, str]:
        """Each layer's spec and the cost's (names or spec files), keyed as
        :meth:`spec_digests`."""
        return {**{layer.key: layer.spec for layer in self.layers}, "cost": self.cost_spec}

    def init_params(
        self, seed: int, dtype: np.dtype, steps: int | None = None
    ) -> dict[str, np.ndarray]:
        """Each layer's generated ``init_params``, seeded independently from ``seed``;
        ``steps``: the sequence length T of the spec inits that scale with it."""
        params = {}
        for index, layer in enumerate(self.layers):
            entropy = [seed, STREAM_LAYERS, index]
            layer_seed = int(np.random.SeedSequence(entropy).generate_state(1)[0])
            for name, value in layer.module.init_params(
                layer.n_in, layer.n_out, seed=layer_seed, dtype=dtype, steps=steps
            ).items():
                params[f"{layer.key}.{name}"] = value
        return params

    def _params(self, params: dict[str, np.ndarray], layer: Layer) -> dict[str, np.ndarray]:
        return {name: params[f"{layer.key}.{name}"] for name in layer.module.PARAMS}

    def forward(
        self,
        params: dict[str, np.ndarray],
        x: np.ndarray,
        states: list[dict[str, np.ndarray] | None] | None = None,
    ) -> tuple[np.ndarray, list]:
        """The output for ``x`` (``(B, n_in)``, or ``(T, B, n_in)`` for a sequence model)
        and the caches ``backward`` needs; ``states``: each layer's initial states (None,
        or None for a layer: zeros), as :meth:`final_states` gives them."""
        caches = []
        h = x
        for index, layer in enumerate(self.layers):
            p = self._params(params, layer)
            if layer.recurrent:
                state0 = states[index] if states is not None else None
                h, cache = layer.module.forward(p, h, state0)
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

    def final_states(self, caches: list) -> list[dict[str, np.ndarray] | None]:
        """Each layer's states after the last step of a :meth:`forward` (None for a
        feedforward layer): the initial states of the sequence's next chunk."""
        return [
            cache["state"] if layer.recurrent else None
            for layer, (cache, _) in zip(self.layers, caches, strict=True)
        ]

    def tbptt_gradients(
        self, params: dict[str, np.ndarray], x: np.ndarray, target: np.ndarray, chunk: int
    ) -> tuple[float, dict[str, np.ndarray]]:
        """Truncated backpropagation through time: the cost of the sequences ``x`` and
        its gradient, backpropagated within chunks of ``chunk`` steps.

        The chunks run in order, each starting from the states the one before ended with
        (stateful); each chunk's cost is backpropagated through that chunk alone, the
        states it started from held fixed, and the chunks' gradients are summed. With the
        ``last`` readout only the last chunk has a cost: the others only carry the state
        (no backward, nothing cached past the chunk). With ``every``, each chunk's cost
        weighs by its share of the steps, so that the total is the whole sequence's cost.
        Memory grows with ``chunk``, not with the sequence's length.

        Returns:
            The cost (the whole sequence's, as :meth:`loss` gives it) and the gradients.
        """
        steps = x.shape[0]
        cost, grads, states = 0.0, {}, None
        for start in range(0, steps, chunk):
            piece = x[start : start + chunk]
            out, caches = self.forward(params, piece, states)
            states = self.final_states(caches)
            if self.readout == "last" and start + chunk < steps:
                continue
            share = piece.shape[0] / steps if self.readout == "every" else 1.0
            piece_cost, dout = self.loss(out, target)
            cost += piece_cost * share
            for key, value in self.backward(params, caches, dout * out.dtype.type(share)).items():
                grads[key] = value if key not in grads else grads[key] + value
        return cost, grads

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
        inputs = {k: v.astype(out.dtype, copy=False) for k, v in self.cost_inputs.items()}
        if out.ndim == 3:
            steps = out.shape[0]
            cost, dout = self.cost.loss(out, np.broadcast_to(target, out.shape), **inputs)
            return cost / steps, dout / out.dtype.type(steps)
        return self.cost.loss(out, target, **inputs)

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
    layers of ``config.cell`` under the readout layer (``config.readout_spec``), and the
    cost (``config.cost``).

    Raises:
        TrainError: A module is missing, or its ``KIND`` is not what the model needs
            (a module generated from an older version of its spec).
    """
    record = config.record
    sizes = [data.n_in, *config.hidden, data.n_out]
    layer_specs = [config.cell] * len(config.hidden) + [config.readout_spec]
    kinds = [record.cell_kind] * len(config.hidden) + ["feedforward"]
    layers = []
    for index, (spec, kind) in enumerate(zip(layer_specs, kinds, strict=True)):
        module = _module_of_kind(spec, config.backend, kind)
        name = module.NAME
        key = f"{'dense' if name.startswith('dense') else name}{index}"
        n_in = sizes[index]
        if getattr(module, "INPUT_ELEMENTWISE", False) and n_in != sizes[index + 1]:
            layers.append(_input_projection(index, n_in, sizes[index + 1], config.backend))
            n_in = sizes[index + 1]
        layers.append(Layer(key, spec, module, n_in, sizes[index + 1]))
    cost = _module_of_kind(config.cost, config.backend, "cost")
    network = Network(layers, cost, config.readout, config.cost)
    network.cost_inputs = class_weights(config, data, cost)
    return network


def class_weights(config: Config, data: Dataset, cost: ModuleType) -> dict[str, np.ndarray]:
    """The cost's unit inputs for ``--class-weights balanced``: n / (classes x count) for
    each class of the training set (a class with no sample: weight 0, it never occurs);
    nothing for ``none``.

    Raises:
        TrainError: ``balanced`` on a regression task, or with a cost of no unit input.
    """
    if config.class_weights != "balanced":
        return {}
    units = [name for name, kind in getattr(cost, "INPUTS", {}).items() if kind == "unit"]
    if not data.n_classes:
        raise TrainError(f"class_weights: the {data.name} task has no classes")
    if not units:
        raise TrainError(
            f"class_weights: the cost {cost.NAME} takes no unit input ([inputs] name = "
            '"unit"): use --spec weighted_softmax_cross_entropy, or a cost spec of your own'
        )
    counts = np.bincount(data.y_train, minlength=data.n_classes).astype(np.float64)
    with np.errstate(divide="ignore"):
        weights = np.where(counts > 0, counts.sum() / (data.n_classes * counts), 0.0)
    return dict.fromkeys(units, weights)


#: The layer that brings the input to the width of a layer that uses its input
#: elementwise (a highway connection: SRU, a highway layer), at every step.
INPUT_PROJECTION = "dense_linear"


def _input_projection(index: int, n_in: int, n_out: int, backend: str) -> Layer:
    """A learned linear projection (``W@x + b``) of ``n_in`` to ``n_out`` units under the
    ``index``-th layer, whose input is elementwise (``INPUT_ELEMENTWISE``: its module
    refuses n_in != n_out), as SRU's own implementation projects an input of another
    width for its highway connection."""
    module = _module_of_kind(INPUT_PROJECTION, backend, "feedforward")
    return Layer(f"proj{index}", INPUT_PROJECTION, module, n_in, n_out)


def _module_of_kind(spec: str, backend: str, kind: str) -> ModuleType:
    """The ``backend`` module of ``spec``, checked to be of ``kind``."""
    module = load_module(spec, backend)
    if module.KIND != kind:
        where = spec if specs.is_path(spec) else f"generated/{spec}_{backend}.py"
        raise TrainError(
            f"{where} is of kind {module.KIND}, its spec of kind {kind}: run `derivgen generate`"
        )
    return module


def init_params(network: Network, config: Config) -> dict[str, np.ndarray]:
    """The network's initial parameters: each layer's generated ``init_params`` (its
    spec's ``[init]``), with the sequence length the ``chrono`` and ``indrnn`` inits
    scale with (the adding problem's ``seq_len``)."""
    return network.init_params(config.seed, np.dtype(config.dtype), config.time_steps())
