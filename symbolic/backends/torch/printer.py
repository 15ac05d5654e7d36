"""The torch backend's printer: per-neuron expressions as whole-tensor torch code."""

from __future__ import annotations

from collections.abc import Mapping

import sympy as sp

from symbolic.backends.torch.primitives import FORMS, REDUCTIONS
from symbolic.printing import Printer


class TorchPrinter(Printer):
    """Tensors: ``torch.tanh(Zc)``, ``torch.sigmoid(Zu)``."""

    forms = FORMS
    functions = REDUCTIONS
    sqrt = "torch.sqrt"

    def _print(self, expr, **kwargs):
        # torch's functions take tensors only: a primitive of a constant is its value
        if isinstance(expr, sp.Expr) and expr.is_number and not expr.is_Rational:
            return self._value(expr)
        return super()._print(expr, **kwargs)


def code(expr: sp.Expr, names: Mapping[str, str] | None = None) -> str:
    """The torch code of ``expr``, with symbols renamed through ``names``."""
    return TorchPrinter(names).doprint(expr)
