"""The JAX backend's printer: per-neuron expressions as ``jax.numpy`` array code."""

from __future__ import annotations

from collections.abc import Mapping

import sympy as sp

from symbolic.backends.jax.primitives import FORMS, REDUCTIONS
from symbolic.printing import Printer


class JaxPrinter(Printer):
    """Arrays: ``_jnp.tanh(Zc)``, ``_jax.nn.sigmoid(Zu)`` (the module imports JAX under
    underscored names, which no spec name can shadow)."""

    forms = FORMS
    functions = REDUCTIONS
    sqrt = "_jnp.sqrt"

    def _call(self, name: str, arg: sp.Expr) -> str:
        """A primitive's call; on a constant, of its float value (lax's functions, as
        ``jax.nn.sigmoid`` and ``lax.erf``, refuse integers)."""
        if arg.is_number and name in self.forms:
            return self.forms[name].call.format(self._value(arg))
        return super()._call(name, arg)


def code(expr: sp.Expr, names: Mapping[str, str] | None = None) -> str:
    """The JAX code of ``expr``, with symbols renamed through ``names``."""
    return JaxPrinter(names).doprint(expr)
