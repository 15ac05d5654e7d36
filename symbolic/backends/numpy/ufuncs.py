"""Expressions -> NumPy ufunc calls that write into buffers (three-address code).

NumPy evaluates ``G*ac + h*(1 - G)`` one operation at a time, and every operation
allocates a fresh array for its result. In a time loop that is one allocation per
operation per step, and for small arrays the call overhead, not the arithmetic, is the
cost. This module turns an expression into a short list of ufunc calls (nodes of
:mod:`.nodes`, printed by :mod:`.printer`), each writing with ``out=`` into a buffer
allocated once: the target itself where possible, a scratch buffer where a
subexpression needs one.

Before it is emitted, an expression is put in the form that needs the fewest calls:

- :func:`numpy_form`: primitives rewritten for NumPy (sigmoid(z) = 1/2 + tanh(z/2)/2,
  with the 1/2 distributed over the terms of z so it can be folded into coefficients);
- :func:`hoist`: the parts that do not change inside the loop become symbols computed
  once before it: products of parameters (``_k0 = WTu/2``) and sums of terms free of the
  state (``_s0 = WXu_x/2 + Bu/2``, computed for every step at once);
- :func:`cheapest`: the algebraic form with the fewest calls among a few candidates
  (``h + G*(ac - h)``: three calls instead of four for ``G*ac + h*(1 - G)``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

import sympy as sp

from symbolic import naming, primitives, reductions
from symbolic.backends.numpy.nodes import Call, Copy, Expr, Name, Node, Primitive, Raw, as_expr
from symbolic.backends.numpy.primitives import FORMS, REDUCTIONS


class _InPlace(Mapping[str, str]):
    """The in-place forms of the NumPy table, read live (``{i}`` the input, ``{o}`` the
    output): a primitive added to the table is seen at once."""

    def __getitem__(self, name: str) -> str:
        if name not in FORMS or not FORMS[name].out:
            raise KeyError(name)
        return FORMS[name].out

    def __iter__(self) -> Iterator[str]:
        return (name for name, form in FORMS.items() if form.out)

    def __len__(self) -> int:
        return sum(1 for _ in self)


INPLACE = _InPlace()

primitive_name = primitives.name_of


def numpy_form(expr: sp.Expr, distribute: bool = True) -> sp.Expr:
    """``expr`` with every primitive written the way the NumPy code computes it (the
    NumPy table's ``rewrite``: sigmoid in terms of tanh).

    ``distribute``: write a constant times a sum, such as sigmoid's z/2, as a sum of
    scaled terms (in a loop, where the scaled loop-invariant terms become constants);
    without it c*z stays one scaling, which costs one call less where nothing is hoisted.
    """

    def scale(c: sp.Expr, z: sp.Expr) -> sp.Expr:
        if distribute:
            return sp.Add(*[c * term for term in sp.Add.make_args(z)])
        return sp.Mul(c, z, evaluate=False)

    def rewritten(e: sp.Basic) -> bool:
        name = primitive_name(e)
        return name is not None and FORMS[name].rewrite is not None

    return expr.replace(
        rewritten,
        lambda call: FORMS[type(call).__name__].rewrite(call.args[0], scale),
    )


def _is_leaf(expr: sp.Basic) -> bool:
    return isinstance(expr, sp.Symbol) or bool(expr.is_number)


def _sign(term: sp.Expr) -> tuple[int, sp.Expr]:
    """``(-1, t)`` for a term written ``-t``, else ``(1, term)``."""
    if term.is_number:
        return 1, term
    coeff, rest = term.as_coeff_Mul()
    if coeff.is_negative:
        return -1, -term
    return 1, term


def number(expr: sp.Expr) -> Raw:
    """A number as a literal (a derived constant may overflow: ``1e999``)."""
    value = float(expr)
    if value != value or abs(value) == float("inf"):
        return Raw({float("inf"): "1e999", float("-inf"): "-1e999"}.get(value, "float('nan')"))
    return Raw(repr(value) if value != int(value) or abs(value) > 1e15 else f"{value:.1f}")


class Emitter:
    """Writes ufunc calls (:mod:`.nodes`) for expressions whose symbols live in arrays.

    Args:
        place: ``symbol name -> the array holding it``: a name (given as text), or an
            expression such as the view ``G_seq[_t]``.
        scratch: ``index -> the scratch buffer`` (same shape as the targets).
    """

    def __init__(self, place: Callable[[str], str | Expr], scratch: Callable[[int], str | Expr]):
        self.place = place
        self.scratch = scratch
        self.scratch_used = 0

    # -- leaves ------------------------------------------------------------------

    def leaf(self, expr: sp.Expr) -> Expr:
        if isinstance(expr, sp.Symbol):
            return as_expr(self.place(expr.name))
        return number(expr)

    # -- emission ----------------------------------------------------------------

    def into(
        self, expr: sp.Expr, out: str | Expr, alias: str | None = None, depth: int = 0
    ) -> list[Node]:
        """Calls that leave ``expr`` in ``out``.

        ``alias``: a symbol whose array *is* ``out``; it is read before ``out`` is first
        written (it must occur once in ``expr``).
        """
        out = as_expr(out)
        if _is_leaf(expr):
            if isinstance(expr, sp.Symbol) and expr.name == alias:
                return []
            return [Copy(out, self.leaf(expr))]
        order = self._order(alias)
        if expr.is_Add:
            return self._add(list(expr.args), out, alias, depth, order)
        if expr.is_Mul:
            return self._mul(expr, out, alias, depth, order)
        if expr.is_Pow:
            return self._pow(expr, out, alias, depth)
        name = primitive_name(expr)
        if name is not None:
            (arg,) = expr.args
            if name not in INPLACE:
                raise NotImplementedError(f"no NumPy form for {name}")
            if _is_leaf(arg) and not (isinstance(arg, sp.Symbol) and arg.name == alias):
                return [Primitive(name, self.leaf(arg), out)]
            return self.into(arg, out, alias, depth) + [Primitive(name, out, out)]
        name = reductions.name_of(expr)
        if name in REDUCTIONS and REDUCTIONS[name].out:
            return self._reduction(name, expr.args[0], out, alias, depth)
        if name is not None:
            return self._binary(name, expr.args, out, alias, depth, order)
        raise NotImplementedError(f"cannot emit {expr}")

    def _reduction(self, name, arg, out, alias, depth) -> list[Node]:
        """A reduction over the units (the last axis) of ``arg``, broadcast into ``out``
        (the argument is first left in ``out`` when it is not a leaf)."""
        if _is_leaf(arg) and not (isinstance(arg, sp.Symbol) and arg.name == alias):
            return [Primitive(name, self.leaf(arg), out)]
        return self.into(arg, out, alias, depth) + [Primitive(name, out, out)]

    def _binary(self, name, args, out, alias, depth, order) -> list[Node]:
        """``maximum(a, b)`` or ``minimum(a, b)``: symmetric, so the argument that holds
        the alias (or is not a leaf) goes into ``out`` first."""
        first, second = sorted(args, key=order)
        ufunc = "np." + name
        if _is_leaf(first) and _is_leaf(second):
            # an elementwise ufunc may write over an input it reads
            return [Call(ufunc, (self.leaf(first), self.leaf(second)), out)]
        if _is_leaf(first) and not (alias is not None and first == sp.Symbol(alias)):
            first, second = second, first
        lines = self.into(first, out, alias, depth)
        operand, pre = self._operand(second, depth)
        return lines + pre + [Call(ufunc, (out, operand), out)]

    def _order(self, alias):
        def key(arg):
            holds = alias is not None and sp.Symbol(alias) in arg.free_symbols
            return (not holds, _is_leaf(_sign(arg)[1]), sp.default_sort_key(arg))

        return key

    def _operand(self, expr: sp.Expr, depth: int) -> tuple[Expr, list[Node]]:
        """``expr`` as an operand: a leaf, or a scratch buffer filled first."""
        if _is_leaf(expr):
            return self.leaf(expr), []
        buf = as_expr(self.scratch(depth))
        self.scratch_used = max(self.scratch_used, depth + 1)
        return buf, self.into(expr, buf, None, depth + 1)

    def _add(self, terms, out, alias, depth, order) -> list[Node]:
        terms = sorted(terms, key=order)
        signed = [_sign(t) for t in terms]
        lines: list[Node] = []
        if len(terms) >= 2 and _is_leaf(signed[0][1]) and _is_leaf(signed[1][1]):
            (s0, t0), (s1, t1) = signed[0], signed[1]
            a, b = self.leaf(t0), self.leaf(t1)
            if s0 > 0 and s1 > 0:
                lines.append(Call("np.add", (a, b), out))
            elif s0 > 0:
                lines.append(Call("np.subtract", (a, b), out))
            elif s1 > 0:
                lines.append(Call("np.subtract", (b, a), out))
            else:
                lines += [Call("np.add", (a, b), out), Call("np.negative", (out,), out)]
            rest = signed[2:]
        elif (
            signed[0][0] < 0
            and alias is None
            and any(sign > 0 and _is_leaf(t) for sign, t in signed[1:])
        ):
            # -t + c: t into out, then c - out (no negation)
            k = next(i for i, (sign, t) in enumerate(signed) if i and sign > 0 and _is_leaf(t))
            lines += self.into(signed[0][1], out, alias, depth)
            lines.append(Call("np.subtract", (self.leaf(signed[k][1]), out), out))
            rest = signed[1:k] + signed[k + 1 :]
        else:
            lines += self.into(terms[0], out, alias, depth)
            rest = signed[1:]
        for sign, term in rest:
            operand, pre = self._operand(term, depth)
            lines += pre
            ufunc = "np.add" if sign > 0 else "np.subtract"
            lines.append(Call(ufunc, (out, operand), out))
        return lines

    def _mul(self, expr, out, alias, depth, order) -> list[Node]:
        coeff, rest = expr.as_coeff_Mul()
        factors = sorted(sp.Mul.make_args(rest), key=order)
        divisors = [f.base for f in factors if f.is_Pow and f.exp == -1 and not f.base.is_number]
        factors = [f for f in factors if not (f.is_Pow and f.exp == -1 and not f.base.is_number)]
        lines: list[Node] = []
        held = [d for d in divisors if alias is not None and sp.Symbol(alias) in d.free_symbols]
        if held:
            # the operand written over is in a divisor: that divisor first, inverted
            divisors.remove(held[0])
            lines += self.into(held[0], out, alias, depth)
            lines.append(Call("np.divide", (self.leaf(coeff), out), out))
            coeff = sp.S.One
        elif not factors:
            operand, pre = self._operand(divisors.pop(0), depth)
            lines += pre + [Call("np.divide", (self.leaf(coeff), operand), out)]
            coeff = sp.S.One
        elif len(factors) == 1 and _is_leaf(factors[0]) and coeff != 1:
            a = self.leaf(factors[0])
            if coeff == -1:
                lines.append(Call("np.negative", (a,), out))
            else:
                lines.append(Call("np.multiply", (a, self.leaf(coeff)), out))
            coeff = sp.S.One
            factors = []
        elif len(factors) >= 2 and _is_leaf(factors[0]) and _is_leaf(factors[1]):
            a, b = self.leaf(factors[0]), self.leaf(factors[1])
            lines.append(Call("np.multiply", (a, b), out))
            factors = factors[2:]
        else:
            lines += self.into(factors[0], out, alias, depth)
            factors = factors[1:]
        for factor in factors:
            operand, pre = self._operand(factor, depth)
            lines += pre + [Call("np.multiply", (out, operand), out)]
        for divisor in divisors:
            operand, pre = self._operand(divisor, depth)
            lines += pre + [Call("np.divide", (out, operand), out)]
        if coeff == -1:
            lines.append(Call("np.negative", (out,), out))
        elif coeff != 1:
            lines.append(Call("np.multiply", (out, self.leaf(coeff)), out))
        return lines

    def _pow(self, expr, out, alias, depth) -> list[Node]:
        base, exp = expr.args
        if _is_leaf(base) and not (isinstance(base, sp.Symbol) and base.name == alias):
            src, lines = self.leaf(base), []
        else:
            src, lines = out, self.into(base, out, alias, depth)
        if exp == 2:
            return lines + [Call("np.multiply", (src, src), out)]
        if exp == -1:
            return lines + [Call("np.divide", (Raw("1.0"), src), out)]
        if exp == sp.S.Half:
            return lines + [Call("np.sqrt", (src,), out)]
        return lines + [Call("np.power", (src, self.leaf(exp)), out)]


def count(expr: sp.Expr) -> int:
    """How many calls :meth:`Emitter.into` needs for ``expr`` (scratch fills included)."""
    emitter = Emitter(lambda name: name, naming.step_scratch)
    return len(emitter.into(expr, Name("_out")))


#: The budget of :func:`cheapest`: expressions with more symbols or operations are kept
#: as written (a statement of a spec, or a gradient summed over many equations).
CHEAPEST_SYMBOLS = 12
CHEAPEST_OPS = 60


def cheapest(expr: sp.Expr, once: str | None = None) -> sp.Expr:
    """The form of ``expr`` with the fewest calls, among: as written, expanded, and
    expanded then collected in each of its symbols. Ties keep the earlier candidate.

    ``once``: a symbol every candidate must read exactly once, as ``expr`` does (its
    array is the one written: ``d*(1 - e)`` must not become ``d - d*e``).
    """
    if _is_leaf(expr) or primitive_name(expr) is not None:
        return expr
    if len(expr.free_symbols) > CHEAPEST_SYMBOLS or sp.count_ops(expr) > CHEAPEST_OPS:
        return expr  # the search costs more than it could save (collect is quadratic)
    expanded = sp.expand_mul(expr)
    candidates = [expr, expanded]
    for sym in sorted(expr.free_symbols, key=sp.default_sort_key):
        candidates.append(sp.collect(expanded, sym))
    best = expr
    best_count = count(expr)
    symbol = sp.Symbol(once) if once else None
    for cand in candidates[1:]:
        if symbol is not None and sum(1 for s in sp.preorder_traversal(cand) if s == symbol) != 1:
            continue
        n = count(cand)
        if n < best_count:
            best, best_count = cand, n
    return best


class Hoister:
    """Splits expressions into what changes inside the loop and what does not.

    Args:
        invariant: Names that never change in the loop (parameters).
        varying: Names that change with the step but not with the state (projections
            of the input, values computed from them): their sums can be computed for
            every step at once, before the loop.

    New symbols: ``_k0, _k1 ...`` for constants, ``_s0, _s1 ...`` for sequences.
    """

    def __init__(self, invariant: Iterable[str], varying: Iterable[str]):
        self.invariant = set(invariant)
        self.varying = set(varying)
        self.constants: dict[sp.Expr, sp.Symbol] = {}
        self.sequences: dict[sp.Expr, sp.Symbol] = {}

    def _names(self, expr: sp.Expr) -> set[str]:
        return {s.name for s in expr.free_symbols}

    def _is_invariant(self, expr: sp.Expr) -> bool:
        return self._names(expr) <= self.invariant

    def _is_free(self, expr: sp.Expr) -> bool:
        return self._names(expr) <= self.invariant | self.varying

    def _constant(self, expr: sp.Expr) -> sp.Expr:
        if _is_leaf(expr):
            return expr
        if expr not in self.constants:
            self.constants[expr] = sp.Symbol(naming.hoisted_constant(len(self.constants)))
        return self.constants[expr]

    def _sequence(self, expr: sp.Expr) -> sp.Expr:
        if _is_leaf(expr):
            return expr
        if self._is_invariant(expr):
            return self._constant(expr)
        expr = self.constants_of(expr)
        if expr not in self.sequences:
            self.sequences[expr] = sp.Symbol(naming.hoisted_sequence(len(self.sequences)))
        return self.sequences[expr]

    def constants_of(self, expr: sp.Expr) -> sp.Expr:
        """``expr`` with its invariant parts replaced by constants."""
        if _is_leaf(expr):
            return expr
        if self._is_invariant(expr):
            return self._constant(expr)
        if expr.is_Add or expr.is_Mul:
            inv = [a for a in expr.args if self._is_invariant(a)]
            rest = [self.constants_of(a) for a in expr.args if not self._is_invariant(a)]
            if inv and not all(a.is_number for a in inv):
                inv = [self._constant(type(expr)(*inv))]
            if expr.is_Mul and inv and any(a.is_Add for a in rest):
                # keep c*(u + v) whole: SymPy would distribute a number over the sum,
                # which costs a call per term
                return sp.Mul(*(rest + inv), evaluate=False)
            return type(expr)(*(rest + inv))
        return expr.func(*[self.constants_of(a) for a in expr.args])

    def __call__(self, expr: sp.Expr) -> sp.Expr:
        """``expr`` (one step's value) with its loop-invariant and state-free parts
        replaced by constants and sequences."""
        if _is_leaf(expr):
            return expr
        if self._is_free(expr):
            return self._sequence(expr)
        if expr.is_Add:
            free = [a for a in expr.args if self._is_free(a)]
            rest = [self(a) for a in expr.args if not self._is_free(a)]
            if any(not self._is_invariant(a) for a in free):
                rest.append(self._sequence(sp.Add(*free)))
            elif free:
                rest.append(self.constants_of(sp.Add(*free)))
            return sp.Add(*rest)
        if expr.is_Mul:
            inv = [a for a in expr.args if self._is_invariant(a)]
            var = [a for a in expr.args if self._is_free(a) and not self._is_invariant(a)]
            rest = [self(a) for a in expr.args if not self._is_free(a)]
            if inv:
                rest.append(self.constants_of(sp.Mul(*inv)))
            if var:
                rest.append(self._sequence(sp.Mul(*var)))
            return sp.Mul(*rest)
        return expr.func(*[self(a) for a in expr.args])
