"""Translation validation: every rendered module is run before it is written.

Input: a checked model and the text of a module rendered from it. Output: nothing when
the module computes what the model says; a :class:`Mismatch` (a generator bug) naming the
spec, the backend, the value that disagrees and by how much otherwise.

What a module must show, on a small random float64 problem:

- its forward equals :mod:`symbolic.evaluate`, a plain interpreter of the parsed
  equations (sample by sample, step by step) that shares nothing with derivation,
  lowering, the passes or the backends' plans;
- every parameter gradient, ``dx`` and every ``dstate0`` equal central finite differences
  of that interpreter along random directions (Richardson-extrapolated, so the check is
  tight: a relative error of 1e-6);
- it is a function: two calls give the same result, its arguments are left as they were,
  and nothing it returns shares memory with its cache (a caller may edit it in place);
- a NaN in the input or a parameter reaches the output where the interpreter says so
  (no backend turns NaN into a number), and an empty batch or layer runs;
- the Numba module agrees with the NumPy one (1e-9), on the NaN problem too.

A spec whose interpreter gives no finite value at any random point (``log`` of a linear
function, say) cannot be validated: that is the spec's problem, reported as
:class:`CannotValidate` (generate refuses it unless told ``--no-validate``).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import platform
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import numpy as np

from symbolic import evaluate, inits
from symbolic.model import RECURRENT, ROW, Cell, Cost

#: The problem's sizes: distinct, so that a confusion of axes shows.
T, B, N_IN, N_OUT = 3, 2, 3, 5
#: Forward and agreement tolerance (relative to max(1, |value|)), float64.
VALUE_RTOL = 1e-9
#: Gradient tolerance against finite differences (relative).
GRAD_RTOL = 1e-6
#: Parameter scales tried, largest first, until the interpreter's values are finite.
SCALES = (0.5, 0.25, 0.1)


class ValidationFailure(Exception):
    """Base of what validation reports."""


@dataclass
class Mismatch(ValidationFailure):
    """A generated module that does not compute its model: a generator bug."""

    spec: str
    module: str
    value: str
    error: float | None = None
    tolerance: float | None = None
    detail: str = ""

    def __str__(self) -> str:
        by = ""
        if self.error is not None:
            by = f" by {self.error:.3g} (tolerance {self.tolerance:.0e})"
        detail = f": {self.detail}" if self.detail else ""
        return f"{self.spec}: {self.module}: {self.value} is wrong{by}{detail}"


@dataclass
class CannotValidate(ValidationFailure):
    """A spec whose reference values are not finite at any random point tried."""

    spec: str
    reason: str

    def __str__(self) -> str:
        return f"{self.spec}: cannot validate: {self.reason}"


# --- loading ----------------------------------------------------------------------------


def cache_root() -> Path:
    """derivgen's private cache (``$XDG_CACHE_HOME/derivgen`` or ``~/.cache/derivgen``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "derivgen"


def stage(text: str, filename: str, root: Path | None = None) -> Path:
    """Write a module's text to a private folder named by its content, once.

    The same text always lands at the same path and is never rewritten, so Numba's
    on-disk cache, keyed by the file and its modification time, stays warm across runs.
    """
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]
    folder = (root or cache_root() / "validate") / digest
    path = folder / filename
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return path
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{filename}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load(path: Path) -> ModuleType:
    """Import a module file under a private name (never a name a user imports)."""
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    name = f"_derivgen_check_{path.stem}_{digest}"
    if name in sys.modules and getattr(sys.modules[name], "__file__", None) == str(path):
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


# --- problems ---------------------------------------------------------------------------


@dataclass
class Problem:
    """One random point: parameters, input, initial states, and the weights of the
    scalar whose gradient is checked, L = <wa, a> + sum_s <ws_s, final state_s>."""

    params: dict[str, np.ndarray]
    x: np.ndarray
    state0: dict[str, np.ndarray]
    wa: np.ndarray
    wstate: dict[str, np.ndarray]
    a: np.ndarray = field(default=None)
    final: dict[str, np.ndarray] = field(default_factory=dict)


def named_sizes(cell: Cell) -> dict[str, int]:
    """The problem's named sizes (``[sizes]``): 6, 7, ... (distinct from T, B, N_IN and
    N_OUT, so that a confusion of axes shows)."""
    return {name: 6 + i for i, name in enumerate(cell.sizes)}


def _shapes(cell: Cell, n_in: int, n_out: int) -> dict[str, tuple[int, ...]]:
    if cell.sizes:
        numbers = {"n_in": n_in, "n_out": n_out} | named_sizes(cell)
        return {name: tuple(numbers[s] for s in shape) for name, shape in cell.shapes.items()}
    sizes = {"in": n_in, "out": n_out}
    shapes = {}
    for name, kind in cell.params.items():
        if kind == "matrix":
            rows, cols = cell.matrix_shape(name)
            shapes[name] = (sizes[rows], sizes[cols])
        else:
            shapes[name] = (n_out,)
    return shapes


def _n_in(cell: Cell, n_out: int = N_OUT) -> int:
    """The input's size in a problem: an elementwise input has the output's."""
    return n_out if cell.input_elementwise else N_IN


def _lead(cell: Cell, batch: int = B) -> tuple[int, ...]:
    return (T, batch) if cell.kind == RECURRENT else (batch,)


def problem(cell: Cell, seed: int = 0) -> Problem:
    """A random problem where the interpreter's values are finite and moderate."""
    for attempt, scale in enumerate(SCALES):
        rng = np.random.default_rng([seed, attempt])
        shapes = _shapes(cell, _n_in(cell), N_OUT)
        params = {k: scale * rng.standard_normal(s) for k, s in shapes.items()}
        x = rng.standard_normal((*_lead(cell), _n_in(cell)))
        state0 = {s: scale * rng.standard_normal((B, N_OUT)) for s in cell.states}
        wa = rng.standard_normal((*_lead(cell), N_OUT))
        wstate = {s: rng.standard_normal((B, N_OUT)) for s in cell.states}
        prob = Problem(params, x, state0, wa, wstate)
        with np.errstate(all="ignore"):
            prob.a, prob.final = evaluate.forward(cell, params, x, state0)
        values = [prob.a, *prob.final.values()]
        if all(np.all(np.isfinite(v)) and np.max(np.abs(v), initial=0) < 1e6 for v in values):
            return prob
    raise CannotValidate(
        str(cell.path),
        "the equations give NaN, inf or values over 1e6 at every random point tried "
        f"(parameters of scale {', '.join(map(str, SCALES))}); `--no-validate` writes the "
        "modules unchecked",
    )


# --- comparisons ------------------------------------------------------------------------


def _rel(got: np.ndarray, want: np.ndarray) -> float:
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    if got.size == 0:
        return 0.0
    if not np.all(np.isfinite(got)):
        return float("inf")
    return float(np.max(np.abs(got - want) / np.maximum(1.0, np.abs(want))))


class _Checker:
    """The checks of one module, each raising a :class:`Mismatch` that names it."""

    def __init__(self, spec: str, module: str):
        self.spec = spec
        self.module = module

    def fail(self, value: str, error=None, tolerance=None, detail: str = "") -> None:
        raise Mismatch(self.spec, self.module, value, error, tolerance, detail)

    def close(self, value: str, got, want, rtol: float = VALUE_RTOL) -> None:
        got = np.asarray(got)
        want = np.asarray(want)
        if got.shape != want.shape:
            self.fail(value, detail=f"shape {got.shape}, expected {want.shape}")
        error = _rel(got, want)
        if not error <= rtol:
            self.fail(value, error, rtol, _worst(got, want))

    def same_finite(self, value: str, got, want) -> None:
        """NaN and inf where ``want`` has them, numbers elsewhere."""
        bad = np.isfinite(got) != np.isfinite(want)
        if np.any(bad):
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            self.fail(
                value,
                detail=f"at {where} it is {np.asarray(got)[where]!r} where the reference "
                f"is {np.asarray(want)[where]!r} (NaN must propagate)",
            )

    def dtype(self, value: str, array, dtype=np.float64) -> None:
        if not isinstance(array, np.ndarray) or array.dtype != dtype:
            got = getattr(array, "dtype", type(array).__name__)
            self.fail(value, detail=f"dtype {got}, expected {np.dtype(dtype)}")


def _worst(got, want) -> str:
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        diff = np.where(np.isfinite(got), np.abs(got - want), np.inf)
    where = np.unravel_index(int(np.argmax(diff)), got.shape) if got.ndim else ()
    where = tuple(int(i) for i in where)
    return f"at {where} it is {got[where]!r}, the reference says {want[where]!r}"


def _arrays(value) -> list[np.ndarray]:
    """Every array inside nested dicts, tuples and lists."""
    if isinstance(value, np.ndarray):
        return [value]
    if isinstance(value, Mapping):
        return [a for v in value.values() for a in _arrays(v)]
    if isinstance(value, tuple | list):
        return [a for v in value for a in _arrays(v)]
    return []


def _copy(value):
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return type(value)(_copy(v) for v in value)
    return value


# --- cells ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """A module's pair of entry points checked together (``forward``/``backward``, or
    another pair such as ``forward_scan``/``backward_scan``)."""

    module: ModuleType
    forward: str = "forward"
    backward: str = "backward"


def entries(module: ModuleType) -> list[Entry]:
    """Every forward/backward pair a module offers."""
    pairs = [Entry(module)]
    for name in sorted(vars(module)):
        if name.startswith("forward_") and hasattr(module, "backward_" + name[8:]):
            pairs.append(Entry(module, name, "backward_" + name[8:]))
    return pairs


def _call_forward(entry: Entry, cell: Cell, params, x, state0):
    forward = getattr(entry.module, entry.forward)
    if cell.kind == RECURRENT:
        return forward(params, x, state0)
    return forward(params, x)


def _call_backward(entry: Entry, cell: Cell, params, cache, da, dstate):
    backward = getattr(entry.module, entry.backward)
    if cell.kind == RECURRENT:
        return backward(params, cache, da, dstate)
    grads, dx = backward(params, cache, da)
    return grads, dx, {}


def _objective(cell: Cell, prob: Problem) -> Callable[[dict, np.ndarray, dict], float]:
    def value(params, x, state0) -> float:
        a, final = evaluate.forward(cell, params, x, state0)
        total = float(np.sum(prob.wa * a))
        for s, v in final.items():
            total += float(np.sum(prob.wstate[s] * v))
        return total

    return value


def _directional(f: Callable[[float], float], h: float) -> tuple[float, float]:
    """The derivative of f at 0: central differences with steps h, h/2 and h/4,
    Richardson-extrapolated in pairs (error O(h**4) for a smooth f). Returns the finer
    estimate and how far the two estimates are apart: near a kink or a jump (relu,
    step) they disagree, and the caller draws another direction."""
    d1, d2, d4 = ((f(s) - f(-s)) / (2 * s) for s in (h, h / 2, h / 4))
    coarse = (4 * d2 - d1) / 3
    fine = (4 * d4 - d2) / 3
    return fine, abs(fine - coarse)


def check_gradients(cell: Cell, prob: Problem, grads, dx, dstate0, check: _Checker, seed=0):
    """Each gradient against finite differences of the interpreter along random
    directions (a direction that crosses a kink of relu or step is drawn again)."""
    objective = _objective(cell, prob)
    base = (prob.params, prob.x, prob.state0)
    scale = float(np.sum(np.abs(prob.wa * prob.a)))
    scale += sum(float(np.sum(np.abs(prob.wstate[s] * v))) for s, v in prob.final.items())
    groups: list[tuple[str, np.ndarray, np.ndarray, Callable]] = []
    for k, v in prob.params.items():
        groups.append((f"the gradient of '{k}'", v, grads.get(k), lambda d, k=k: ({k: d}, 0, {})))
    groups.append(("dx", prob.x, dx, lambda d: ({}, d, {})))
    for s, v in prob.state0.items():
        groups.append((f"dstate0['{s}']", v, dstate0.get(s), lambda d, s=s: ({}, 0, {s: d})))
    rng = np.random.default_rng([seed, 7])

    def f_of(dp, dxv, ds):
        def f(eps):
            params = {k: v + eps * dp[k] if k in dp else v for k, v in base[0].items()}
            x = base[1] + eps * dxv
            state0 = {s: v + eps * ds[s] if s in ds else v for s, v in base[2].items()}
            with np.errstate(all="ignore"):
                return objective(params, x, state0)

        return f

    for label, value, grad, split in groups:
        if not isinstance(grad, np.ndarray) or grad.shape != value.shape:
            check.fail(
                label,
                detail=f"got {getattr(grad, 'shape', grad)!r}, expected an array "
                f"of shape {value.shape}",
            )
        check.dtype(label, grad)
        # near a kink (sign, abs, relu of a value close to 0) every direction may cross
        # it at the first step: smaller steps then
        for step in FD_STEPS:
            if _checked_along_directions(label, value, grad, split, f_of, step, scale, rng, check):
                break
        else:
            check.fail(
                label,
                detail="finite differences are not stable along any of four "
                "random directions (the model is not smooth at the drawn point)",
            )


#: The finite-difference steps tried in turn (the second near a kink of the model).
FD_STEPS = (1e-4, 1e-6)


def _checked_along_directions(label, value, grad, split, f_of, step, scale, rng, check) -> bool:
    """Compare ``grad`` with finite differences of step ``step`` along one of four random
    directions (a direction that crosses a kink of relu or step is drawn again): False
    when none is smooth at this step; a mismatch fails the check."""
    for _ in range(4):
        direction = rng.standard_normal(value.shape)
        fd, spread = _directional(f_of(*split(direction)), step)
        tol = GRAD_RTOL * (abs(fd) + 1e-3 * scale + 1e-9)
        if spread > tol / 4:
            continue  # not smooth along this direction at this point: draw again
        analytic = float(np.sum(grad * direction))
        if not abs(analytic - fd) <= tol:
            check.fail(
                label,
                abs(analytic - fd) / max(abs(fd), 1e-3 * scale, 1e-12),
                GRAD_RTOL,
                f"along a random direction the module gives {analytic!r}, finite "
                f"differences of the reference {fd!r}",
            )
        return True
    return False


def _run(module, cell: Cell, prob: Problem):
    a, cache = _call_forward(module, cell, prob.params, prob.x, prob.state0)
    grads, dx, dstate0 = _call_backward(
        module, cell, prob.params, cache, prob.wa, prob.wstate if cell.states else None
    )
    return a, cache, grads, dx, dstate0


def check_cell(cell: Cell, module: ModuleType, label: str, seed: int = 0) -> dict:
    """Every check of one cell module, for each of its entry points; returns the
    results of ``forward``/``backward`` on the problem (for the agreement of backends)."""
    check_init(cell, module, _Checker(str(cell.path), label), seed)
    results = None
    for entry in entries(module):
        name = label if entry.forward == "forward" else f"{label}.{entry.forward}"
        found = check_entry(cell, entry, name, seed)
        results = results or found
    return results


def check_init(cell: Cell, module: ModuleType, check: _Checker, seed: int = 0) -> None:
    """``init_params`` draws what the spec's ``[init]`` says: every parameter in order,
    of its shape, float64, each value in its init's range (:func:`symbolic.inits.problem`)."""
    steps = 2 * T + 1
    params = module.init_params(_n_in(cell), N_OUT, seed=seed, steps=steps, **named_sizes(cell))
    if not isinstance(params, dict) or list(params) != list(cell.params):
        check.fail("init_params()", detail=f"expected the keys {list(cell.params)}")
    shapes = _shapes(cell, _n_in(cell), N_OUT)
    for name, kind in cell.params.items():
        label = f"init_params()[{name!r}]"
        check.dtype(label, params[name])
        if params[name].shape != shapes[name]:
            check.fail(label, detail=f"shape {params[name].shape}, expected {shapes[name]}")
        what = inits.problem(inits.of(cell.init, name, kind), params[name], steps)
        if what:
            check.fail(label, detail=what)


def check_entry(cell: Cell, module: Entry, label: str, seed: int = 0) -> dict:
    """Every check of one forward/backward pair."""
    check = _Checker(str(cell.path), label)
    prob = problem(cell, seed)
    inputs = _copy((prob.params, prob.x, prob.state0, prob.wa, prob.wstate))
    a, cache, grads, dx, dstate0 = _run(module, cell, prob)
    _untouched(check, prob, inputs)
    check.dtype(f"the output '{cell.output}'", a)
    check.close(f"the output '{cell.output}'", a, prob.a)
    if cell.kind == RECURRENT:
        final = cache.get("state") if isinstance(cache, dict) else None
        if not isinstance(final, dict) or set(final) != set(cell.states):
            check.fail("cache['state']", detail=f"expected the keys {sorted(cell.states)}")
        for s in cell.states:
            check.close(f"the final state '{s}'", final[s], prob.final[s])
    if set(grads) != set(cell.params) or list(grads) != list(cell.params):
        check.fail("the gradients' keys", detail=f"{list(grads)}, expected {list(cell.params)}")
    check_gradients(cell, prob, grads, dx, dstate0, check, seed)

    # A function of its arguments: the same result again, the arguments untouched,
    # nothing returned shared with the cache (and a caller's edits change nothing).
    returned = [a, *_arrays(grads), dx, *_arrays(dstate0)]
    named = dict(_named(cell, (a, cache, grads, dx, dstate0)))
    for name, array in named.items():
        for key, held in _named_arrays(cache, "cache"):
            if isinstance(array, np.ndarray) and np.shares_memory(array, held):
                check.fail(
                    name,
                    detail=f"it shares memory with {key}: editing it in place "
                    "would change what backward reads",
                )
    expected = _copy((a, grads, dx, dstate0))
    for array in returned:
        if isinstance(array, np.ndarray):
            array.fill(7.0)
    again = _run(module, cell, prob)
    for name, got, want in _pairs(cell, again, expected):
        if not np.array_equal(got, want, equal_nan=True):
            check.fail(name, detail="a second call on the same arguments gave another result")

    nan = check_nan(cell, module, prob, check)
    check_empty(cell, module, check)
    check_sizes(cell, module, check)
    return {"run": again, "nan": nan}


def check_sizes(cell: Cell, module, check: _Checker) -> None:
    """An elementwise input of another size than the output is refused by ``forward``
    with a ValueError naming ``x``."""
    if not cell.input_elementwise:
        return
    n_in = N_OUT + 1
    params = {k: np.zeros(s) for k, s in _shapes(cell, n_in, N_OUT).items()}
    x = np.zeros((*_lead(cell), n_in))
    try:
        _call_forward(module, cell, params, x, None)
    except ValueError as exc:
        if str(exc).startswith("x:"):
            return
        check.fail("forward with n_in != n_out", detail=f"ValueError not naming x: {exc}")
    except Exception as exc:  # noqa: BLE001 - any other failure is the finding
        check.fail("forward with n_in != n_out", detail=f"{type(exc).__name__}: {exc}")
    check.fail("forward with n_in != n_out", detail="accepted an elementwise input of n_in units")


def _untouched(check: _Checker, prob: Problem, inputs) -> None:
    """The arguments of forward and backward are as they were before the calls."""
    after = (prob.params, prob.x, prob.state0, prob.wa, prob.wstate)
    for name, got, want in zip(
        ("params", "x", "state0", "da", "dstate"), after, inputs, strict=True
    ):
        for g, w in zip(_arrays(got), _arrays(want), strict=True):
            if not np.array_equal(g, w):
                check.fail(f"the argument {name}", detail="forward or backward changed it")


def _named(cell: Cell, run):
    a, _, grads, dx, dstate0 = run
    yield f"the output '{cell.output}'", a
    for k in cell.params:
        yield f"the gradient of '{k}'", grads[k]
    yield "dx", dx
    for s in cell.states:
        yield f"dstate0['{s}']", dstate0[s]


def _named_arrays(value, prefix: str):
    if isinstance(value, np.ndarray):
        yield prefix, value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from _named_arrays(v, f"{prefix}[{k!r}]")


def _pairs(cell: Cell, run, expected):
    a, _, grads, dx, dstate0 = run
    ea, egrads, edx, edstate0 = expected
    yield f"the output '{cell.output}'", a, ea
    for k in cell.params:
        yield f"the gradient of '{k}'", grads[k], egrads[k]
    yield "dx", dx, edx
    for s in cell.states:
        yield f"dstate0['{s}']", dstate0[s], edstate0[s]


def _nan_problem(cell: Cell, prob: Problem) -> Problem:
    params = {k: v.copy() for k, v in prob.params.items()}
    vector = next((k for k, kind in cell.params.items() if kind == "vector"), None)
    if vector is not None:
        params[vector][-1] = np.nan
    x = prob.x.copy()
    x[(0,) * (x.ndim - 1) + (0,)] = np.nan
    out = Problem(params, x, prob.state0, prob.wa, prob.wstate)
    with np.errstate(all="ignore"):
        out.a, out.final = evaluate.forward(cell, params, x, prob.state0)
    return out


def check_nan(cell: Cell, module, prob: Problem, check: _Checker):
    """NaN in the input and in a vector parameter: non-finite exactly where the
    interpreter is."""
    bad = _nan_problem(cell, prob)
    with np.errstate(all="ignore"):
        run = _run(module, cell, bad)
    check.same_finite(f"the output '{cell.output}' (NaN in x and a parameter)", run[0], bad.a)
    return run


def check_empty(cell: Cell, module, check: _Checker) -> None:
    """An empty batch and an empty layer run and give empty results."""
    for batch, n_out, what in ((0, N_OUT, "an empty batch"), (B, 0, "an empty layer")):
        params = {k: np.zeros(s) for k, s in _shapes(cell, _n_in(cell, n_out), n_out).items()}
        x = np.zeros((*_lead(cell, batch), _n_in(cell, n_out)))
        state0 = {s: np.zeros((batch, n_out)) for s in cell.states}
        da = np.zeros((*_lead(cell, batch), n_out))
        try:
            a, cache = _call_forward(module, cell, params, x, state0 or None)
            grads, dx, dstate0 = _call_backward(
                module,
                cell,
                params,
                cache,
                da,
                {s: np.zeros((batch, n_out)) for s in cell.states} if cell.states else None,
            )
        except Exception as exc:  # noqa: BLE001 - any failure is the finding
            check.fail(f"a call with {what}", detail=f"{type(exc).__name__}: {exc}")
        if a.shape != da.shape or dx.shape != x.shape:
            check.fail(f"a call with {what}", detail=f"shapes {a.shape} and {dx.shape}")
        for k, s in _shapes(cell, _n_in(cell, n_out), n_out).items():
            if grads[k].shape != s or not np.all(grads[k] == 0):
                check.fail(f"the gradient of '{k}' with {what}", detail="expected zeros")


# --- costs ------------------------------------------------------------------------------


def check_cost(cost: Cost, module: ModuleType, label: str, seed: int = 0) -> dict:
    """The cost's value against the interpreter, its gradient against finite
    differences, for (B, n) and (T, B, n) predictions."""
    check = _Checker(str(cost.path), label)
    results = {}
    for shape in ((B, N_OUT), (T, B, N_OUT)):
        for attempt, (lo, hi) in enumerate(((0.1, 0.9), (-1.0, 1.0), (0.3, 0.7))):
            rng = np.random.default_rng([seed, attempt, len(shape)])
            a, y = rng.uniform(lo, hi, shape), rng.uniform(0, 1, shape)
            extra = cost_inputs(cost, shape, rng)
            with np.errstate(all="ignore"):
                want = evaluate.cost(cost, a, y, extra)
            if np.isfinite(want) and abs(want) < 1e6:
                break
        else:
            raise CannotValidate(
                str(cost.path), "the cost is NaN, inf or over 1e6 at every point tried"
            )
        inputs = (a.copy(), y.copy())
        extra_before = {k: v.copy() for k, v in extra.items()}
        C, da = module.loss(a, y, **extra)
        if not isinstance(C, float):
            check.fail("the cost", detail=f"a {type(C).__name__}, expected a float")
        check.close(f"the cost, shape {shape}", C, want)
        check.dtype(f"the gradient, shape {shape}", da)
        if da.shape != a.shape:
            check.fail("the gradient", detail=f"shape {da.shape}, expected {a.shape}")
        if np.shares_memory(da, a) or np.shares_memory(da, y):
            check.fail("the gradient", detail="it shares memory with an argument")
        if not (np.array_equal(a, inputs[0]) and np.array_equal(y, inputs[1])):
            check.fail("the arguments", detail="loss changed them")
        if not all(np.array_equal(extra[k], v) for k, v in extra_before.items()):
            check.fail("the named inputs", detail="loss changed them")
        _check_default_inputs(cost, module, check, a, y)
        scale = float(np.sum(np.abs(da * a))) + 1e-9
        for _ in range(4):
            direction = rng.standard_normal(shape)

            def f(eps, direction=direction, a=a, y=y, extra=extra):
                with np.errstate(all="ignore"):
                    return evaluate.cost(cost, a + eps * direction, y, extra)

            fd, spread = _directional(f, 1e-4)
            if spread > GRAD_RTOL * (abs(fd) + 1e-3 * scale) / 4:
                continue
            analytic = float(np.sum(da * direction))
            if not abs(analytic - fd) <= GRAD_RTOL * (abs(fd) + 1e-3 * scale):
                check.fail(
                    f"the gradient, shape {shape}",
                    abs(analytic - fd) / max(abs(fd), 1e-12),
                    GRAD_RTOL,
                    f"along a random direction the module gives {analytic!r}, finite "
                    f"differences of the reference {fd!r}",
                )
            break
        else:
            check.fail("the gradient", detail="finite differences are not stable")
        results[shape] = (C, da)
    for batch in (0,):
        C, da = module.loss(np.zeros((batch, N_OUT)), np.zeros((batch, N_OUT)))
        if da.shape != (batch, N_OUT):
            check.fail("a call with an empty batch", detail=f"shape {da.shape}")
    return results


def cost_inputs(cost: Cost, shape: tuple[int, ...], rng) -> dict[str, np.ndarray]:
    """Random values of a cost's named inputs for a prediction of ``shape``: a row input
    ``shape[:-1]``, a unit input ``(n,)``; positive, away from 0 (a divisor, a log)."""
    return {
        name: rng.uniform(0.5, 1.5, shape[:-1] if kind == ROW else shape[-1:])
        for name, kind in cost.inputs.items()
    }


def _check_default_inputs(cost: Cost, module: ModuleType, check: _Checker, a, y) -> None:
    """``loss(a, y)`` without the named inputs is the cost with every input ones."""
    if not cost.inputs:
        return
    with np.errstate(all="ignore"):
        want = evaluate.cost(cost, a, y)
    check.close(f"the cost without its inputs (ones), shape {a.shape}", module.loss(a, y)[0], want)


# --- agreement ---------------------------------------------------------------------------


def check_agreement(model: Cell | Cost, label: str, mine: dict, numpy_results: dict) -> None:
    """The results of another backend's module equal the NumPy module's (1e-9), with
    NaN where it has NaN."""
    check = _Checker(str(model.path), label)
    if isinstance(model, Cost):
        for shape, (C, da) in numpy_results.items():
            check.close(f"the cost, shape {shape}, against the NumPy module", mine[shape][0], C)
            check.close(
                f"the gradient, shape {shape}, against the NumPy module", mine[shape][1], da
            )
        return
    for name, got, want in _pairs(
        model, mine["run"], numpy_results["run"][:1] + numpy_results["run"][2:]
    ):
        check.close(f"{name}, against the NumPy module", got, want)
    nan_mine, nan_numpy = mine["nan"], numpy_results["nan"]
    for name, got, want in _pairs(model, nan_mine, (nan_numpy[0], *nan_numpy[2:])):
        check.same_finite(f"{name} (NaN in x and a parameter), against the NumPy module", got, want)


def check(model: Cell | Cost, module: ModuleType, label: str, seed: int = 0) -> dict:
    """Every check of one module of ``model``."""
    if isinstance(model, Cost):
        return check_cost(model, module, label, seed)
    return check_cell(model, module, label, seed)


# --- running: worker processes ----------------------------------------------------------

#: Variables set for the validating processes: Numba checks every array index (an index
#: out of bounds is an IndexError, not a corrupted heap) and compiles without LLVM's
#: optimizations, and the pools do not spin. What validation checks is the code's
#: arithmetic, which optimization does not change (the contractions into fused
#: multiply-adds it may make are far inside the tolerances); compiling unoptimized takes
#: half the time (on 2 cores, with bounds checked: the GRN's Numba module validated in 3.8
#: s against 7.4, gru_layer_norm's 18 kernels in 10.0 s against 21.5). The modules as
#: users import them, optimized, are what the test suite runs.
WORKER_ENV = {
    "NUMBA_BOUNDSCHECK": "1",
    "NUMBA_OPT": "0",
    "OPENBLAS_THREAD_TIMEOUT": "1",
    "OMP_WAIT_POLICY": "PASSIVE",
}


@dataclass
class Job:
    """The modules of one spec to validate, NumPy first (the others are compared with it).

    Attributes:
        spec: The spec's path (as errors name it).
        text: The spec's text (parsed again by the worker).
        modules: ``(backend, staged file)`` pairs.
    """

    spec: str
    text: str
    modules: list[tuple[str, str]]


@dataclass
class Verdict:
    """What validation said of one module: ``ok``, ``cannot`` (the spec's values are not
    finite anywhere: exit status 2) or ``bug`` (a generator bug: exit status 3)."""

    spec: str
    module: str
    status: str
    message: str = ""


# --- remembered verdicts -----------------------------------------------------------------
# ``derivgen generate`` validates every module before writing it. A spec's modules whose
# validation passed are remembered, so that regenerating after an edit validates only
# what changed: the record's name is a digest of everything the verdict depends on (the
# spec's text, each module's text, derivgen's own code, the Python and library versions
# and the machine), so any change to one of them validates again. A record stands for
# one of the job's pieces (see :func:`pieces`): a module with the NumPy module it was
# compared with. So the same records serve a spec validated whole or in pieces.


def remembered(job: Job) -> bool:
    """Whether every module of ``job`` passed validation before, exactly as they are."""
    try:
        return all(_record(piece).is_file() for piece in pieces(job))
    except OSError:
        return False


def remember(job: Job) -> None:
    """Record that every module of ``job`` passed (nothing if the cache is not writable)."""
    try:
        for piece in pieces(job):
            path = _record(piece)  # an empty file: its name is the record
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
    except OSError:
        pass


def pieces(job: Job) -> list[Job]:
    """A spec's modules split into one job per module other than NumPy's, each with
    NumPy's first where it is there (each is compared with it): the pieces run in
    parallel, so that validating one spec takes its slowest module's time (a Numba
    compilation), not the sum of all. Measured on 2 cores: the GRN's four modules in
    8.3 s split against 14.2 whole; but the 22 built-in specs in 25.8 s split against
    22.4 whole (NumPy's module runs once per piece): ``derivgen generate`` splits only
    when fewer specs than workers are left to validate."""
    reference = [m for m in job.modules if m[0] == "numpy"]
    others = [m for m in job.modules if m[0] != "numpy"]
    if len(others) < 2:
        return [job]
    return [Job(job.spec, job.text, [*reference, other]) for other in others]


def _record(job: Job) -> Path:
    digest = hashlib.sha256(_fingerprint().encode())
    for part in (
        job.text,
        *(f"{b}\0{Path(p).read_text(encoding='utf-8')}" for b, p in job.modules),
    ):
        digest.update(hashlib.sha256(part.encode("utf-8")).digest())
    return cache_root() / "validate" / "verdicts" / digest.hexdigest()


@functools.cache
def _fingerprint() -> str:
    """What a verdict depends on besides the spec and its modules: derivgen's code (every
    source file of the package), the versions of Python and of the libraries the modules
    and the checks run on, and the machine."""
    from importlib import metadata

    parts = [sys.version, platform.platform(), platform.machine(), _cpu_model()]
    for name in ("numpy", "sympy", "numba", "llvmlite", "jax", "jaxlib", "torch"):
        try:
            parts.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{name} none")
    package = Path(__file__).resolve().parent
    for path in sorted(package.rglob("*.py")):
        parts.append(f"{path.relative_to(package)} {hashlib.sha256(path.read_bytes()).hexdigest()}")
    return "\n".join(parts)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            return next((line for line in handle if line.startswith("model name")), "")
    except OSError:
        return platform.processor()


def _describe(exc: BaseException, path: str) -> str:
    """An exception raised by a generated module, with the module's line that raised it."""
    import traceback

    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == path]
    where = f" at line {frames[-1].lineno}: {frames[-1].line}" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


def _adapted(backend: str, module: ModuleType):
    """A built-in backend's module as validation calls it (NumPy arrays in and out)."""
    from symbolic import backends

    if backend not in backends.BUILTIN:  # a backend registered elsewhere takes arrays
        return module
    adapt = backends.get(backend).adapt
    return module if adapt is None else adapt(module)


def validate_job(job: Job, seed: int = 0, report=None) -> list[Verdict]:
    """Validate one spec's modules in this process."""
    from symbolic import parse

    model = parse.loads(job.text, job.spec)
    verdicts = []
    results: dict[str, dict] = {}
    for backend, path in job.modules:
        label = Path(path).name
        if report:
            report("start", label)
        try:
            module = _adapted(backend, load(Path(path)))
            results[backend] = check(model, module, label, seed)
            if backend != "numpy" and "numpy" in results:
                check_agreement(model, label, results[backend], results["numpy"])
            verdict = Verdict(job.spec, label, "ok")
        except CannotValidate as exc:
            verdict = Verdict(job.spec, label, "cannot", str(exc))
        except Mismatch as exc:
            verdict = Verdict(job.spec, label, "bug", str(exc))
        except Exception as exc:  # noqa: BLE001 - whatever the module raised is the finding
            verdict = Verdict(
                job.spec, label, "bug", f"{job.spec}: {label}: {_describe(exc, str(path))}"
            )
        verdicts.append(verdict)
        if report:
            report("done", verdict)
    return verdicts


def _worker() -> int:
    """``python -m symbolic.validate``: one job as a JSON line on stdin at a time, a JSON
    line per event on stdout, ``{"done": spec}`` after each job; ends at the end of stdin."""
    import json
    import warnings

    warnings.simplefilter("ignore")  # Numba's performance hints are not findings

    def report(event, value):
        if event == "start":
            print(json.dumps({"start": value}), flush=True)
        else:
            print(json.dumps({"verdict": value.__dict__}), flush=True)

    while line := sys.stdin.readline():
        if line.strip():
            job = Job(**json.loads(line))
            validate_job(job, report=report)
            print(json.dumps({"done": job.spec}), flush=True)
    return 0


def _weight(job: Job) -> int:
    # a Numba module costs a compilation; a NumPy module next to nothing
    return sum(1 if backend == "numpy" else 10 for backend, _ in job.modules)


#: Jobs one worker process validates before a fresh one continues (compiled code and
#: loaded modules stay in a process until it ends).
CHUNK = 32


def run(jobs: list[Job], workers: int | None = None, progress: bool = True) -> list[Verdict]:
    """Validate every job in worker processes (one per core, at most ``workers``).

    Each worker process takes one job at a time from a shared queue, the heaviest first,
    and gives way to a fresh process after ``CHUNK`` jobs. A worker that dies (a crash
    inside compiled code) takes the blame for the module it was checking: a ``bug``
    verdict naming it; the other jobs go on in a fresh process.
    """
    import threading

    if not jobs:
        return []
    count = max(1, min(workers or default_workers(), len(jobs)))
    pool = _Pool(jobs, progress)
    threads = [threading.Thread(target=pool.drive) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    pool.bar.close()
    return pool.verdicts


def default_workers() -> int:
    """Worker processes :func:`run` starts by default: one per core, at most 4."""
    return max(1, min(os.cpu_count() or 1, 4))


class _Pool:
    """What the threads of :func:`run` share: the queue of jobs left (heaviest first), the
    verdicts so far and the progress bar, behind one lock. Each thread drives one worker
    process at a time, handing it one job at a time, so that no process holds jobs
    another could be running."""

    def __init__(self, jobs: list[Job], progress: bool):
        import collections
        import threading

        from symbolic.progress import Progress

        self.queue = collections.deque(sorted(jobs, key=_weight, reverse=True))
        self.env = dict(os.environ, **WORKER_ENV)
        total = sum(len(j.modules) for j in jobs)
        self.verdicts: list[Verdict] = []
        self.lock = threading.Lock()
        self.bar = Progress(total, "validate", enabled=progress)

    def take(self) -> Job | None:
        with self.lock:
            return self.queue.popleft() if self.queue else None

    def drive(self) -> None:
        while (job := self.take()) is not None:
            self.drive_process(job)

    def drive_process(self, job: Job) -> None:
        """One worker process validates ``job``, then the next ones from the queue (at most
        ``CHUNK``); if it dies, the module it was at is blamed."""
        import json
        import subprocess

        with tempfile.TemporaryFile("w+") as errors:
            proc = subprocess.Popen(
                [sys.executable, "-m", "symbolic.validate"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
                env=self.env,
                text=True,
            )
            done, last, pending = 0, job, [Path(p).name for _, p in job.modules]
            try:
                while job is not None:
                    last, pending = job, [Path(p).name for _, p in job.modules]
                    proc.stdin.write(json.dumps(job.__dict__) + "\n")
                    proc.stdin.flush()
                    for line in proc.stdout:
                        event = json.loads(line)
                        if "done" in event:
                            break
                        if "verdict" in event:
                            verdict = Verdict(**event["verdict"])
                            pending.remove(verdict.module)
                            with self.lock:
                                self.verdicts.append(verdict)
                                self.bar.update(1, module=verdict.module)
                    else:  # the output ended before the job did: the process died
                        break
                    done += 1
                    job = self.take() if done < CHUNK else None
                proc.stdin.close()
            except OSError:  # the process died before it could read the job
                pass
            code = proc.wait()
            errors.seek(0)
            tail = errors.read().strip().splitlines()[-1:]
        if job is not None or code != 0:
            self.blame(last, pending[0] if pending else None, code, tail)

    def blame(self, job: Job, module: str | None, code: int, tail: list[str]) -> None:
        """A ``bug`` verdict for the module a dead worker was checking: the first of its
        job without a verdict (or its last module, if it died once the job was done)."""
        module = module or Path(job.modules[-1][1]).name
        message = f"{job.spec}: {module}: the validating process died (exit status {code})"
        spec = job.spec
        with self.lock:
            self.verdicts.append(Verdict(spec, module, "bug", message + (
                f": {tail[0]}" if tail else "")))  # fmt: skip
            self.bar.update(1, module=module)


if __name__ == "__main__":
    sys.exit(_worker())
