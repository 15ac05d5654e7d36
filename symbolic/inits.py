"""The initialisations a cell's ``[init]`` table may name, and how one entry is read.

A spec's ``[init]`` gives a parameter's initial value, drawn by every backend's
``init_params``; a parameter it does not name keeps the default (a matrix ~ N(0,
1/fan_in), a vector ~ U(-0.1, 0.1)). Fan-in is what a matrix multiplies (its columns);
a vector enters each neuron once (fan-in 1). An entry is a name, a number, or a
one-key table giving the name's gain (or a uniform's bounds)::

    [init]
    bf = "ones"                 # zeros, ones, or a number: that constant
    Wf = "orthogonal"           # {orthogonal = g}: g x a random orthogonal matrix
    Uz = { normal = 0.5 }       # g x N(0, 1/fan_in)
    bz = "chrono"               # {chrono = g}: g x log U(1, T - 1)
    Bu = { chrono = -1 }        # (a gate that writes the state: minus the keep-gate's)
    v  = { uniform = 0.1 }      # g x U(-1, 1) / sqrt(fan_in); [lo, hi]: U(lo, hi)
    u  = "indrnn"               # U(2^(-1/T), 2^(1/T))

``chrono`` spreads a gate's retention times up to the sequence length T (Tallec &
Ollivier, 2018); ``indrnn`` is IndRNN's recurrent weight for T steps (Li et al., 2018:
the state neither vanishes nor more than doubles over the sequence). Both read T from
``init_params(..., steps=T)``; without it, :data:`DEFAULT_STEPS`.
"""

from __future__ import annotations

import math

import numpy as np

from symbolic.model import Init

#: Constant initialisations and the number each one is.
CONSTANT_NAMES = {"zeros": 0.0, "ones": 1.0}
#: Random initialisations scaled by a gain, and the parameter kinds each one fits.
GAINED = {
    "normal": ("matrix", "vector"),
    "uniform": ("matrix", "vector"),
    "orthogonal": ("matrix",),
    "chrono": ("vector",),
}
#: Initialisations with no gain.
PLAIN = {"indrnn": ("vector",)}
NAMES = (*CONSTANT_NAMES, *GAINED, *PLAIN)
#: The sequence length ``chrono`` and ``indrnn`` assume when ``init_params`` is given none.
DEFAULT_STEPS = 10
#: A parameter's initialisation when ``[init]`` does not name it, by parameter kind.
DEFAULTS = {"matrix": Init("normal", 1.0), "vector": Init("uniform", 0.1)}
_EXPECTED = (
    f"expected one of {', '.join(NAMES)}, a number, or a table such as "
    "{ normal = 0.5 } or { uniform = [-0.1, 0.1] }"
)


def read(value: object, kind: str) -> Init:
    """The initialisation an ``[init]`` entry gives a parameter of ``kind``.

    Args:
        value: The entry as TOML read it.
        kind: The parameter's kind (``matrix`` or ``vector``).

    Raises:
        ValueError: The entry is not an initialisation, or not one for ``kind``; the
            message says what was expected.
    """
    if isinstance(value, bool):
        raise ValueError(f"init {value!r}: {_EXPECTED}")
    if isinstance(value, int | float):
        return Init("constant", _finite(value, "the constant"))
    if isinstance(value, str):
        init = _named(value)
    elif isinstance(value, dict) and len(value) == 1:
        ((name, arg),) = value.items()
        init = _with_argument(name, arg)
    else:
        raise ValueError(f"init {value!r}: {_EXPECTED}")
    fits = GAINED.get(init.name) or PLAIN.get(init.name) or ("matrix", "vector")
    if kind not in fits:
        raise ValueError(f"init {init.name} is for a {' or '.join(fits)}, not a {kind}")
    return init


def of(cell_init: dict[str, Init], param: str, kind: str) -> Init:
    """The initialisation of ``param`` (of ``kind``): its ``[init]`` entry or the default."""
    return cell_init.get(param, DEFAULTS[kind])


def _named(name: str) -> Init:
    if name in CONSTANT_NAMES:
        return Init("constant", CONSTANT_NAMES[name])
    if name in GAINED:
        return Init(name, 1.0)
    if name in PLAIN:
        return Init(name)
    raise ValueError(f"unknown init {name!r}: {_EXPECTED}")


def _with_argument(name: str, arg: object) -> Init:
    if name not in GAINED:
        what = "takes no gain" if name in NAMES else "is unknown"
        raise ValueError(f"init {name!r} {what}: {_EXPECTED}")
    if name == "uniform" and isinstance(arg, list):
        if len(arg) != 2:
            raise ValueError(f"init uniform: expected the bounds [lo, hi], got {arg!r}")
        low, high = (_finite(bound, "a bound of uniform") for bound in arg)
        if not low < high:
            raise ValueError(f"init uniform: the bounds {arg!r} are not lo < hi")
        return Init("uniform", None, low, high)
    gain = _finite(arg, f"the gain of {name}")
    if gain == 0:
        raise ValueError(f'init {name}: a gain of 0 is the constant 0: write "zeros"')
    return Init(name, gain)


def _finite(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"init: {what} must be a number, got {value!r}")
    if not math.isfinite(value) or abs(value) > 1e30:
        raise ValueError(f"init: {what} must be a finite number of at most 1e30, got {value!r}")
    return float(value)


def bounds(init: Init, fan_in: int, steps: int) -> tuple[float, float] | None:
    """Where every drawn value of ``init`` lies, for a parameter of ``fan_in`` and
    sequences of ``steps`` steps (None: anywhere; a normal init)."""
    gain = 1.0 if init.value is None else init.value
    if init.name == "constant":
        return gain, gain
    if init.name == "uniform":
        if init.low is not None:
            return init.low, init.high
        return -abs(gain) / math.sqrt(fan_in), abs(gain) / math.sqrt(fan_in)
    if init.name == "chrono":
        top = gain * math.log(max(steps, 3) - 1.0)
        return min(0.0, top), max(0.0, top)
    if init.name == "indrnn":
        return 2.0 ** (-1.0 / steps), 2.0 ** (1.0 / steps)
    if init.name == "orthogonal":
        return -abs(gain), abs(gain)
    return None


def problem(init: Init, value: np.ndarray, steps: int) -> str | None:
    """What is wrong with ``value`` as a draw of ``init`` (None: nothing), for sequences
    of ``steps`` steps: a value out of the init's range, a matrix not orthogonal."""
    if not np.all(np.isfinite(value)):
        return "has values that are not finite"
    fan_in = value.shape[1] if value.ndim == 2 else 1
    span = bounds(init, fan_in, steps)
    if span is not None:
        low, high = span
        slack = 1e-12 * max(1.0, abs(low), abs(high))
        if value.size and (value.min() < low - slack or value.max() > high + slack):
            return f"has values outside [{low:.6g}, {high:.6g}] (its init is {init.name})"
    if init.name == "orthogonal":
        tall = value if value.shape[0] >= value.shape[1] else value.T
        gram = tall.T @ tall
        if not np.allclose(gram, init.value**2 * np.eye(len(gram)), atol=1e-8):
            return "is not a multiple of an orthogonal matrix (its init is orthogonal)"
    return None
