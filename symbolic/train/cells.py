"""The specs a model is made of: its hidden layers' cell, its readout layer, its cost.

The built-in specs (:func:`symbolic.generate.builtin_specs`) are found by their
``kind``: a new recurrent spec, once generated, trains with ``--cell NAME``; a spec file
anywhere trains with ``--cell PATH.toml`` (:mod:`symbolic.train.specs`). How a cell's
parameters start is its spec's (``[init]``): nothing here knows a cell's parameters.
"""

from __future__ import annotations

import tomllib

from symbolic.train import specs
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
    """The names of the built-in specs of ``kind`` (``recurrent`` or ``feedforward``), sorted."""
    return sorted(name for name, k in spec_kinds().items() if k == kind)


def spec_kind(spec: str) -> str | None:
    """The kind of ``spec`` (a built-in name or a spec file), None for an unknown name.

    Raises:
        SpecError: A spec file that is not a valid spec.
    """
    if specs.is_path(spec):
        return specs.read(spec).kind
    return spec_kinds().get(spec)


def check_spec(role: str, spec: str, kind: str, what: str) -> None:
    """Raise :class:`TrainError` unless ``spec`` is of ``kind``, as ``what`` needs.

    Args:
        role: The option or field that names it (``cell``, ``cost``), for the message.
        spec: A built-in spec name or a spec file.
        kind: The kind it must be.
        what: Who needs it (``the adding model``), for the message.
    """
    found = spec_kind(spec)
    allowed = ", ".join(cells(kind)) + f", or a {kind} spec file (PATH.toml)"
    if found is None:
        raise TrainError(
            f"{role}: no built-in spec named {spec!r}; {what} takes a {kind} spec: {allowed}"
        )
    if found != kind:
        raise TrainError(
            f"{role}: {spec!r} is a {found} spec; {what} takes a {kind} spec: {allowed}"
        )


def check_cell(record: ModelRecord, cell: str) -> None:
    """Raise :class:`TrainError` unless ``cell`` (a built-in spec name or a spec file) is
    of the kind the model's hidden layers are."""
    check_spec("cell", cell, record.cell_kind, f"the {record.name} model")
