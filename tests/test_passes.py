"""Micro-tests of each optimisation pass (symbolic/passes.py) on hand-made statement lists.

Every pass is checked twice: structurally (what it removes, renames or inserts, and
where) and numerically (the shortened program computes the same live values as the
original one at a random point).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import sympy as sp

from symbolic import passes, primitives
from symbolic.ir import Assign, MatVec

# ---------------------------------------------------------------------------------------
# Helpers: build statements from short text, run a statement list numerically.
# ---------------------------------------------------------------------------------------

_NAME = re.compile(r"[A-Za-z_]\w*")


def expr(text: str) -> sp.Expr:
    """A SymPy expression from test text; every name is a plain symbol (so ``E``, ``S``,
    ``N`` ... are not SymPy's constants) except the registered primitives."""
    local = {}
    for name in _NAME.findall(text):
        if name in primitives.PRIMITIVES:
            local[name] = primitives.function(name)
        else:
            local[name] = sp.Symbol(name)
    return sp.sympify(text, locals=local)


def A(target: str, text: str) -> Assign:
    return Assign(target, expr(text), f"{target} = {text}")


def M(target: str, matrix: str, arg: str, transpose: bool = False) -> MatVec:
    return MatVec(target, matrix, arg, transpose, f"{target} = {matrix} @ {arg}")


def targets(stmts) -> list[str]:
    return [s.target for s in stmts]


def reads(stmt) -> set[str]:
    if isinstance(stmt, MatVec):
        return {stmt.arg, stmt.matrix}
    return {s.name for s in stmt.expr.free_symbols}


def run(stmts, env: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Execute ``stmts`` in order on NumPy values (matrices act on the last axis)."""
    env = dict(env)
    namespace = primitives.numeric_namespace()
    for stmt in stmts:
        if isinstance(stmt, MatVec):
            matrix = env[stmt.matrix]
            env[stmt.target] = env[stmt.arg] @ (matrix if stmt.transpose else matrix.T)
            continue
        symbols = sorted(stmt.expr.free_symbols, key=lambda s: s.name)
        fn = sp.lambdify(symbols, stmt.expr, modules=[namespace, "numpy"])
        value = fn(*(env[s.name] for s in symbols))
        env[stmt.target] = np.broadcast_to(value, (3, 4)).astype(float)
    return env


def random_env(names, rng, matrices=()) -> dict[str, np.ndarray]:
    env = {name: rng.uniform(0.5, 1.5, (3, 4)) for name in names}
    for name in matrices:
        env[name] = rng.standard_normal((4, 4))
    return env


def assert_well_ordered(stmts, inputs):
    """Every name a statement reads is an input or the target of an earlier statement,
    and no target is assigned twice (single assignment)."""
    defined = set(inputs)
    for position, stmt in enumerate(stmts):
        missing = reads(stmt) - defined
        assert not missing, (
            f"statement {position} ({stmt.target}) reads {missing} before it is defined"
        )
        assert stmt.target not in defined, f"{stmt.target} assigned twice"
        defined.add(stmt.target)


# ---------------------------------------------------------------------------------------
# dead_code
# ---------------------------------------------------------------------------------------


def test_dead_code_removes_unread_statements():
    stmts = [A("a", "x + 1"), A("b", "x*2"), A("c", "a*3"), A("d", "b + c")]
    assert targets(passes.dead_code(stmts, live={"c"})) == ["a", "c"]


def test_dead_code_keeps_live_statements_transitively_in_order():
    stmts = [A("a", "x + 1"), A("b", "a*y"), A("c", "b - a"), A("d", "c**2"), A("e", "y")]
    kept = passes.dead_code(stmts, live=["d"])
    assert targets(kept) == ["a", "b", "c", "d"]
    assert kept == stmts[:4]  # statements are kept unchanged


def test_dead_code_follows_matrix_products():
    stmts = [
        A("u", "x*2"),
        M("Pu", "W", "u"),  # live through p
        A("v", "x + 1"),
        M("Pv", "W", "v"),  # dead: nobody reads Pv
        A("p", "Pu + 1"),
    ]
    assert targets(passes.dead_code(stmts, live={"p"})) == ["u", "Pu", "p"]


def test_dead_code_nothing_live_and_empty_list():
    stmts = [A("a", "x + 1"), A("b", "a*2")]
    assert passes.dead_code(stmts, live=()) == []
    assert passes.dead_code([], live={"a"}) == []


def test_dead_code_live_names_outside_the_list_are_harmless():
    stmts = [A("a", "x + 1")]
    assert passes.dead_code(stmts, live={"x", "zzz", "a"}) == stmts


def test_dead_code_does_not_mutate_its_input():
    stmts = [A("a", "x + 1"), A("b", "x*2")]
    before = list(stmts)
    passes.dead_code(stmts, live={"a"})
    assert stmts == before


def test_dead_code_is_numerically_equivalent_on_live_values():
    rng = np.random.default_rng(0)
    stmts = [
        A("a", "x*y + 1"),
        A("b", "tanh(a)"),
        A("c", "sigmoid(x)"),
        M("P", "W", "b"),
        A("d", "P*c + b"),
        A("e", "exp(y)"),
    ]
    env = random_env(["x", "y"], rng, matrices=["W"])
    full = run(stmts, env)
    short = run(passes.dead_code(stmts, live={"d"}), env)
    np.testing.assert_allclose(short["d"], full["d"], rtol=1e-14)
    assert "e" not in short


# ---------------------------------------------------------------------------------------
# copy_propagation
# ---------------------------------------------------------------------------------------


def test_copy_propagation_removes_copies_and_renames_readers():
    stmts = [A("a", "x + 1"), A("b", "a"), A("c", "b*2")]
    out, rename = passes.copy_propagation(stmts)
    assert rename == {"b": "a"}
    assert targets(out) == ["a", "c"]
    assert out[1].expr == expr("a*2")


def test_copy_propagation_follows_chains_of_copies():
    stmts = [A("a", "x + 1"), A("b", "a"), A("c", "b"), A("d", "c + b")]
    out, rename = passes.copy_propagation(stmts)
    assert rename == {"b": "a", "c": "a"}
    assert targets(out) == ["a", "d"]
    assert out[1].expr == expr("2*a")


def test_copy_propagation_renames_matrix_product_arguments():
    stmts = [A("a", "x + 1"), A("b", "a"), M("P", "W", "b", transpose=True)]
    out, _ = passes.copy_propagation(stmts)
    assert out[1] == MatVec("P", "W", "a", True, stmts[2].comment)


def test_copy_propagation_keeps_protected_targets():
    stmts = [A("dZ", "da*2"), A("dh", "dZ"), A("q", "dh + 1")]
    out, rename = passes.copy_propagation(stmts, protected={"dh"})
    assert targets(out) == ["dZ", "dh", "q"]
    assert out[1].expr == sp.Symbol("dZ")
    assert rename == {}


def test_copy_propagation_protected_copy_of_a_removed_copy_reads_the_source():
    stmts = [A("a", "x + 1"), A("b", "a"), A("dh", "b")]
    out, rename = passes.copy_propagation(stmts, protected={"dh"})
    assert rename == {"b": "a"}
    assert [(s.target, s.expr) for s in out] == [("a", expr("x + 1")), ("dh", sp.Symbol("a"))]


def test_copy_propagation_keeps_copies_of_inputs():
    # da = da_in: the seed comes from outside; its copy must stay so that later stages
    # that read da (e.g. a parameter gradient after the loop) find it computed here.
    stmts = [A("da", "da_in"), A("dz", "da*s"), A("e", "x")]
    out, rename = passes.copy_propagation(stmts, inputs={"da_in"})
    assert targets(out) == ["da", "dz"]
    assert out[0].expr == sp.Symbol("da_in")
    assert out[1].expr == expr("da*s")
    # a copy of a name that is not declared an input is propagated
    assert rename == {"e": "x"}


@pytest.mark.parametrize("text", ["-a", "2*a", "a**2", "a + 1", "1.0*a + b", "tanh(a)"])
def test_copy_propagation_leaves_non_copies_alone(text):
    stmts = [A("a", "x + 1"), A("b", "x*3"), A("c", text)]
    out, rename = passes.copy_propagation(stmts)
    assert rename == {}
    assert out == stmts


def test_copy_propagation_is_numerically_equivalent():
    rng = np.random.default_rng(1)
    stmts = [
        A("da", "da_in"),
        A("t", "da"),
        A("dG", "t*(ac - h)"),
        A("u", "dG"),
        M("P", "W", "u", transpose=True),
        A("dh", "P + t*G"),
        A("v", "dh"),
        A("w", "v*2"),
    ]
    env = random_env(["da_in", "ac", "h", "G"], rng, matrices=["W"])
    out, rename = passes.copy_propagation(stmts, protected={"dh"}, inputs={"da_in"})
    assert_well_ordered(out, env)
    full, short = run(stmts, env), run(out, env)
    for stmt in stmts:
        name = rename.get(stmt.target, stmt.target)
        np.testing.assert_allclose(short[name], full[stmt.target], rtol=1e-14)


# ---------------------------------------------------------------------------------------
# cse
# ---------------------------------------------------------------------------------------


def test_cse_extracts_a_shared_subexpression():
    stmts = [A("p", "(x + y)*z"), A("q", "(x + y)*w")]
    out = passes.cse(stmts)
    assert [(s.target, s.expr) for s in out] == [
        ("_c0", expr("x + y")),
        ("p", expr("_c0*z")),
        ("q", expr("_c0*w")),
    ]
    assert out[0].comment == "shared subexpression"
    assert [s.comment for s in out[1:]] == [s.comment for s in stmts]


def test_cse_leaves_statements_without_shared_work_alone():
    stmts = [A("p", "x*y"), A("q", "z + w")]
    assert passes.cse(stmts) == stmts


def test_cse_places_a_temporary_after_its_dependencies_and_before_first_use():
    stmts = [
        A("a", "x*2"),
        A("b", "y - 1"),
        A("p", "(a + b)*z"),
        A("q", "(a + b)*w"),
    ]
    out = passes.cse(stmts)
    assert targets(out) == ["a", "b", "_c0", "p", "q"]
    assert out[2].expr == expr("a + b")
    assert_well_ordered(out, {"x", "y", "z", "w"})


def test_cse_temporary_goes_after_a_matrix_product_it_reads():
    stmts = [
        A("u", "x*2"),
        M("P", "W", "u"),
        A("p", "(P + 1)*y"),
        A("q", "(P + 1)*z"),
    ]
    out = passes.cse(stmts)
    assert targets(out) == ["u", "P", "_c0", "p", "q"]
    assert out[1] is stmts[1]
    assert_well_ordered(out, {"x", "y", "z", "W"})


def test_cse_temporary_is_not_hoisted_above_unrelated_statements():
    stmts = [A("a", "x*3"), A("b", "y + 1"), A("p", "(y*z + 1)*a"), A("q", "(y*z + 1)*b")]
    out = passes.cse(stmts)
    # placed just before its first reader p, not at the top
    assert targets(out) == ["a", "b", "_c0", "p", "q"]


def test_cse_nested_temporaries_are_ordered_by_dependency():
    stmts = [
        A("p", "exp(x*y)*(exp(x*y) + 1)"),
        A("q", "x*y + exp(x*y)*z"),
        A("r", "(exp(x*y) + 1)*w"),
    ]
    out = passes.cse(stmts)
    temps = [s for s in out if s.target.startswith("_c")]
    assert len(temps) >= 2
    assert_well_ordered(out, {"x", "y", "z", "w"})
    # every original statement keeps its place relative to the others
    assert [t for t in targets(out) if not t.startswith("_c")] == ["p", "q", "r"]


def test_cse_start_and_prefix_name_the_temporaries():
    stmts = [A("p", "(x + y)*z"), A("q", "(x + y)*w")]
    out = passes.cse(stmts, start=3, prefix="_k")
    assert targets(out) == ["_k3", "p", "q"]


def test_cse_without_assignments_returns_the_list():
    stmts = [M("P", "W", "u"), M("Q", "V", "P", transpose=True)]
    assert passes.cse(stmts) == stmts
    assert passes.cse([]) == []


def test_cse_is_numerically_equivalent():
    rng = np.random.default_rng(2)
    stmts = [
        A("da", "da_in + dh_next"),
        A("dac", "G*da"),
        A("dG", "da*(ac - h)"),
        A("dZc", "dac*(1 - ac**2)"),
        A("dZu", "G*(1 - G)*dG"),
        M("P", "U", "dZu", transpose=True),
        A("dh", "WTc*dZc + WTu*dZu + (1 - G)*da + P*(1 - G)"),
        A("r", "(1 - ac**2)*(1 - G)*da"),
    ]
    inputs = ["da_in", "dh_next", "G", "ac", "h", "WTc", "WTu"]
    env = random_env(inputs, rng, matrices=["U"])
    out = passes.cse(stmts)
    assert len(out) > len(stmts)
    assert_well_ordered(out, set(env))
    full, short = run(stmts, env), run(out, env)
    for stmt in stmts:
        np.testing.assert_allclose(short[stmt.target], full[stmt.target], rtol=1e-13)


def test_passes_compose_like_lower_does():
    """copy propagation, dead code, then CSE: still equivalent on the live values."""
    rng = np.random.default_rng(3)
    stmts = [
        A("da", "da_in"),
        A("dz", "da*s*(1 - s)"),
        A("e", "dz"),
        A("dead", "exp(e)*(1 - s)"),
        A("dh", "e*(1 - s) + w*(s*(1 - s))"),
    ]
    env = random_env(["da_in", "s", "w"], rng)
    out, rename = passes.copy_propagation(stmts, protected={"dh"}, inputs={"da_in"})
    out = passes.dead_code(out, live={"dh"})
    out = passes.cse(out)
    assert "dead" not in targets(out) and "e" not in targets(out)
    assert_well_ordered(out, set(env))
    np.testing.assert_allclose(run(out, env)["dh"], run(stmts, env)["dh"], rtol=1e-13)


# ---------------------------------------------------------------------------------------
# inline_single_use
# ---------------------------------------------------------------------------------------


def test_inline_single_use_merges_a_value_read_once():
    stmts = [A("Zu", "W_x + Bu"), A("G", "sigmoid(Zu)"), A("a", "G*h + G")]
    out = passes.inline_single_use(stmts, keep={"a"})
    # Zu is read once (by G): it goes into G; G is read twice: it stays
    assert [s.target for s in out] == ["G", "a"]
    assert out[0].expr == expr("sigmoid(W_x + Bu)")
    assert "Zu = W_x + Bu" in out[0].comment
    env = {n: np.random.default_rng(1).standard_normal(4) for n in ("W_x", "Bu", "h")}
    np.testing.assert_allclose(run(out, env)["a"], run(stmts, env)["a"], rtol=1e-15)


def test_inline_single_use_keeps_what_is_kept_and_what_would_cancel():
    stmts = [A("c", "x + y"), A("d", "2*c"), A("v", "p + 1"), A("e", "v - p + d")]
    out = passes.inline_single_use(stmts, keep={"c", "e"})
    # d, read once, goes into e; c is kept (cached); v would cancel against p in e (a NaN
    # in p must still reach e), so it stays a statement of its own
    assert [s.target for s in out] == ["c", "v", "e"]
    assert out[2].expr == expr("v - p + 2*c")


def test_lifter_gives_every_reduction_a_statement_of_its_own():
    from symbolic.reductions import max_share, unit_mean, unit_sum

    dz, dc, d0, e = sp.symbols("dz dc d_t0 e")
    stmts = [Assign("dz", dc + unit_mean(d0) + max_share(e) * unit_sum(dc * e), "adjoint of z")]
    lifted = passes.Lifter()(stmts)
    assert [str(s) for s in lifted] == [
        "_q0 = max_share(e)",
        "_q1 = unit_mean(d_t0)",
        "_q2 = dc*e",
        "_q3 = unit_sum(_q2)",
        "dz = _q0*_q3 + _q1 + dc",
    ]
    # a whole reduction of a symbol stays as it is
    assert passes.Lifter()([Assign("m", unit_sum(e), "")]) == [Assign("m", unit_sum(e), "")]
