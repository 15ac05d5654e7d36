"""Optimisation passes over straight-line statement lists (run by stage 3, ``kernel``).

Input: a list of statements (:class:`~symbolic.ir.Assign` and
:class:`~symbolic.ir.MatVec`, in single-assignment form within one step) and the
names that must survive it. Output: an equivalent, shorter list. Each pass is one
function with its own test.
"""

from __future__ import annotations

from collections.abc import Iterable

import sympy as sp

from symbolic import naming, reductions
from symbolic.ir import Assign, MatVec, Stmt, names, reads


def dead_code(stmts: list[Stmt], live: Iterable[str]) -> list[Stmt]:
    """Drop every statement whose target nobody reads.

    Args:
        stmts: The statements, in order.
        live: Names read after the list (stores, later stages, the carried state).
    """
    needed = set(live)
    kept: list[Stmt] = []
    for stmt in reversed(stmts):
        if stmt.target in needed:
            kept.append(stmt)
            needed |= reads(stmt)
    return kept[::-1]


def copy_propagation(
    stmts: list[Stmt], protected: Iterable[str] = (), inputs: Iterable[str] = ()
) -> tuple[list[Stmt], dict[str, str]]:
    """Remove ``x = y`` copies, reading ``y`` wherever ``x`` was read.

    Args:
        stmts: The statements, in order.
        protected: Targets that must keep their name (e.g. the adjoint of a state).
        inputs: Names that come from outside the list (seeds): a copy of one is kept,
            so that every adjoint read after the list is computed inside it.

    Returns:
        The statements and the renaming applied (``x -> y``), for later stages that
        refer to ``x``.
    """
    protected = set(protected)
    inputs = set(inputs)
    rename: dict[str, str] = {}
    out: list[Stmt] = []
    for stmt in stmts:
        if isinstance(stmt, MatVec):
            out.append(
                MatVec(
                    stmt.target,
                    stmt.matrix,
                    rename.get(stmt.arg, stmt.arg),
                    stmt.transpose,
                    stmt.comment,
                )
            )
            continue
        expr = stmt.expr.xreplace({sp.Symbol(a): sp.Symbol(b) for a, b in rename.items()})
        if isinstance(expr, sp.Symbol) and stmt.target not in protected and expr.name not in inputs:
            rename[stmt.target] = expr.name
            _name_the_product(out, expr.name, stmt.comment)
            continue
        out.append(Assign(stmt.target, expr, stmt.comment))
    return out, rename


def _name_the_product(out: list[Stmt], source: str, comment: str) -> None:
    # A copy of a product's path removed (the adjoint of h is V's path alone): the
    # product's comment starts with the copy's, so the code still names that adjoint.
    for index in range(len(out) - 1, -1, -1):
        stmt = out[index]
        if stmt.target == source:
            if isinstance(stmt, MatVec) and comment and comment not in stmt.comment:
                out[index] = MatVec(
                    stmt.target, stmt.matrix, stmt.arg, stmt.transpose, f"{comment}; {stmt.comment}"
                )
            return


def cse(stmts: list[Stmt], start: int = 0, prefix: str = "_c") -> list[Stmt]:
    """Common-subexpression elimination across the statements of one step.

    Each shared subexpression gets a temporary (``_c0, _c1 ...``), placed just before
    the first statement that reads it, so dependencies on earlier targets hold.

    Args:
        stmts: The statements, in order.
        start: The first temporary index (to keep names unique across calls).
        prefix: The temporaries' prefix.
    """
    assigns = [s for s in stmts if isinstance(s, Assign)]
    if not assigns:
        return list(stmts)
    symbols = sp.numbered_symbols(prefix, start=start)
    replacements, reduced = sp.cse([s.expr for s in assigns], symbols=symbols, order="none")
    defs = {sym: expr for sym, expr in replacements}
    reduced_by_id = {id(s): r for s, r in zip(assigns, reduced, strict=True)}
    emitted: set[sp.Symbol] = set()
    out: list[Stmt] = []

    def emit(sym: sp.Symbol) -> None:
        if sym in emitted:
            return
        for dep in sorted(defs[sym].free_symbols & defs.keys(), key=sp.default_sort_key):
            emit(dep)
        emitted.add(sym)
        out.append(Assign(sym.name, defs[sym], "shared subexpression"))

    for stmt in stmts:
        if isinstance(stmt, MatVec):
            out.append(stmt)
            continue
        expr = reduced_by_id[id(stmt)]
        for sym in sorted(expr.free_symbols & defs.keys(), key=sp.default_sort_key):
            emit(sym)
        out.append(Assign(stmt.target, expr, stmt.comment))
    return out


def fold_temporaries(
    stmts: list[Stmt], prefix: str = "_c", avoid: Iterable[str] = ()
) -> list[Stmt]:
    """Name a temporary after the statement that copies it whole.

    CSE turns ``dUz_h = e; dWz_x = e`` into ``_c0 = e; dUz_h = _c0; dWz_x = _c0``; this
    pass makes it ``dUz_h = e; dWz_x = dUz_h`` (copy propagation then removes the copy),
    so one buffer holds what was stored twice.

    Args:
        stmts: The statements, in order.
        prefix: The temporaries' prefix.
        avoid: Targets a temporary must not be named after (statements a later stage
            takes out of the list, whose value the others must not read by that name).
    """
    avoid = set(avoid)
    temps = {s.target for s in stmts if isinstance(s, Assign) and s.target.startswith(prefix)}
    names: dict[str, str] = {}
    dropped: set[int] = set()
    for index, stmt in enumerate(stmts):
        if (
            isinstance(stmt, Assign)
            and isinstance(stmt.expr, sp.Symbol)
            and stmt.expr.name in temps
            and stmt.expr.name not in names
            and stmt.target not in avoid
        ):
            names[stmt.expr.name] = stmt.target
            dropped.add(index)
    rename = {sp.Symbol(a): sp.Symbol(b) for a, b in names.items()}
    out: list[Stmt] = []
    for index, stmt in enumerate(stmts):
        if index in dropped:
            continue
        if isinstance(stmt, MatVec):
            out.append(
                MatVec(
                    stmt.target,
                    stmt.matrix,
                    names.get(stmt.arg, stmt.arg),
                    stmt.transpose,
                    stmt.comment,
                )
            )
            continue
        target = names.get(stmt.target, stmt.target)
        comment = stmt.comment
        if target != stmt.target:
            comment = next(s.comment for s in stmts if isinstance(s, Assign) and s.target == target)
        out.append(Assign(target, stmt.expr.xreplace(rename), comment))
    return out


def count_ops(stmts: list[Stmt]) -> dict[str, int]:
    """Operation counts per lane: arithmetic, transcendental calls, matrix products."""
    arith = calls = matvecs = 0
    for stmt in stmts:
        if isinstance(stmt, MatVec):
            matvecs += 1
            continue
        ops = sp.count_ops(stmt.expr, visual=True)
        for term in sp.Add.make_args(ops):
            coeff, sym = term.as_coeff_Mul()
            name = getattr(sym, "name", "")
            if name.upper() in ("ADD", "SUB", "MUL", "DIV", "NEG", "POW"):
                arith += int(coeff)
            elif name:
                calls += int(coeff)
    return {"arithmetic": arith, "calls": calls, "matvecs": matvecs}


class Lifter:
    """Gives every reduction over the units a statement of its own, reducing a symbol
    (``dz = dc + unit_mean(d_t0)`` becomes ``_q0 = unit_mean(d_t0)``, ``dz = dc + _q0``):
    a backend that computes lanes one at a time runs each reduction between its loops.
    One lifter names the temporaries ``_q0, _q1, ...`` of every list it lifts."""

    def __init__(self, prefix: str = "_q"):
        self.prefix = prefix
        self.counter = 0

    def name(self) -> str:
        name = naming.temporary(self.counter, self.prefix)
        self.counter += 1
        return name

    def __call__(self, stmts: list[Stmt]) -> list[Stmt]:
        out: list[Stmt] = []
        for stmt in stmts:
            if isinstance(stmt, Assign) and reductions.has_reduction(stmt.expr):
                out += self.lift(stmt)
            else:
                out.append(stmt)
        return out

    def lift(self, stmt: Assign) -> list[Assign]:
        """``stmt`` as statements each holding at most one reduction, of a symbol, whole."""
        lifted: list[Assign] = []
        expr = stmt.expr
        while True:
            inner = sorted(
                (
                    c
                    for c in sp.preorder_traversal(expr)
                    if reductions.is_reduction(c) and not reductions.has_reduction(c.args[0])
                ),
                key=sp.default_sort_key,
            )
            if not inner or (inner[0] == expr and isinstance(expr.args[0], sp.Symbol)):
                break
            call = inner[0]
            if not isinstance(call.args[0], sp.Symbol):
                arg = self.name()
                lifted.append(Assign(arg, call.args[0], f"{stmt.comment} (a reduction's argument)"))
                expr = expr.xreplace({call: type(call)(sp.Symbol(arg))})
                continue
            if call == expr:
                break
            target = self.name()
            lifted.append(Assign(target, call, f"{stmt.comment} (over the units)"))
            expr = expr.xreplace({call: sp.Symbol(target)})
        return lifted + [Assign(stmt.target, expr, stmt.comment)]


__all__ = ["dead_code", "copy_propagation", "cse", "fold_temporaries", "count_ops", "Lifter"]


def inline_single_use(stmts, keep: set[str]) -> list:
    """Substitute each elementwise value read exactly once, by another elementwise
    statement, into that statement (``Zu`` into ``G = sigmoid(Zu)``), unless it is in
    ``keep`` (cached, output, next state)."""
    stmts = list(stmts)
    changed = True
    while changed:
        changed = False
        for index, stmt in enumerate(stmts):
            if not isinstance(stmt, Assign) or stmt.target in keep:
                continue
            users = [i for i, s in enumerate(stmts) if stmt.target in reads(s)]
            if len(users) != 1 or not isinstance(stmts[users[0]], Assign):
                continue
            user = stmts[users[0]]
            if sum(1 for s in sp.preorder_traversal(user.expr) if s == sp.Symbol(stmt.target)) != 1:
                continue
            merged = user.expr.xreplace({sp.Symbol(stmt.target): stmt.expr})
            if _depth(merged) > MAX_INLINED_DEPTH:
                continue  # a chain of single uses would become one deep expression
            if names(merged) != (names(user.expr) - {stmt.target}) | names(stmt.expr):
                # a symbol cancelled (v + (2 - v)): a NaN in it would no longer propagate
                continue
            comment = f"{stmt.comment}\n{user.comment}" if user.comment else stmt.comment
            stmts[users[0]] = Assign(user.target, merged, comment)
            del stmts[index]
            changed = True
            break
    return stmts


#: Deepest expression inlining may build (a chain of 1000 single-use equations stays
#: 1000 statements, not one expression SymPy and Python would recurse through).
MAX_INLINED_DEPTH = 12


def _depth(expr: sp.Basic) -> int:
    deepest, stack = 0, [(expr, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((arg, depth + 1) for arg in node.args)
    return deepest
