"""The cells a model's hidden layers are made of, and what sets a recurrent cell's memory.

The cells are the built-in specs (:func:`symbolic.generate.builtin_specs`), found by
their ``kind``: a new recurrent spec, once generated, trains with ``--cell NAME``. What
is known of a cell is keyed by the cell, not by a model (every recurrent model takes
every recurrent cell), so it lives here, beside the models' records: which parameter
sets how long its state lasts (:data:`MEMORY`) and IndRNN's init of it.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass

import numpy as np

from symbolic.train.errors import TrainError
from symbolic.train.models import ModelRecord


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
    """The names of the built-in specs of ``kind`` (``recurrent``, ``feedforward`` or
    ``cost``), sorted."""
    return sorted(name for name, k in spec_kinds().items() if k == kind)


def check_cell(record: ModelRecord, cell: str) -> None:
    """Raise :class:`TrainError` unless ``cell`` is a built-in spec the model can use.

    Args:
        record: The model.
        cell: A spec name.
    """
    model, kind = record.name, record.cell_kind
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


def check_cost(cost: str) -> None:
    """Raise :class:`TrainError` unless ``cost`` is a built-in cost spec."""
    costs = cells("cost")
    if cost not in costs:
        raise TrainError(f"cost: expected a built-in cost spec ({', '.join(costs)}), got {cost!r}")


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
