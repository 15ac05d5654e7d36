"""An independent reference evaluator of a parsed model: the oracle of validation.

Input: a checked :class:`~symbolic.model.Cell` or :class:`~symbolic.model.Cost` and
concrete float64 arrays. Output: what the model computes, sample by sample and step by
step.

It is deliberately plain. It walks each parsed equation's SymPy tree node by node (sum,
product, power, number, symbol, primitive call, reduction over the units), evaluates
primitive calls with the primitives' NumPy *references* and reductions with
:mod:`symbolic.reductions`' (never the code the backends emit), and computes every
``W@v`` as the matrix times one sample's vector (a reduction, over that vector's units). It shares nothing with derivation,
lowering, the passes, the printers or the backends' plans, so that a generated module
that agrees with it (and with finite differences of it) is right for a reason that does
not depend on the generator being right.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import sympy as sp

from symbolic import primitives, reductions
from symbolic.model import RECURRENT, ROW, Cell, Cost


class EvaluationError(ValueError):
    """An expression node the evaluator does not know (a parser/evaluator mismatch)."""


def expression(expr: sp.Expr, env: Mapping[str, np.ndarray | float]) -> np.ndarray | float:
    """The value of one parsed expression, with every symbol looked up in ``env``."""
    if isinstance(expr, sp.Symbol):
        return env[expr.name]
    if expr.is_Number or expr.is_NumberSymbol:
        return float(expr)
    if expr.is_Add:
        total = expression(expr.args[0], env)
        for arg in expr.args[1:]:
            total = total + expression(arg, env)
        return total
    if expr.is_Mul:
        product = expression(expr.args[0], env)
        for arg in expr.args[1:]:
            product = product * expression(arg, env)
        return product
    if expr.is_Pow:
        base, exp = expr.args
        b = np.asarray(expression(base, env), dtype=np.float64)
        if exp.is_Integer:
            n = int(exp)
            return np.power(b, n) if n >= 0 else 1.0 / np.power(b, -n)
        return np.power(b, expression(exp, env))
    name = primitives.name_of(expr)
    if name is not None and len(expr.args) == 1:
        arg = np.asarray(expression(expr.args[0], env), dtype=np.float64)
        return primitives.PRIMITIVES[name].reference(arg)
    name = reductions.name_of(expr)
    if name is not None:
        # over the units: the last axis of the arguments (a sample's vector, or a cost's
        # (B, n) array), with the table's NumPy reference
        args = [np.asarray(expression(a, env), dtype=np.float64) for a in expr.args]
        return reductions.FUNCTIONS[name].reference(*args)
    raise EvaluationError(f"the reference evaluator cannot read {type(expr).__name__}: {expr}")


def step(
    cell: Cell, params: Mapping[str, np.ndarray], x: np.ndarray, states: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Every symbol's value for one sample at one step: ``x`` is (n_in,), each state
    (n_out,). Projections are computed when their equation is reached."""
    env: dict[str, np.ndarray | float] = {cell.input: x}
    env.update(states)
    for name, kind in cell.params.items():
        if kind == "vector":
            env[name] = params[name]
    pending = list(cell.projections)
    widths = _widths(cell, params)
    for eq in cell.equations:
        # every projection whose vector is known by now
        for proj in list(pending):
            if proj.arg in env:
                env[proj.name] = params[proj.matrix] @ env[proj.arg]
                pending.remove(proj)
        value = expression(eq.expr, env)
        width = widths.get(eq.name, widths["n_out"])
        env[eq.name] = np.broadcast_to(np.asarray(value, dtype=np.float64), (width,)).copy()
    return env


def _n_out(cell: Cell, params: Mapping[str, np.ndarray]) -> int:
    return _sizes(cell, params)["n_out"]


def _sizes(cell: Cell, params: Mapping[str, np.ndarray]) -> dict[str, int]:
    """Each size name's number, read from the parameters' shapes (``[sizes]``)."""
    if not cell.sizes:
        return {"n_out": next(iter(params.values())).shape[0]}
    found = {}
    for name, shape in cell.shapes.items():
        for size, number in zip(shape, params[name].shape, strict=True):
            found.setdefault(size, number)
    return found


def _widths(cell: Cell, params: Mapping[str, np.ndarray]) -> dict[str, int]:
    """Each equation's number of units (n_out unless ``[sizes]`` says otherwise)."""
    numbers = _sizes(cell, params)
    widths = {name: numbers[size] for name, size in cell.widths.items() if size in numbers}
    return widths | {"n_out": numbers["n_out"]}


def forward(
    cell: Cell,
    params: Mapping[str, np.ndarray],
    x: np.ndarray,
    state0: Mapping[str, np.ndarray] | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The model's output for a batch: ``x`` is (B, n_in), or (T, B, n_in) for a
    recurrent cell, whose ``state0`` is ``{state: (B, n_out)}`` (None: zeros).

    Returns:
        ``(a, final)``: the output, (B, n_out) or (T, B, n_out), and the states after the
        last step (empty for a feedforward cell).
    """
    params = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    x = np.asarray(x, dtype=np.float64)
    n_out = _n_out(cell, params)
    if cell.kind != RECURRENT:
        out = np.empty((x.shape[0], n_out))
        for b in range(x.shape[0]):
            out[b] = step(cell, params, x[b], {})[cell.output]
        return out, {}
    T, B = x.shape[:2]
    states = {
        s: np.array(state0[s], dtype=np.float64) if state0 else np.zeros((B, n_out))
        for s in cell.states
    }
    out = np.empty((T, B, n_out))
    for t in range(T):
        for b in range(B):
            env = step(cell, params, x[t, b], {s: v[b] for s, v in states.items()})
            out[t, b] = env[cell.output]
            for s, target in cell.states.items():
                states[s][b] = env[target]
    return out, states


def cost(
    model: Cost, a: np.ndarray, y: np.ndarray, inputs: Mapping[str, np.ndarray] | None = None
) -> float:
    """C = the per-unit cost summed over every element, divided by the batch size (the
    batch axis is -2). ``inputs``: the cost's named inputs (a row input shaped like
    ``a`` without its last axis, a unit input ``(n,)``); a missing one is ones."""
    a = np.asarray(a, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    env = {model.prediction: a, model.target: y}
    env |= input_values(model, a.shape, inputs)
    values = expression(model.per_unit, env)
    return float(np.sum(np.broadcast_to(values, a.shape))) / a.shape[-2]


def input_values(
    model: Cost, shape: tuple[int, ...], inputs: Mapping[str, np.ndarray] | None
) -> dict[str, np.ndarray]:
    """Each named input of the cost at every element of a prediction of ``shape``: a
    row input repeated over the units, a unit input over the rows, ones if not given."""
    out = {}
    for name, kind in model.inputs.items():
        value = (inputs or {}).get(name)
        if value is None:
            out[name] = np.ones(shape)
            continue
        value = np.asarray(value, dtype=np.float64)
        out[name] = np.broadcast_to(value[..., None] if kind == ROW else value, shape)
    return out
