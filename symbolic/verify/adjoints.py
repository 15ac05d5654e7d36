"""The true derivative of the cost, derived in a document's own index notation.

Input: a section's ``definitions`` (the model's equations in the document's notation,
from its notation file: ``{}^t Zc_i^l = WTc_i^l \\cdot {}^{t-1} a_i^l + \\sum_{j=0}
WXc_{ij}^{l-1} \\cdot {}^t a_j^{l-1} + Bc_i^l``, and what ``C`` is) and the left side of a
formula, ``dC/dX``. Output: the right side of the formula that holds, as a formula AST
(:mod:`symbolic.verify.latex`) that :mod:`symbolic.verify.printer` prints.

Reverse mode over index patterns: dC/dX is the sum, over every value Y whose definition
reads X, of dC/dY times the local partial dY/dX (``sympy.diff`` of that one definition).
A reading of X is found by unifying the indices of X with those of the name in the
definition (``{}^{t-1} a_i^l`` in the definition of ``{}^t a_i^l`` reads ``{}^t a_i^{l-1}``
as ``{}^{t+1} a_i^{l-1}``); an index of Y that X does not fix is summed (over the time
steps, or the units of Y's layer), and Y must exist there, which gives the term's
conditions (``t < T``, ``l < L``, ``l-1`` a GRN layer, ``t \\ge 2`` where the cost reads
a step). dC/dY is expanded the same way until Y is an *output*: a value read at another
time step or layer than its own, or by the cost (``a``), whose total derivative the
document writes ``dC/dY``. Conditions are then decided on the formula's own index values
(``simplify``): one that always holds there is dropped, a term whose conditions never
hold is dropped.

The result is not trusted: :mod:`symbolic.verify.document` prints it, parses it back and
the engine checks it against the unrolled models like any formula of the document.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import sympy as sp

from symbolic.parse import SpecError
from symbolic.verify import latex
from symbolic.verify.latex import Add, Call, Deriv, Index, Iverson, Mul, Num, Pow, Sum, Sym

MAX_DEPTH = 8  # definitions chained between a value and an output


@dataclass(frozen=True)
class Definition:
    """One equation of the model: ``lhs = rhs`` with canonical names."""

    lhs: Sym
    rhs: object


@dataclass(frozen=True)
class Term:
    """One path class of dC/dX: conditions, sums around it, the output's total
    derivative it ends in (None: the cost's own partial) and the local partials."""

    conditions: tuple
    sums: tuple[tuple[str, Index, Index], ...]
    adjoint: Sym | None
    factors: tuple[sp.Expr, ...]


class Model:
    """A section's definitions, ready to derive from.

    Args:
        notation: The document's notation.
        section: The section (its ``definitions`` and names).
        canonical: Printed name -> the notation's name of the variable.
    """

    def __init__(self, notation, section, canonical):
        self.notation = notation
        self.section = section
        self.canonical = canonical
        self.definitions = [self._definition(text) for text in section.definitions]
        self.outputs = self._outputs()
        self.recurrent = next((p for p, m in section.predicates.items() if m == "recurrent"), None)

    def _definition(self, text: str) -> Definition:
        functions = frozenset(self.notation.functions)
        try:
            eq = latex.parse_expression(text, functions)
        except latex.LatexError as exc:
            raise SpecError(self.notation.path, None, exc.symbol, f"a definition: {exc}") from exc
        lhs = eq.lhs.factors[0] if isinstance(eq.lhs, Mul) else eq.lhs
        (scoped,) = latex.readings(latex.Equation(lhs, eq.rhs))[:1]
        return Definition(self._rename(lhs), self._rename(scoped.rhs))

    def _rename(self, node):
        # every printed name as the notation's name of its variable
        if isinstance(node, Sym):
            return replace(node, name=self.canonical(node.name))
        if isinstance(node, Add):
            return Add(tuple((s, self._rename(t)) for s, t in node.terms))
        if isinstance(node, Mul):
            return Mul(tuple(self._rename(f) for f in node.factors))
        if isinstance(node, Call):
            return Call(node.func, node.primes, self._rename(node.arg))
        if isinstance(node, Pow):
            return Pow(self._rename(node.base), node.exp)
        if isinstance(node, Sum):
            return Sum(node.var, node.lo, node.hi, self._rename(node.body))
        return node

    def _outputs(self) -> set[str]:
        # values read at another step or layer than their own, or by the cost
        defined = {d.lhs.name for d in self.definitions}
        out = set()
        for d in self.definitions:
            for sym, _ in _occurrences(d.rhs):
                is_cost = d.lhs.name == self.notation.cost
                elsewhere = sym.time != d.lhs.time or sym.layer != d.lhs.layer
                if sym.name in defined and (is_cost or elsewhere):
                    out.add(sym.name)
        return out

    def is_cost(self, sym: Sym) -> bool:
        """Whether ``sym`` is the cost."""
        return sym.name == self.notation.cost and sym == Sym(sym.name)


def _occurrences(node, sums: tuple = ()):
    """Every value ``node`` reads, with the sums around it (outermost first)."""
    if isinstance(node, Sym):
        yield node, sums
    elif isinstance(node, Add):
        for _, t in node.terms:
            yield from _occurrences(t, sums)
    elif isinstance(node, Mul):
        for f in node.factors:
            yield from _occurrences(f, sums)
    elif isinstance(node, Call):
        yield from _occurrences(node.arg, sums)
    elif isinstance(node, Pow):
        yield from _occurrences(node.base, sums)
    elif isinstance(node, Sum):
        yield from _occurrences(node.body, (*sums, node))


# ------------------------------------------------------------------ unification


def _shift(idx: Index, by: int) -> Index:
    return replace(idx, offset=idx.offset + by)


def _positions(sym: Sym) -> list[Index | None]:
    return [sym.time, sym.layer, *sym.units]


def _unify(pattern: Sym, value: Sym, constants: set[str]):
    """The values of ``pattern``'s letters that make it ``value`` ({letter: Index}) and
    the conditions that requires, or None when it never is."""
    if pattern.name != value.name or len(pattern.units) != len(value.units):
        return None
    binding: dict[str, Index] = {}
    conditions = []
    for p, v in zip(_positions(pattern), _positions(value), strict=True):
        if (p is None) != (v is None):
            return None
        if p is None:
            continue
        if p.size is not None or v.size is not None:
            return None
        if p.letter is None or p.letter in constants:
            if v.letter is None and p.letter is None:
                if v.offset != p.offset:
                    return None
            else:
                conditions.append((v, "=", p))
            continue
        solved = _shift(v, -p.offset)
        if binding.setdefault(p.letter, solved) != solved:
            return None
    return binding, conditions


def _substitute(idx: Index | None, binding: dict[str, Index]) -> Index | None:
    if idx is None:
        return None
    if idx.size is not None:
        return replace(idx, size=_substitute(idx.size, binding))
    if idx.letter in binding:
        return _shift(binding[idx.letter], idx.offset)
    return idx


def _subst_sym(sym: Sym, binding: dict[str, Index]) -> Sym:
    return replace(
        sym,
        time=_substitute(sym.time, binding),
        layer=_substitute(sym.layer, binding),
        units=tuple(_substitute(u, binding) for u in sym.units),
    )


def _subst_node(node, binding: dict[str, Index], opaque: dict):
    # A definition's right side at the binding: a sum whose index is bound is its
    # term at that index (the only one that can read X); another sum is opaque.
    if isinstance(node, Sym):
        return _subst_sym(node, binding)
    if isinstance(node, Add):
        return Add(tuple((s, _subst_node(t, binding, opaque)) for s, t in node.terms))
    if isinstance(node, Mul):
        return Mul(tuple(_subst_node(f, binding, opaque) for f in node.factors))
    if isinstance(node, Call):
        return Call(node.func, node.primes, _subst_node(node.arg, binding, opaque))
    if isinstance(node, Pow):
        return Pow(_subst_node(node.base, binding, opaque), node.exp)
    if isinstance(node, Sum):
        if node.var in binding:
            return _subst_node(node.body, binding, opaque)
        return opaque.setdefault(node, Sym(f"_sum{len(opaque)}"))
    return node


# ------------------------------------------------------------------ SymPy and back


class _Algebra:
    """Formula ASTs as SymPy expressions (values are symbols, functions undefined
    functions) and back."""

    def __init__(self):
        self.symbols: dict[Sym, sp.Symbol] = {}
        self.values: dict[sp.Symbol, Sym] = {}
        self.functions: dict[str, type] = {}
        self.names: dict[type, str] = {}

    def symbol(self, sym: Sym) -> sp.Symbol:
        if sym not in self.symbols:
            s = sp.Symbol(f"v{len(self.symbols)}")
            self.symbols[sym], self.values[s] = s, sym
        return self.symbols[sym]

    def function(self, name: str):
        if name not in self.functions:
            f = sp.Function(f"f{len(self.functions)}")
            self.functions[name], self.names[f] = f, name
        return self.functions[name]

    def to_sympy(self, node) -> sp.Expr:
        if isinstance(node, Num):
            return sp.Integer(node.value)
        if isinstance(node, Sym):
            return self.symbol(node)
        if isinstance(node, Call):
            return self.function(node.func)(self.to_sympy(node.arg))
        if isinstance(node, Pow):
            return self.to_sympy(node.base) ** node.exp
        if isinstance(node, Add):
            return sp.Add(*(s * self.to_sympy(t) for s, t in node.terms))
        if isinstance(node, Mul):
            return sp.Mul(*(self.to_sympy(f) for f in node.factors))
        raise TypeError(f"a definition holds {type(node).__name__}")

    def to_ast(self, expr: sp.Expr):
        if expr.is_Integer:
            value = int(expr)
            return Num(value) if value >= 0 else Add(((-1, Num(-value)),))
        if expr.is_Symbol:
            return self.values[expr]
        if isinstance(expr, sp.Add):
            common = sp.gcd_list([abs(a.as_coeff_Mul()[0]) for a in expr.args])
            if common.is_Integer and common > 1:
                return Mul((Num(int(common)), self.to_ast(expr / common)))
            args = sorted(expr.args, key=lambda a: bool(a.as_coeff_Mul()[0] < 0))
            return Add(tuple(self._signed(a) for a in args))
        if isinstance(expr, sp.Mul):
            sign, term = self._signed(expr)
            return term if sign > 0 else Add(((-1, term),))
        if isinstance(expr, sp.Pow) and expr.exp.is_Integer and expr.exp > 0:
            return Pow(self.to_ast(expr.base), int(expr.exp))
        return self._derivative(expr)

    def _signed(self, expr: sp.Expr) -> tuple[int, object]:
        coeff, rest = expr.as_coeff_Mul()
        sign = -1 if coeff < 0 else 1
        coeff = abs(coeff)
        factors = [] if coeff == 1 else [Num(int(coeff))]
        factors += [self.to_ast(f) for f in sp.Mul.make_args(rest) if f != 1]
        if len(factors) == 1:
            return sign, factors[0]
        return sign, Mul(tuple(factors or [Num(1)]))

    def _derivative(self, expr: sp.Expr):
        if isinstance(expr, sp.Derivative) and len(expr.variables) == 1:
            call, arg = expr.expr, expr.variables[0]
            if call.func in self.names and call.args == (arg,):
                return Call(self.names[call.func], 1, self.to_ast(arg))
        if isinstance(expr, sp.Subs):
            inner = self._derivative(expr.expr)
            point = dict(zip(expr.variables, expr.point, strict=True))
            arg = next(iter(point.values()))
            return replace(inner, arg=self.to_ast(arg))
        if isinstance(expr, sp.Function) and expr.func in self.names:
            return Call(self.names[expr.func], 0, self.to_ast(expr.args[0]))
        raise ValueError(f"cannot write {expr} in the document's notation")


# ------------------------------------------------------------------ the derivation


class Deriver:
    """dC/dX in the document's notation, from a section's definitions."""

    def __init__(self, model: Model):
        self.model = model
        self.algebra = _Algebra()
        notation = model.notation
        self.constants = {notation.steps, notation.top}
        self.letters: set[str] = set()  # the formula's own letters (conditions use only these)

    def terms(self, x: Sym, used: frozenset[str], depth: int = 0) -> list[Term]:
        """Every path class from X to an output (or the cost), see the module docstring."""
        if depth == 0:
            self.letters = set(used)
        if depth > MAX_DEPTH:
            raise ValueError("the definitions chain without reaching an output")
        out = []
        for d in self.model.definitions:
            for y, conditions, sums, local in self._readers(d, x, used):
                if self.model.is_cost(y):
                    out.append(Term(tuple(conditions), sums, None, (local,)))
                elif y.name in self.model.outputs:
                    out.append(Term(tuple(conditions), sums, y, (local,)))
                else:
                    inner_used = used | {s[0] for s in sums}
                    for t in self.terms(y, inner_used, depth + 1):
                        out.append(
                            Term(
                                (*conditions, *t.conditions),
                                (*sums, *t.sums),
                                t.adjoint,
                                (*t.factors, local),
                            )
                        )
        return out

    def _readers(self, d: Definition, x: Sym, used: frozenset[str]):
        # Each value of d's left side that reads x: (Y, conditions, sums, dY/dX).
        seen = set()
        for occurrence, around in _occurrences(d.rhs):
            unified = _unify(occurrence, x, self.constants)
            if unified is None:
                continue
            binding, conditions = unified
            fixed = self._fix_letters(d, binding, around, used)
            if fixed is None:
                continue
            binding, sums, more = fixed
            key = tuple(sorted(binding.items(), key=lambda kv: kv[0]))
            if key in seen:
                continue
            seen.add(key)
            y = d.lhs if self.model.is_cost(d.lhs) else _subst_sym(d.lhs, binding)
            rhs = _subst_node(d.rhs, binding, {})
            # the reading at the binding is x where the conditions hold (L is l there)
            target = self.algebra.symbol(_subst_sym(occurrence, binding))
            local = sp.factor_terms(sp.diff(self.algebra.to_sympy(rhs), target))
            local = local.xreplace({target: self.algebra.symbol(x)})
            if local == 0:
                continue
            if not self.model.is_cost(y):
                more += self._exists(x, y, sums)
            yield y, [*conditions, *more], sums, local

    def _fix_letters(self, d: Definition, binding: dict, around: tuple, used: frozenset[str]):
        # Letters of Y that x does not fix are summed; sums around the reading in the
        # definition must be fixed by x (their bounds become conditions for time).
        notation = self.model.notation
        binding = dict(binding)
        conditions, sums = [], []
        for s in around:
            if s.var not in binding:
                return None
            if s.var == notation.time:
                conditions.append((binding[s.var], ">=", _substitute(s.lo, binding)))
                if s.hi is not None:
                    conditions.append((binding[s.var], "<=", _substitute(s.hi, binding)))
        taken = set(used) | {i.letter for i in binding.values() if i.letter}
        lhs = d.lhs
        if lhs.layer is not None and lhs.layer.letter and lhs.layer.letter not in binding:
            return None
        if lhs.time is not None and lhs.time.letter and lhs.time.letter not in binding:
            if notation.time in taken:
                return None
            binding[lhs.time.letter] = Index(notation.time)
            taken.add(notation.time)
            sums.append((notation.time, Index(None, 1), Index(notation.steps)))
        for unit in lhs.units:
            if unit.letter and unit.letter not in binding:
                fresh = next((u for u in notation.units if u not in taken), None)
                if fresh is None:
                    return None
                binding[unit.letter] = Index(fresh)
                taken.add(fresh)
                layer = _substitute(lhs.layer, binding)
                sums.append((fresh, Index(None, 0), Index(size=layer, offset=-1)))
        return binding, tuple(sums), conditions

    def _exists(self, x: Sym, y: Sym, sums) -> list:
        # Y exists: its step within 1..T (when it is not summed), its layer computed.
        summed = {s[0] for s in sums}
        notation = self.model.notation
        out = []
        t = y.time
        if t is not None and t.letter not in summed and t.letter in self.letters | {None}:
            out += [(t, ">=", Index(None, 1)), (t, "<=", Index(notation.steps))]
        if y.layer is not None:
            out.append((y.layer, "<=", Index(notation.top)))
            if self.model.recurrent is not None:
                out.append((y.layer, "text", self.model.recurrent))
            else:
                out.append((y.layer, ">=", Index(None, 1)))
        return out


# ------------------------------------------------------------------ the formula


def _normal(relation):
    # l+1 <= L -> l < L, t-1 >= 1 -> t >= 2: the letter's offset moved to the right.
    left, op, right = relation
    if op == "text" or left.letter is None or left.size is not None:
        return relation
    right = _shift(right, -left.offset)
    left = replace(left, offset=0)
    if op == "<=" and right.letter is not None and right.offset == -1:
        return left, "<", replace(right, offset=0)
    if op == ">=" and right.letter is not None and right.offset == 1:
        return left, ">", replace(right, offset=0)
    return left, op, right


def simplify(conditions, holds, cases) -> list | None:
    """The conditions that matter on the formula's index values ``cases``, or None
    when they never hold there (``holds(relation, case)`` decides one)."""
    keep = list(dict.fromkeys(_normal(c) for c in conditions))
    if not any(all(holds(c, case) for c in keep) for case in cases):
        return None
    for c in sorted(keep, key=lambda r: r[1] != "text"):
        others = [k for k in keep if k != c]
        if all(holds(c, case) for case in cases if all(holds(k, case) for k in others)):
            keep = others
    return keep


def right_side(deriver: Deriver, x: Sym, letters: set[str], holds, cases):
    """dC/dX as a formula AST (terms grouped by condition, sums and output), or None
    when the definitions give nothing."""
    groups: dict[tuple, list[tuple[sp.Expr, ...]]] = {}
    terms = deriver.terms(x, frozenset(letters))
    for term in _cost_only(deriver, terms, set(letters), holds, cases):
        kept = simplify(term.conditions, holds, cases)
        if kept is None:
            continue
        groups.setdefault((tuple(kept), term.sums, term.adjoint), []).append(term.factors)
    if not groups:
        return None
    cost = Sym(deriver.model.notation.cost)
    out = []
    for (conditions, sums, adjoint), products in groups.items():
        body = [Deriv(cost, adjoint)] if adjoint is not None else []
        asts = [_product(deriver.algebra, p) for p in products]
        if len(asts) == 1:
            body += list(asts[0].factors) if isinstance(asts[0], Mul) else [asts[0]]
        else:
            body.append(Add(tuple((1, a) for a in asts)))
        node = Mul(tuple(f for f in body if f != Num(1)) or (Num(1),))
        for var, lo, hi in reversed(sums):
            node = Mul((Sum(var, lo, hi, node),))
        if conditions:
            node = Mul((Iverson(conditions), *node.factors))
        out.append((1, node))
    return out[0][1] if len(out) == 1 else Add(tuple(out))


def _cost_only(deriver: Deriver, terms: list[Term], letters: set[str], holds, cases):
    """The terms, with an output's total derivative written out where, on the formula's
    index values, only the cost reads the output (dC/da_i^L is 2(a_i^L - y_i))."""
    for term in terms:
        y = term.adjoint
        if y is None or term.sums or not y.letters() <= letters:
            yield term
            continue
        inner = [
            t
            for t in deriver.terms(y, frozenset(letters))
            if simplify((*term.conditions, *t.conditions), holds, cases) is not None
        ]
        if not inner or any(t.adjoint is not None or t.sums for t in inner):
            yield term
            continue
        for t in inner:
            yield Term((*term.conditions, *t.conditions), (), None, (*t.factors, *term.factors))


def _product(algebra: _Algebra, factors: tuple[sp.Expr, ...]):
    asts = []
    for f in factors:
        if f == 1:
            continue
        node = algebra.to_ast(f)
        asts.extend(node.factors if isinstance(node, Mul) else [node])
    return Mul(tuple(asts) or (Num(1),))
