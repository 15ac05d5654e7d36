"""The Numba backend's printer: per-neuron expressions as scalar code in a compiled loop."""

from __future__ import annotations

from collections.abc import Mapping

import sympy as sp

from symbolic.backends.numba.primitives import FORMS, REDUCTIONS
from symbolic.printing import Printer


class NumbaPrinter(Printer):
    """Scalars: ``_tanh(Zc)``, ``math.log(x)`` (the helpers vectorize in LLVM)."""

    forms = FORMS
    functions = REDUCTIONS
    sqrt = "math.sqrt"


def code(expr: sp.Expr, names: Mapping[str, str] | None = None) -> str:
    """The Numba code of ``expr``, with symbols renamed through ``names``."""
    return NumbaPrinter(names).doprint(expr)
