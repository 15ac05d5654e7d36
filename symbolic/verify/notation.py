"""A document's notation file (TOML, data): what its names mean on the unrolled models.

``derivgen verify --paper`` reads a derivation in LaTeX; the notation file says how to
read it (the built-in paper's is ``symbolic/papers/neural-networks-derivatives.notation.toml``):

- ``cost``: the name of the cost (``C``); ``[functions]``: LaTeX name -> primitive
  (``"\\sigma" = "sigmoid"``; a prime is the primitive's derivative);
- ``[indices]``: which letter is the time step (``t``; ``steps`` is their number,
  ``T``), the layer (``l``; ``top`` is the last layer, ``L``), the units (``i, j, k``),
  and the layer size (``n``: ``n^l``);
- ``[ids]``: stable names of the formulas, by line (default ``<section>.line<N>``);
- ``[[sections]]``: from the line whose text is ``heading`` on, the formulas speak of
  the ``model`` (``mlp`` or ``grn``, the paper's, or a spec: ``spec:elman`` for a
  shipped one, ``spec:my_cell.toml`` relative to the notation file, unrolled by
  :mod:`symbolic.verify.specmodel` with the ``cost`` spec, default ``squared_error``,
  at every step) in the sizes ``concrete`` (formulas whose layers are numbers) or
  ``general`` (formulas with a layer letter), and ``steps``; its
  ``[sections.variables]`` give each name its key in the model and the meaning of its
  indices (``layer``, ``unit`` of that layer, ``unit+1`` of the layer above, ``unit@top``
  of the last layer, ``time``; ``untimed`` describes a value printed without its step),
  ``aliases`` (``\\Gamma`` is ``G``) and ``misspellings`` (``WXC`` is read as ``WXc``,
  and the finding says so), ``predicates`` for conditions (``[l \\text{ is a GRN
  layer}]``), ``corrections`` (corrected formulas in the document's notation, one per
  left side; a corrected formula is otherwise derived), ``local_detail`` (the document's
  words on what a formula that holds only locally leaves out) and ``definitions`` (the
  model's equations and its cost in the document's notation, from which
  :mod:`symbolic.verify.adjoints` derives each corrected formula; a section whose model
  is a spec needs none: :mod:`symbolic.verify.celldefs` writes the spec's equations in
  the notation through its ``variables``, and definitions given here win).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from symbolic.parse import SpecError
from symbolic.verify.specmodel import CellSpec, is_spec_model, load_cell_spec
from symbolic.verify.unrolled import Unrolled, grn, mlp

INDEX_KINDS = ("time", "layer", "unit", "unit+1", "unit@top")
MODELS = ("mlp", "grn")
PREDICATES = ("recurrent",)


@dataclass(frozen=True)
class Variable:
    """A name of the document: its key in the model and what its indices are."""

    key: str
    indices: tuple[str, ...]
    kind: str = "variable"
    untimed: str | None = None


@dataclass(frozen=True)
class Correction:
    """A corrected formula in the document's notation (parsed and verified like any)."""

    latex: str
    id: str = ""
    remark: str = ""


@dataclass
class Section:
    """The part of the document that speaks of one model."""

    name: str
    heading: str
    model: str
    concrete: list
    general: list
    steps: tuple[int, ...] = (1,)
    variables: dict[str, Variable] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    misspellings: dict[str, str] = field(default_factory=dict)
    predicates: dict[str, str] = field(default_factory=dict)
    corrections: list[Correction] = field(default_factory=list)
    local_detail: dict[str, str] = field(default_factory=dict)
    spec: CellSpec | None = None
    definitions: list[str] = field(default_factory=list)

    def variable(self, printed: str) -> tuple[Variable, str | None] | None:
        """The variable a printed name stands for, and the note a misspelling gets."""
        name = self.aliases.get(printed, printed)
        if name in self.variables:
            return self.variables[name], None
        if printed in self.misspellings:
            real = self.misspellings[printed]
            var = self.variables[real]
            return var, f"{printed} is read as {real}, the only {var.kind} of that name."
        return None

    def models(self, general: bool) -> list[Unrolled]:
        """The concrete models a formula of this section is checked on."""
        shapes = self.general if general else self.concrete
        if self.model == "mlp":
            return [mlp(tuple(sizes)) for sizes in shapes]
        build = grn if self.spec is None else self.spec.unrolled
        return [
            build(tuple(s["sizes"]), T, s.get("input_layer", 0)) for T in self.steps for s in shapes
        ]


@dataclass
class Notation:
    """A document's notation file, loaded (see the module docstring)."""

    path: str
    cost: str = "C"
    functions: dict[str, str] = field(default_factory=dict)
    time: str = "t"
    steps: str = "T"
    layers: tuple[str, ...] = ("l",)
    top: str = "L"
    units: tuple[str, ...] = ("i", "j", "k")
    size: str = "n"
    ids: dict[int, str] = field(default_factory=dict)
    sections: list[Section] = field(default_factory=list)

    def section_at(self, lines: list[str], line: int) -> Section | None:
        """The section whose heading is the last one at or before ``line``."""
        found = None
        starts = {s.heading: s for s in self.sections}
        for text in lines[:line]:
            title = text.strip().lstrip("#").strip()
            if title in starts:
                found = starts[title]
        return found


def default_path(paper: str | Path) -> Path:
    """The notation file next to a document: ``<paper>.notation.toml``."""
    paper = Path(paper)
    return paper.with_name(paper.stem + ".notation.toml")


def builtin_paper() -> Path:
    """The built-in paper, from package data."""
    return Path(
        str(resources.files("symbolic").joinpath("papers", "neural-networks-derivatives.md"))
    )


def load(path: str | Path) -> Notation:
    """Read a notation file.

    Raises:
        SpecError: The file is not valid TOML or says something this module cannot use.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(path, None, None, f"not a TOML notation file: {exc}") from exc
    indices = data.get("indices", {})
    notation = Notation(
        str(path),
        cost=data.get("cost", "C"),
        functions=dict(data.get("functions", {})),
        time=indices.get("time", "t"),
        steps=indices.get("steps", "T"),
        layers=tuple(indices.get("layers", ["l"])),
        top=indices.get("top", "L"),
        units=tuple(indices.get("units", ["i", "j", "k"])),
        size=indices.get("size", "n"),
        ids={int(k): v for k, v in data.get("ids", {}).items()},
    )
    notation.sections = [_section(path, entry) for entry in data.get("sections", [])]
    return notation


def _section(path: Path, entry: dict) -> Section:
    name = entry.get("name", "?")
    model = entry.get("model")
    cell_spec = None
    if is_spec_model(model):
        cell_spec = load_cell_spec(path, model, entry.get("cost"))
    elif model not in MODELS:
        raise SpecError(
            path, None, name, f"a section's model is one of {', '.join(MODELS)} or spec:<spec>"
        )
    variables = {}
    for printed, spec in entry.get("variables", {}).items():
        bad = [k for k in spec.get("indices", []) if k not in INDEX_KINDS]
        if bad:
            raise SpecError(path, None, printed, f"unknown index kind {bad[0]!r}")
        variables[printed] = Variable(
            spec.get("key", printed),
            tuple(spec.get("indices", [])),
            spec.get("kind", "variable"),
            spec.get("untimed"),
        )
    for printed, real in entry.get("misspellings", {}).items():
        if real not in variables:
            raise SpecError(path, None, printed, f"misspelling of an unknown name {real!r}")
    for phrase, meaning in entry.get("predicates", {}).items():
        if meaning not in PREDICATES:
            raise SpecError(path, None, phrase, f"a predicate means one of {PREDICATES}")
    return Section(
        name=name,
        heading=entry.get("heading", ""),
        model=entry["model"],
        concrete=entry.get("concrete", []),
        general=entry.get("general", []),
        steps=tuple(entry.get("steps", [1])),
        variables=variables,
        aliases=dict(entry.get("aliases", {})),
        misspellings=dict(entry.get("misspellings", {})),
        predicates=dict(entry.get("predicates", {})),
        corrections=[Correction(**c) for c in entry.get("corrections", [])],
        local_detail=dict(entry.get("local_detail", {})),
        spec=cell_spec,
        definitions=list(entry.get("definitions", [])),
    )
