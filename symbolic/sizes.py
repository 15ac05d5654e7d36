"""Named sizes: a cell's widths other than n_in and n_out (the ``[sizes]`` table).

Input: a spec's ``[sizes]`` table, the table form of its ``[params]`` entries, and its
equations as :mod:`symbolic.parse` read them. Output: each size's default, each
parameter's shape and each vector symbol's width, in size names (``"n_in"``,
``"n_out"`` or a name of ``[sizes]``)::

    [sizes]
    hidden = 64                                            # the default width

    [params]
    W = { kind = "matrix", shape = ["hidden", "n_in"] }    # rows, columns
    b = { kind = "vector", size = "hidden" }
    V = "matrix"                                           # (n_out, what it multiplies)

An equation's width is the width of the vectors it combines (a projection has its
matrix's rows, a reduction its argument's width); they must agree, the output and the
states have n_out units, and a matrix's columns are the width of what it multiplies.
The plain forms keep their meaning: ``"vector"`` has n_out units, ``"matrix"`` n_out rows
and the width of what it multiplies as columns.

A generated module reads each named size from the shape of one parameter
(:func:`sources`); ``param_shapes`` and ``init_params`` take it as a keyword argument
with the spec's default.
"""

from __future__ import annotations

import keyword

import sympy as sp

N_IN = "n_in"
N_OUT = "n_out"
#: Names a size may not take: the generated modules' arguments and locals where sizes
#: are in scope (``param_shapes``, ``init_params``, ``_check_params``), and ``in``/``out``
#: (``_n_in``, ``_n_out`` are the layer's sizes in generated code).
RESERVED = frozenset(
    {N_IN, N_OUT, "in", "out", "seed", "dtype", "steps", "rng", "shapes", "params", "name"}
    | {"value", "shape", "got", "missing", "extra", "first", "np", "math", "numba", "torch"}
)
#: The largest default a size may have.
MAX_DEFAULT = 1 << 20


class SizeError(ValueError):
    """A width that does not fit: ``line``, ``symbol`` and ``message`` as a spec error
    reports them (:mod:`symbolic.parse` adds the file)."""

    def __init__(self, line: int | None, symbol: str, message: str):
        super().__init__(message)
        self.line = line
        self.symbol = symbol
        self.message = message


def read_default(name: str, value: object) -> int:
    """A ``[sizes]`` entry's default: a positive integer (raises ValueError otherwise)."""
    if not name.isidentifier() or keyword.iskeyword(name) or not name.isascii():
        raise ValueError("a size's name must be an identifier")
    if name in RESERVED or name.startswith("_"):
        raise ValueError("the size's name is reserved for generated code")
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_DEFAULT:
        raise ValueError(f"a size's default must be an integer from 1 to {MAX_DEFAULT}")
    return value


def read_param(value: object, sizes: dict[str, int]) -> tuple[str, tuple[str, ...] | None]:
    """A ``[params]`` entry: its kind and the shape it declares in size names (None:
    inferred, the plain ``"matrix"`` and ``"vector"``). Raises ValueError on a bad one."""
    if isinstance(value, str):
        if value not in ("matrix", "vector"):
            raise ValueError(f"unknown parameter kind {value!r} (expected 'matrix' or 'vector')")
        return value, None
    if not isinstance(value, dict):
        raise ValueError("a parameter is 'matrix', 'vector' or a table with a 'kind'")
    kind = value.get("kind")
    key = {"matrix": "shape", "vector": "size"}.get(kind)
    if key is None:
        raise ValueError(f"unknown parameter kind {kind!r} (expected 'matrix' or 'vector')")
    extra = sorted(set(value) - {"kind", key})
    if extra:
        raise ValueError(f"unknown key {extra[0]!r} for a {kind} (expected 'kind' and '{key}')")
    if key not in value:
        raise ValueError(f"a {kind} table needs '{key}'")
    if kind == "vector":
        return kind, (_size_name(value["size"], sizes, rows=True),)
    shape = value["shape"]
    if not isinstance(shape, list) or len(shape) != 2:
        raise ValueError("a matrix's shape is [rows, columns], two size names")
    return kind, (_size_name(shape[0], sizes, rows=True), _size_name(shape[1], sizes, rows=False))


def _size_name(value: object, sizes: dict[str, int], *, rows: bool) -> str:
    allowed = [N_OUT, *sizes] if rows else [N_IN, N_OUT, *sizes]
    if not isinstance(value, str) or value not in allowed:
        what = "rows and vector sizes" if rows else "columns"
        raise ValueError(
            f"unknown size {value!r} for {what} (expected one of {', '.join(allowed)}; "
            "declare a size in [sizes])"
        )
    return value


def infer(cell, declared: dict[str, tuple[str, ...]]) -> tuple[dict, dict]:
    """Every parameter's shape and every vector symbol's width, in size names.

    Args:
        cell: The checked :class:`~symbolic.model.Cell` (its equations in order).
        declared: The shapes the spec's tables give (parameters absent: inferred).

    Returns:
        ``(shapes, widths)``: ``param -> (rows, cols)`` or ``(size,)``, and ``symbol ->
        size`` for the input, the states, the vector parameters, the projections and the
        equations.

    Raises:
        SizeError: Vectors of different widths combined, a matrix multiplying a vector
            of another width than its columns, an output or state not n_out wide.
    """
    # an elementwise input has n_out units (n_in = n_out, checked at run time)
    widths: dict[str, str] = {cell.input: N_OUT if cell.input_elementwise else N_IN}
    widths.update({state: N_OUT for state in cell.states})
    rows = {p: declared.get(p, (N_OUT,))[0] for p in cell.params}
    for name, kind in cell.params.items():
        if kind == "vector":
            widths[name] = rows[name]
    widths.update({proj.name: rows[proj.matrix] for proj in cell.projections})
    columns: dict[str, tuple[str, int]] = {}
    for eq in cell.equations:
        widths[eq.name] = _width(eq, widths)
    for proj in cell.projections:
        width = widths[proj.arg]
        if cell.input_elementwise and proj.arg == cell.input:
            width = N_IN  # a matrix multiplying the input has n_in columns, as it says
        _check_columns(proj, width, declared.get(proj.matrix), columns)
    for name, target in [(cell.output, cell.output), *cell.states.items()]:
        if widths[target] != N_OUT:
            eq = cell.equation(target)
            raise SizeError(
                eq.line,
                target,
                f"'{target}' has {widths[target]} units, but the "
                f"{'output' if name == target else f'next value of state {name!r}'} has n_out",
            )
    shapes = {}
    for name, kind in cell.params.items():
        if kind == "vector":
            shapes[name] = (rows[name],)
        else:
            shapes[name] = (rows[name], columns[name][0])
    return shapes, widths


def _width(eq, widths: dict[str, str]) -> str:
    """An equation's width: the one width of the vectors it combines (n_out if none)."""
    seen: dict[str, str] = {}
    for symbol in sorted(eq.expr.free_symbols, key=lambda s: s.name):
        width = widths.get(symbol.name)
        if width is not None:
            seen.setdefault(width, symbol.name)
    if len(seen) > 1:
        (wa, a), (wb, b) = sorted(seen.items(), key=lambda kv: kv[1])[:2]
        raise SizeError(
            eq.line,
            eq.name,
            f"'{a}' has {wa} units and '{b}' has {wb} units: an elementwise expression "
            "combines vectors of one size",
        )
    return next(iter(seen), N_OUT)


def _check_columns(proj, width: str, declared, columns: dict) -> None:
    """A matrix's columns: declared, or the width of the first vector it multiplies;
    every vector it multiplies must have that width."""
    if declared is not None:
        columns.setdefault(proj.matrix, (declared[1], None))
    first, line = columns.setdefault(proj.matrix, (width, proj.line))
    if width != first:
        where = f"its shape says {first}" if line is None else f"line {line}"
        raise SizeError(
            proj.line,
            proj.matrix,
            f"matrix '{proj.matrix}' multiplies '{proj.arg}' of {width} units, but its "
            f"columns are {first} ({where})",
        )


def sources(cell) -> dict[str, tuple[str, int]]:
    """Where a module reads each named size (and n_out): ``size -> (param, axis)``, the
    first parameter in spec order with that size on an axis (rows first)."""
    found: dict[str, tuple[str, int]] = {}
    for axis in (0, 1):
        for name, shape in cell.shapes.items():
            if axis < len(shape) and shape[axis] != N_IN:
                found.setdefault(shape[axis], (name, axis))
    return found


def values(cell, n_in: int, n_out: int, named: dict[str, int] | None = None) -> dict:
    """Size name -> number: n_in, n_out and each named size (its default unless given)."""
    out = {N_IN: n_in, N_OUT: n_out}
    out.update(cell.sizes)
    out.update(named or {})
    return out


def shape(cell, param: str, numbers: dict[str, int]) -> tuple[int, ...]:
    """A parameter's shape in numbers (``numbers`` from :func:`values`)."""
    return tuple(numbers[s] for s in cell.shapes[param])


def width_of(expr: sp.Expr, widths: dict[str, str]) -> str:
    """The width of an expression of the kernel (n_out when it names no vector)."""
    for symbol in sorted(expr.free_symbols, key=lambda s: s.name):
        if symbol.name in widths:
            return widths[symbol.name]
    return N_OUT


def kernel_widths(kernel, adjoint) -> dict[str, str]:
    """The width of every value a cell's kernel computes, in size names.

    A product ``arg @ W.T`` has W's rows, its adjoint ``arg @ W`` W's columns; an
    assignment the width of the vectors it reads (the adjoint ``d<v>`` of a constant:
    the width of ``v``).

    Args:
        kernel: A :class:`~symbolic.ir.Kernel`.
        adjoint: :func:`symbolic.naming.adjoint` (the name of a symbol's adjoint).
    """
    cell = kernel.cell
    widths = dict(cell.widths)
    owner = {adjoint(name): width for name, width in cell.widths.items()}
    for stmt in [*kernel.pre, *kernel.forward, *kernel.backward]:
        matrix = getattr(stmt, "matrix", None)
        if matrix is not None:
            rows, cols = cell.shapes[matrix]
            widths[stmt.target] = cols if stmt.transpose else rows
            continue
        known = {s.name for s in stmt.expr.free_symbols} & set(widths)
        if known:
            widths[stmt.target] = widths[min(known)]
        else:
            widths[stmt.target] = owner.get(stmt.target, widths.get(stmt.target, N_OUT))
    return widths
