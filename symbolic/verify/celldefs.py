"""A spec's cell written as a document's ``definitions``: its equations in the notation.

A notation section whose model is a spec (``model = "spec:elman"``) needs no hand-written
``definitions`` for its corrected formulas: :func:`cell_definitions` writes each of the
cell's equations and the cost in the document's own notation, through the section's
``variables`` (a value's printed name is the variable whose ``key`` is its name in the
model), as :mod:`symbolic.verify.specmodel` lays the cell out:

- an equation ``z = W@x + U@h + b`` of the cell is, at unit ``i`` of layer ``l`` and step
  ``t``, ``{}^t z_i^l = \\sum_{j=0} W_{ij}^{l-1} \\cdot {}^t a_j^{l-1} + \\sum_{j=0}
  U_{ij}^l \\cdot {}^{t-1} a_j^l + b_i^l``: a matrix that multiplies the input reads the
  output of the layer below (its layer is ``l-1``), a state is the value of its equation
  one step before, another matrix reads layer ``l``; a primitive is the notation's
  function of that name (``tanh`` is ``\\tanh``);
- the cost is ``C = \\sum_{t=1}^{T} \\sum_{i=0}`` of the cost spec's ``per_unit`` at the
  top layer's output and the target.

A cell the notation cannot write this way (a value or a parameter no variable names, or
with other indices; a primitive without a LaTeX name; a primitive applied to an
expression the document names no value for; a coefficient that is not an integer) gets
no definitions, and :class:`Untranslatable` says why. The definitions are not trusted:
every correction derived from them is parsed back and verified like the document's own.
"""

from __future__ import annotations

import re

import sympy as sp

from symbolic.primitives import is_primitive_call
from symbolic.verify.latex import Add, Call, Index, Mul, Num, Pow, Sum, Sym
from symbolic.verify.notation import Notation, Section
from symbolic.verify.printer import Printer

TARGET = "y"
"""The target's key in the unrolled models (:mod:`symbolic.verify.specmodel`)."""

# the indices a value of each role must have in the notation (see notation.INDEX_KINDS)
_VALUE = ("time", "layer", "unit")
_VECTOR = ("layer", "unit")
_INPUT_MATRIX = ("layer", "unit+1", "unit")
_MATRIX = ("layer", "unit", "unit")


class Untranslatable(ValueError):
    """The spec's cell cannot be written in the document's notation (the message says
    which value of the spec, and why)."""


def cell_definitions(notation: Notation, section: Section) -> list[str]:
    """The section's spec, cell and cost, as ``definitions`` in the document's notation.

    Raises:
        Untranslatable: The notation does not name what the cell needs (see the module
            docstring).
    """
    spec = section.spec
    if spec is None:
        raise Untranslatable(f"section {section.name!r} has no spec model")
    writer = _Writer(notation, section)
    printer = Printer(notation, section)
    out = []
    for eq in spec.cell.equations:
        lhs = writer.value(eq.name, Index(notation.time))
        writer.source = eq.source
        out.append(printer.equation(lhs, writer.expr(eq.expr)))
    out.append(printer.equation(Sym(notation.cost), writer.cost()))
    return out


class _Writer:
    """SymPy expressions of one cell's equations as formula ASTs of the notation."""

    def __init__(self, notation: Notation, section: Section):
        self.notation, self.section = notation, section
        self.spec = section.spec
        self.cell = section.spec.cell
        self.projections = {p.name: p for p in self.cell.projections}
        self.functions = {prim: name for name, prim in notation.functions.items()}
        self.unit, self.summed = (Index(u) for u in notation.units[:2])
        self.layer = Index(notation.layers[0])
        self.source = ""  # the spec's text of the expression written (terms keep its order)

    def printed(self, key: str, indices: tuple[str, ...], alone: bool = False) -> str:
        """The printed name of the variable whose key is ``key``, checked for its
        indices (``alone``: the time index may be missing, an untimed target)."""
        for name, var in self.section.variables.items():
            if var.key != key:
                continue
            wanted = {indices, indices[1:]} if alone else {indices}
            if var.indices not in wanted:
                raise Untranslatable(
                    f"{name} ({key} of the spec) has indices {list(var.indices)}, "
                    f"where the spec's {key} has {list(indices)}"
                )
            return name
        raise Untranslatable(f"no variable of the section is the spec's {key}")

    def value(self, key: str, time: Index, layer: Index | None = None, unit=None) -> Sym:
        """``{}^{time} key_{unit}^{layer}`` (an equation's value)."""
        name = self.printed(key, _VALUE)
        return Sym(name, time, layer or self.layer, (unit or self.unit,))

    def symbol(self, name: str):
        # one symbol of an equation: a projection, a vector, a state or a value
        layer, t = self.layer, Index(self.notation.time)
        if name in self.projections:
            return self.projection(self.projections[name])
        if self.cell.params.get(name) == "vector":
            return Sym(self.printed(name, _VECTOR), None, layer, (self.unit,))
        if name in self.cell.states:
            return self.value(self.cell.states[name], Index(t.letter, -1))
        if name in self.cell.equation_names:
            return self.value(name, t)
        raise Untranslatable(f"the spec's {name} is read outside a projection")

    def projection(self, proj) -> Sum:
        """``M@v``: ``\\sum_{j=0} M_{ij}^{l'} \\cdot v_j`` (see the module docstring)."""
        cell, t, layer, j = self.cell, self.notation.time, self.layer, self.summed
        if proj.arg == cell.input:
            indices, at = _INPUT_MATRIX, Index(layer.letter, -1)
            vector = self.value(cell.output, Index(t), at, j)
        elif proj.arg in cell.states:
            indices, at = _MATRIX, layer
            vector = self.value(cell.states[proj.arg], Index(t, -1), layer, j)
        else:
            indices, at = _MATRIX, layer
            vector = self.value(proj.arg, Index(t), layer, j)
        matrix = Sym(self.printed(proj.matrix, indices), None, at, (self.unit, j))
        return Sum(j.letter, Index(None, 0), None, Mul((matrix, vector)))

    def expr(self, expr: sp.Expr):
        """A SymPy expression of the cell (integer coefficients, primitive calls)."""
        if expr.is_Integer:
            value = int(expr)
            return Num(value) if value >= 0 else Add(((-1, Num(-value)),))
        if expr.is_Symbol:
            return self.symbol(expr.name)
        if isinstance(expr, sp.Add):
            return Add(tuple(self.signed(a) for a in self.ordered(expr.args)))
        if isinstance(expr, sp.Mul):
            sign, term = self.signed(expr)
            return term if sign > 0 else Add(((-1, term),))
        if isinstance(expr, sp.Pow) and expr.exp.is_Integer and expr.exp > 0:
            return Pow(self.expr(expr.base), int(expr.exp))
        if is_primitive_call(expr):
            return self.call(expr)
        raise Untranslatable(f"the notation cannot write {expr}")

    def ordered(self, args) -> list:
        """Terms or factors in the order the spec writes them (``W@x + U@h + b``, not
        SymPy's), positive terms first."""

        def position(arg: sp.Expr) -> int:
            names = [
                self.projections[s.name].matrix if s.name in self.projections else s.name
                for s in arg.free_symbols
            ]
            found = [m.start() for n in names for m in re.finditer(rf"\b{n}\b", self.source)]
            return min(found, default=len(self.source))

        return sorted(args, key=lambda a: (bool(a.as_coeff_Mul()[0] < 0), position(a)))

    def signed(self, expr: sp.Expr) -> tuple[int, object]:
        """A term as its sign and its product."""
        coeff, rest = expr.as_coeff_Mul()
        if not coeff.is_Integer:
            raise Untranslatable(f"the coefficient {coeff} of {expr} is not an integer")
        factors = [Num(abs(int(coeff)))] if abs(coeff) != 1 else []
        factors += [self.expr(f) for f in self.ordered(sp.Mul.make_args(rest)) if f != 1]
        node = factors[0] if len(factors) == 1 else Mul(tuple(factors) or (Num(1),))
        return (-1 if coeff < 0 else 1), node

    def call(self, expr: sp.Expr) -> Call:
        """``tanh(z)`` as ``\\tanh({}^t z_i^l)``: a primitive of a named value."""
        prim = type(expr).__name__
        if prim not in self.functions:
            raise Untranslatable(f"the notation's [functions] give {prim} no LaTeX name")
        (arg,) = expr.args
        if not arg.is_Symbol or arg.name in self.projections:
            raise Untranslatable(
                f"{prim}({arg}): the derivation names the argument of a function, and the "
                "document names no value for this one (give it an equation of its own)"
            )
        return Call(self.functions[prim], 0, self.expr(arg))

    def cost(self) -> Sum:
        """``\\sum_{t=1}^{T} \\sum_{i=0}`` of the cost's ``per_unit``, on the top layer."""
        notation, cost = self.notation, self.spec.cost
        t, top = Index(notation.time), Index(notation.top)
        target = self.printed(TARGET, ("time", "unit@top"), alone=True)
        timed = "time" in self.section.variables[target].indices
        values = {
            sp.Symbol(cost.prediction): self.value(self.cell.output, t, top),
            sp.Symbol(cost.target): Sym(target, t if timed else None, None, (self.unit,)),
        }
        writer = _Values(self, values)
        writer.source = cost.source
        body = writer.expr(cost.per_unit)
        inner = Sum(self.unit.letter, Index(None, 0), None, body)
        return Sum(t.letter, Index(None, 1), Index(notation.steps), Mul((inner,)))


class _Values(_Writer):
    """The cost's writer: its two symbols are given values."""

    def __init__(self, writer: _Writer, values: dict):
        self.__dict__.update(writer.__dict__)
        self.values = values

    def expr(self, expr: sp.Expr):
        if expr in self.values:
            return self.values[expr]
        return super().expr(expr)
