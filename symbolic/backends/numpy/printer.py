"""The NumPy backend's printer: per-neuron expressions as NumPy array code."""

from __future__ import annotations

from collections.abc import Mapping

import sympy as sp

from symbolic.backends.numpy.primitives import FORMS
from symbolic.printing import Printer


class NumpyPrinter(Printer):
    """Arrays and ufuncs: ``np.tanh(Zc)``, ``_np_sigmoid(Zu)``."""

    forms = FORMS
    sqrt = "np.sqrt"


def code(expr: sp.Expr, names: Mapping[str, str] | None = None) -> str:
    """The NumPy code of ``expr``, with symbols renamed through ``names``."""
    return NumpyPrinter(names).doprint(expr)
