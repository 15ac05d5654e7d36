"""Tests of the grammar of derivation papers (symbolic.verify.latex): each construct of
the notation parsed into the expected AST, and what cannot be read as printed (a stray
bracket, a sum's scope, a free index) coming out of the parse as readings."""

from __future__ import annotations

import pytest

from symbolic.verify.latex import (
    Add,
    Call,
    Deriv,
    Index,
    LatexError,
    Mul,
    Num,
    Sum,
    Sym,
    free_letters,
    parse,
    parse_expression,
    readings,
)

FUNCTIONS = frozenset({r"\sigma", r"\tanh"})


def rhs(text: str):
    (eq,) = readings(parse_expression(r"\frac{\partial C}{\partial x} = " + text, FUNCTIONS))
    return eq.rhs


def only(node):
    assert isinstance(node, Mul) and len(node.factors) == 1, node
    return node.factors[0]


def test_derivative_of_the_cost_with_time_layer_and_units():
    eq = parse_expression(
        r"\frac{\partial C}{\partial^t a_i^{l-1}} = \frac{\partial^t a_0^2}{\partial {}^{t-1}a_j^l}"
    )
    (lhs,) = eq.lhs.factors
    assert lhs == Deriv(Sym("C"), Sym("a", Index("t"), Index("l", -1), (Index("i"),)))
    d = only(eq.rhs)
    assert d.of == Sym("a", Index("t"), Index(None, 2), (Index(None, 0),))
    assert d.wrt == Sym("a", Index("t", -1), Index("l"), (Index("j"),))


def test_subscripts_are_one_index_per_character_or_comma_separated():
    assert only(rhs("W_{ji}^l")).units == (Index("j"), Index("i"))
    assert only(rhs("W_{00}^1")).units == (Index(None, 0), Index(None, 0))
    assert only(rhs("W_{j1}^1")).units == (Index("j"), Index(None, 1))
    assert only(rhs("W_{10,2}^1")).units == (Index(None, 10), Index(None, 2))


def test_left_superscript_then_a_name_of_several_letters():
    sym = only(rhs(r"{}^tZc_j^l"))
    assert sym == Sym("Zc", Index("t"), Index("l"), (Index("j"),))


def test_greek_tilde_primes_and_cdot():
    node = rhs(r"{}^t\Gamma_j^l \cdot \tanh'({}^t\tilde{a}_j^l)")
    gamma, call = node.factors
    assert gamma.name == r"\Gamma"
    assert isinstance(call, Call) and call.func == r"\tanh" and call.primes == 1
    assert only(call.arg).name == r"\tilde{a}"


def test_implicit_products_numbers_and_left_right():
    node = rhs(r"2\left( a_0^2 - y_0 \right)(1)")
    two, diff, one = node.factors
    assert two == Num(2) and one == Mul((Num(1),))
    assert isinstance(diff, Add) and [s for s, _ in diff.terms] == [1, -1]


def test_sum_with_bounds_and_its_scope():
    node = rhs(r"\sum_{j=0}^{n^{l+1}} \sigma'(z_j^{l+1})W_{ji}^l")
    (total,) = node.factors
    assert isinstance(total, Sum) and total.var == "j"
    assert total.lo == Index(None, 0) and total.hi == Index(size=Index("l", 1))
    assert len(total.body.factors) == 2  # the rest of the product
    assert str(total.hi) == "n^{l+1}" and str(Index(size=Index("l"))) == "n^l"


def test_unbracketed_scope_readings_keep_no_index_outside():
    # sum_j x_j y: the sum may stop after x_j (y does not use j) or take both.
    eq = parse_expression(r"\frac{\partial C}{\partial q} = \sum_{j=0}^1 x_j y")
    scopes = readings(eq)
    assert len(scopes) == 2
    # sum_j x_j y_j: stopping early would leave y_j outside its sum
    eq = parse_expression(r"\frac{\partial C}{\partial q} = \sum_{j=0}^1 x_j y_j")
    assert len(readings(eq)) == 1


def test_free_index_outside_its_sum():
    node = rhs(r"\frac{\partial C}{\partial^t a_j^l} \sum_{j=0}^l (W_{ji}^{l-1})")
    assert free_letters(node) == {"j", "t", "l", "i"}
    assert free_letters(node) - {"t", "l", "i"} == {"j"}


def test_aligned_rows_are_one_formula():
    eq = parse_expression(r"\frac{\partial C}{\partial x} &= a_0^1 \\ &\quad + b")
    assert isinstance(eq.rhs, Add) and len(eq.rhs.terms) == 2


def test_a_stray_bracket_gives_two_readings():
    text = r"\frac{\partial C}{\partial x} = u ((1 - g) + h) + v w)"
    end_of_first_row = text.index("+ v") - 1
    found = parse(text, FUNCTIONS, (end_of_first_row,))
    names = [r.name for r, _ in found]
    assert len(found) == 2, names
    early, late = (eq.rhs for _, eq in found)
    assert isinstance(early, Add) and len(early.terms) == 2  # u(...) + v w
    assert isinstance(late, Mul) and len(late.factors) == 2  # u(... + v w)


def test_an_unclosed_bracket_is_closed_at_the_end():
    ((repair, eq),) = parse(r"\frac{\partial C}{\partial x} = u (g + h", FUNCTIONS)
    assert repair.name == "as printed"
    assert isinstance(eq.rhs.factors[1], Add)


def test_a_function_without_its_argument_is_an_error():
    with pytest.raises(LatexError):
        parse_expression(r"\frac{\partial C}{\partial x} = \sigma' z", FUNCTIONS)


def test_text_outside_the_grammar_is_an_error():
    with pytest.raises(LatexError):
        parse_expression(r"\frac{\partial C}{\partial x} = \int x", FUNCTIONS)
