"""Expressions -> code text: what every backend's printer shares.

Input: SymPy expressions of the kernel IR. Output: Python source strings, one per
expression, handed to the templates. Nothing else in derivgen turns a SymPy object into
code: no ``str(expr)`` and no f-strings of expressions reach a template.

:class:`Printer` holds everything the backends' printers share: numbers, sums and products
(balanced when long), powers, and a symbol printed through a name map, so the same
expression can read per-step locals (``G``) or whole-sequence buffers (``G_seq``). Each
backend's printer (``symbolic.backends.<name>.printer``) adds its primitives' code, one
entry per primitive in its table :attr:`Printer.forms`, and of the functions over the
layer's units in :attr:`Printer.functions`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sympy as sp
from sympy.printing.precedence import precedence
from sympy.printing.pycode import PythonCodePrinter

from symbolic import primitives, reductions


class Printer(PythonCodePrinter):
    """Prints per-neuron expressions as Python code; a backend's subclass sets
    :attr:`forms` (its table: primitive name -> an entry whose ``call`` is the code,
    ``{0}`` the printed argument) and :attr:`sqrt`."""

    printmethod = "_derivgen"
    forms: Mapping[str, Any] = {}
    #: The backend's code of the functions of :mod:`symbolic.reductions` (``{0}``,
    #: ``{1}`` the printed arguments).
    functions: Mapping[str, Any] = {}
    sqrt = "math.sqrt"

    def __init__(self, names: Mapping[str, str] | None = None):
        super().__init__({"fully_qualified_modules": False, "standard": "python3"})
        self.names = dict(names or {})

    def _print_Symbol(self, expr):
        return self.names.get(expr.name, expr.name)

    def _print(self, expr, **kwargs):
        # Primitives are dispatched here, before SymPy's own printers of functions
        # that happen to share a name (tanh, exp, log).
        if primitives.is_primitive_call(expr):
            return self._call(type(expr).__name__, expr.args[0])
        if reductions.name_of(expr) is not None:
            return self._function(expr)
        if isinstance(expr, sp.Expr) and expr.is_number and not expr.is_Rational:
            # a constant such as log(2) from d(2**z)/dz: its value, not a call
            return self._value(expr)
        if isinstance(expr, sp.Function) and type(expr).__name__ in primitives.PRIMITIVES:
            # SymPy's own exp, log, tanh (from diff of a power, say): the primitive's code
            return self._call(type(expr).__name__, expr.args[0])
        return super()._print(expr, **kwargs)

    def _value(self, expr: sp.Expr) -> str:
        """A constant expression as its float value."""
        value = complex(expr.evalf(20))
        if value.imag != 0:
            raise TypeError(f"the constant {expr} is not real")
        if abs(value.real) == float("inf"):
            return "1e999" if value.real > 0 else "-1e999"
        return repr(value.real)

    def _call(self, name: str, arg: sp.Expr) -> str:
        if name not in self.forms:
            raise TypeError(f"{type(self).__name__} has no code for the primitive {name}")
        return self.forms[name].call.format(self._print(arg))

    #: Terms of a sum, or factors of a product, printed flat; longer ones are printed as
    #: a balanced tree of brackets, so that Python's parser (and compiler) never meets a
    #: chain hundreds of operations deep (a gradient summed over a 1000-equation spec).
    FLAT = 16

    def _print_Add(self, expr, order=None):
        terms = self._as_ordered_terms(expr, order=order)
        if len(terms) <= self.FLAT:
            return super()._print_Add(expr, order=order)
        signed = []
        for term in terms:
            text = self._print(term)
            signed.append(("-", text[1:]) if text.startswith("-") else ("+", text))
        return self._balanced(signed)

    def _balanced(self, signed: list[tuple[str, str]]) -> str:
        if len(signed) <= self.FLAT:
            head = ("-" if signed[0][0] == "-" else "") + signed[0][1]
            return head + "".join(f" {sign} {text}" for sign, text in signed[1:])
        half = len(signed) // 2
        return f"({self._balanced(signed[:half])}) + ({self._balanced(signed[half:])})"

    def _print_Mul(self, expr):
        factors = list(expr.args)
        if len(factors) <= self.FLAT:
            return super()._print_Mul(expr)
        half = len(factors) // 2
        left = self._print(sp.Mul(*factors[:half], evaluate=False))
        right = self._print(sp.Mul(*factors[half:], evaluate=False))
        return f"({left})*({right})"

    def _function(self, expr) -> str:
        name = type(expr).__name__
        if name not in self.functions:
            raise TypeError(f"{type(self).__name__} has no code for the function {name}")
        return self.functions[name].call.format(*(self._print(a) for a in expr.args))

    def _print_Function(self, expr):
        raise TypeError(f"no code for the function {type(expr).__name__}: not a primitive")

    def _print_Rational(self, expr):
        try:
            value = float(expr)
        except OverflowError:  # a derived constant beyond float64: IEEE's infinity
            value = float("inf") if expr > 0 else float("-inf")
        if abs(value) == float("inf"):
            return "1e999" if value > 0 else "-1e999"
        if sp.Rational(value) == expr:
            return repr(value)
        return f"({expr.p}/{expr.q})"

    def _print_Integer(self, expr):
        if abs(expr) > 2**1023:
            return self._print_Rational(expr)
        return str(int(expr))

    def _print_Float(self, expr):
        value = float(expr)
        if abs(value) == float("inf"):
            return "1e999" if value > 0 else "-1e999"
        return repr(value)

    def _print_Half(self, expr):
        return "0.5"

    def _print_Pow(self, expr, rational=False):
        base, exp = expr.as_base_exp()
        prec = precedence(expr)
        if exp == -1:
            return f"1/{self.parenthesize(base, prec)}"
        if exp.is_Integer and exp < 0:
            return f"1/{self.parenthesize(base, prec)}**{int(-exp)}"
        if exp == sp.Rational(1, 2):
            return f"{self.sqrt}({self._print(base)})"
        if exp.is_Integer:
            return f"{self.parenthesize(base, prec)}**{int(exp)}"
        return f"{self.parenthesize(base, prec)}**{self.parenthesize(exp, prec)}"


def display(text: str) -> str:
    """Text (a title, a file name, an equation as written) made safe to put inside a
    docstring or after a ``#``: printable characters as they are, but the backslash and
    the double quote escaped (so no \"\"\" can end a docstring, no backslash starts an
    escape); newlines, NUL, other control characters and invisible ones (bidi
    overrides, zero-width characters) as their escapes, so nothing starts a line of code
    or changes how the code reads."""
    out = []
    for char in text:
        if char == "\\":
            out.append("\\\\")
        elif char == '"':
            out.append('\\"')
        elif char.isprintable():
            out.append(char)
        else:
            out.append(char.encode("unicode_escape").decode("ascii"))
    return "".join(out)
