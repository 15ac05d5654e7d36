"""What a backend is: the record the registry holds (:mod:`symbolic.backends`).

A backend turns a :class:`~symbolic.ir.Kernel` (or a cost's derivation) into the template
keys of one module: the shared keys come from :mod:`symbolic.render`, the backend adds its
layout and names the template that lays it out. It brings its own printer (the code of
each primitive) and its own folder of templates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the registry is read by every command: no SymPy at import
    from symbolic.ir import CostDerivation, Kernel
    from symbolic.printing import Printer


def no_helpers(used: set[str]) -> list[str]:
    """A backend whose primitives need no helper functions in the module."""
    return []


@dataclass(frozen=True)
class Backend:
    """One backend.

    Attributes:
        name: The ``--backend`` name and the module suffix (``<spec>_<name>.py``).
        printer: Prints an expression in the backend's per-lane code.
        cell: ``(kernel, shared keys) -> (template, keys)``: the layout of a cell module.
            It raises :class:`UnsupportedSpec` for a valid spec it cannot lay out.
        cost: ``(derivation, shared keys) -> (template, keys)``: the layout of a cost.
        templates: The folder of its templates (searched before the shared partials).
        helpers: The helper sources its per-lane code of the named primitives needs.
        lane_buffers: Feedforward values live in per-lane buffers (``_<name>_buf``)
            rather than in whole arrays named like the symbols.
        grads_in_step: Vector-parameter gradients are accumulated inside the step
            (so the step reads what they read), not summed after the loop.
        needs: Importable modules the generated code needs (validation skips the
            backend, with a message, where one is missing).
        adapt: For a module that does not take NumPy arrays (a framework's tensors):
            ``module -> view`` of it with the NumPy contract (arrays in, arrays out),
            through which validation runs it. Its pairs ``forward_<how>`` /
            ``backward_<how>`` are checked too (e.g. the gradients through autograd).
    """

    name: str
    printer: type[Printer]
    cell: Callable[[Kernel, dict], tuple[str, dict]]
    cost: Callable[[CostDerivation, dict], tuple[str, dict]]
    templates: Path
    helpers: Callable[[set[str]], list[str]] = no_helpers
    lane_buffers: bool = False
    grads_in_step: bool = False
    needs: tuple[str, ...] = ()
    adapt: Callable[[ModuleType], object] | None = None

    def missing(self) -> list[str]:
        """The modules of :attr:`needs` that cannot be imported here."""
        import importlib.util

        return [name for name in self.needs if importlib.util.find_spec(name) is None]

    def code(self, expr, names=None) -> str:
        """``expr`` in this backend's per-lane code, symbols renamed through ``names``."""
        return self.printer(names).doprint(expr)


class UnsupportedSpec(ValueError):
    """A valid spec that a backend cannot generate code for yet (never wrong code)."""


def templates_root() -> Path:
    """The shared templates: the repository's ``templates/`` or the installed copy."""
    import importlib.resources

    repo = Path(__file__).resolve().parent.parent.parent / "templates"
    if repo.is_dir():
        return repo
    return Path(str(importlib.resources.files("symbolic") / "templates"))


def lane_shaped(kernel) -> set[str]:
    """The names of a cell's kernel that are (B, n_out) arrays at every step: products,
    states, seeds, and whatever is computed from one of them. The others (a constant, an
    expression of vector parameters) are a number or a vector, broadcast where used."""
    from symbolic import ir, naming
    from symbolic.ir import Assign, MatVec

    model = kernel.cell
    lanes = {s.target for s in kernel.pre} | set(model.states)
    lanes |= {naming.upstream(model.output)}
    lanes |= {naming.carried(s) for s in model.states}
    if model.input_elementwise:
        lanes.add(model.input)
    for stmt in kernel.forward + kernel.backward:
        if isinstance(stmt, MatVec) or (isinstance(stmt, Assign) and ir.reads(stmt) & lanes):
            lanes.add(stmt.target)
    return lanes


def statement(stmt, code: Callable, names: dict[str, str] | None = None) -> dict:
    """A statement as template keys: a product's parts, or an assignment's printed code
    (``code`` is the backend's printer function)."""
    from symbolic.ir import MatVec

    if isinstance(stmt, MatVec):
        return {
            "matvec": True,
            "target": stmt.target,
            "matrix": stmt.matrix,
            "arg": stmt.arg,
            "transpose": stmt.transpose,
            "comment": stmt.comment,
            "code": "",
        }
    return {
        "matvec": False,
        "target": stmt.target,
        "code": code(stmt.expr, names),
        "comment": stmt.comment,
    }


def refuse_sized_broadcasts(kernel, backend: str) -> None:
    """Raise :class:`UnsupportedSpec` for a cell with named sizes where a value of
    parameters and numbers only, of a width other than n_out, would be broadcast over
    the lanes (the whole-tensor backends broadcast to (B, n_out) only)."""
    from symbolic import ir, naming, sizes

    model = kernel.cell
    if not model.sizes:
        return
    widths = sizes.kernel_widths(kernel, naming.adjoint)
    lanes = lane_shaped(kernel)
    found = [
        st.target
        for st in kernel.pre + kernel.forward + kernel.backward
        if widths[st.target] != sizes.N_OUT and st.target not in lanes
    ]
    found += [
        param
        for param, expr in kernel.vector_grads
        if model.shapes[param][0] != sizes.N_OUT and not ir.names(expr) & lanes
    ]
    if found:
        line = next((eq.line for eq in model.equations if eq.name == found[0]), None)
        where = f"{model.path}:{line}" if line else str(model.path)
        raise UnsupportedSpec(
            f"{where}: '{found[0]}': the {backend} backend broadcasts a value of "
            "parameters and numbers only to n_out units, and this one has "
            f"{widths.get(found[0], 'another number of')} units; generate this spec with "
            "--backend numpy or numba"
        )
