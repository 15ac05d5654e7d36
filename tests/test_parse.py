"""Spec (TOML) -> checked model: the shipped specs, and one test per class of bad spec.

Every bad spec must raise :class:`SpecError` naming the file, the line of the offending
key (counted in the TOML text, here from a marker the case gives) and the symbol.
"""

from __future__ import annotations

import builtins
import hashlib
import textwrap
from pathlib import Path

import pytest
import sympy as sp

import symbolic
from symbolic import primitives
from symbolic.model import Cell, Cost, Projection
from symbolic.parse import SpecError, load, loads

SPECS = Path(symbolic.__file__).parent / "specs"
S = sp.Symbol

HEAD = """\
name = "cell"
kind = "recurrent"
input = "x"
output = "a"
state = { h = "a" }
"""
PARAMS = """\
[params]
W = "matrix"
U = "vector"
B = "vector"
"""
EQUATIONS = """\
[equations]
z = "W@x + U*h + B"
a = "tanh(z)"
"""


def spec(head: str = HEAD, params: str = PARAMS, equations: str = EQUATIONS) -> str:
    """A small recurrent cell; replace a part to break it."""
    return "\n".join(textwrap.dedent(part) for part in (head, params, equations))


def line_of(text: str, marker: str) -> int:
    """The 1-based number of the first line of ``text`` starting with ``marker``."""
    for number, line in enumerate(text.split("\n"), start=1):
        if line.lstrip().startswith(marker):
            return number
    raise AssertionError(f"marker {marker!r} not in the spec")


def load_error(tmp_path: Path, text: str) -> tuple[SpecError, Path]:
    path = tmp_path / "bad_spec.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SpecError) as info:
        load(path)
    return info.value, path


def check_error(tmp_path, text, marker, symbol, message=None):
    """Load ``text`` from a file: the error names the file, the marker's line, the symbol."""
    err, path = load_error(tmp_path, text)
    line = line_of(text, marker)
    shown = str(err)
    assert err.path == str(path)
    assert err.line == line, shown
    assert err.symbol == symbol, shown
    assert shown.startswith(f"{path}:{line}:"), shown
    assert f"'{symbol}'" in shown, shown
    if message:
        assert message in shown, shown
    return err


# --- the shipped specs ------------------------------------------------------------------


def test_grn_spec():
    cell = load(SPECS / "grn.toml")
    text = (SPECS / "grn.toml").read_text()
    assert isinstance(cell, Cell)
    assert (cell.name, cell.kind, cell.input, cell.output) == ("grn", "recurrent", "x", "a")
    assert cell.states == {"h": "a"}
    assert list(cell.params.items()) == [
        ("WXu", "matrix"),
        ("WXc", "matrix"),
        ("WTu", "vector"),
        ("WTc", "vector"),
        ("Bu", "vector"),
        ("Bc", "vector"),
    ]
    assert cell.equation_names == ["Zu", "Zc", "G", "ac", "a"]
    assert cell.projections == [
        Projection("WXu_x", "WXu", "x", line_of(text, "Zu ")),
        Projection("WXc_x", "WXc", "x", line_of(text, "Zc ")),
    ]
    sigmoid, tanh = primitives.function("sigmoid"), primitives.function("tanh")
    h = S("h")
    expected = {
        "Zu": S("WTu") * h + S("WXu_x") + S("Bu"),
        "Zc": S("WTc") * h + S("WXc_x") + S("Bc"),
        "G": sigmoid(S("Zu")),
        "ac": tanh(S("Zc")),
        "a": S("G") * S("ac") + (1 - S("G")) * h,
    }
    for eq in cell.equations:
        assert sp.expand(eq.expr - expected[eq.name]) == 0, eq.name
        assert eq.line == line_of(text, f"{eq.name} ")
        assert not eq.lifted
    assert cell.matrix_shape("WXu") == ("out", "in")
    assert cell.claims == []
    assert cell.sha256 == hashlib.sha256(text.encode()).hexdigest()


def test_dense_sigmoid_spec():
    cell = load(SPECS / "dense_sigmoid.toml")
    text = (SPECS / "dense_sigmoid.toml").read_text()
    assert (cell.name, cell.kind, cell.input, cell.output) == (
        "dense_sigmoid",
        "feedforward",
        "x",
        "a",
    )
    assert cell.states == {}
    assert cell.params == {"W": "matrix", "B": "vector"}
    assert list(cell.params) == ["W", "B"]
    assert cell.equation_names == ["z", "a"]
    assert cell.equation("z").expr == S("W_x") + S("B")
    assert cell.equation("a").expr == primitives.function("sigmoid")(S("z"))
    assert cell.projections == [Projection("W_x", "W", "x", line_of(text, "z "))]
    assert cell.matrix_shape("W") == ("out", "in")


def test_squared_error_spec():
    cost = load(SPECS / "squared_error.toml")
    text = (SPECS / "squared_error.toml").read_text()
    assert isinstance(cost, Cost)
    assert (cost.name, cost.kind, cost.prediction, cost.target) == (
        "squared_error",
        "cost",
        "a",
        "y",
    )
    assert sp.expand(cost.per_unit - (S("a") - S("y")) ** 2) == 0
    assert cost.line == line_of(text, "per_unit")
    assert cost.source == "(a - y) ** 2"  # the parsed expression printed back


def test_loads_and_load_agree():
    path = SPECS / "grn.toml"
    a, b = load(path), loads(path.read_text(), path)
    assert a.equations == b.equations and a.projections == b.projections


# --- features the parser lowers ---------------------------------------------------------


def test_matrix_times_expression_is_lifted():
    cell = loads(
        spec(
            params='[params]\nW = "matrix"\nR = "matrix"\nU = "matrix"\n',
            equations='[equations]\nr = "sigmoid(R@x)"\na = "tanh(W@x + U@(r*h))"\n',
        )
    )
    lifted = [eq for eq in cell.equations if eq.lifted]
    assert len(lifted) == 1 and lifted[0].expr == S("r") * S("h")
    names = [eq.name for eq in cell.equations]
    assert names.index(lifted[0].name) < names.index("a")
    proj = next(p for p in cell.projections if p.matrix == "U")
    assert proj.arg == lifted[0].name
    assert cell.matrix_shape("U") == ("out", "out")
    assert cell.matrix_shape("W") == ("out", "in")


def test_same_product_is_one_projection():
    cell = loads(spec(equations='[equations]\nz = "W@x + U*h + B"\na = "tanh(z) + W@x"\n'))
    assert [p.name for p in cell.projections] == ["W_x"]


def test_nested_product_names_the_inner_projection():
    # W@(V@h): the outer product multiplies the inner projection, which must exist.
    cell = loads(
        spec(
            params='[params]\nW = "matrix"\nV = "matrix"\nP = "matrix"\n',
            equations='[equations]\na = "tanh(P@x + W@(V@h))"\n',
        )
    )
    held = {cell.input, *cell.states, *cell.equation_names}
    for proj in cell.projections:
        assert proj.arg in held, proj
    for eq in cell.equations:
        assert all(not s.name.startswith("__") for s in eq.expr.free_symbols), eq


def test_product_of_a_vector_parameter_is_lifted():
    cell = loads(
        spec(
            params='[params]\nW = "matrix"\nV = "matrix"\nB = "vector"\n',
            equations='[equations]\na = "tanh(W@x + V@B + h)"\n',
        )
    )
    proj = next(p for p in cell.projections if p.matrix == "V")
    assert cell.equation(proj.arg).expr == S("B")


def test_inline_tables_and_multiline_strings_keep_line_numbers(tmp_path):
    text = spec(
        equations='[equations]\nz = """W@x + U*h\n  + B"""\nq = "B"  # \u2028 odd newline in a comment\na = "tanh(z)"\n'
    )
    check_error(tmp_path, text, "q =", "q", "never used")


# --- bad specs: one class per case ----------------------------------------------------

BAD = [
    pytest.param(
        spec(equations='[equations]\nz = "W@x + U*h + B\na = "tanh(z)"\n'),
        "z =",
        "z",
        "TOML syntax error",
        id="toml-syntax",
    ),
    pytest.param(
        spec(equations='[equations]\nz = "W@x + U*h + B"\nz = "tanh(z)"\na = "tanh(z)"\n'),
        'z = "tanh',
        "z",
        "TOML syntax error",
        id="toml-duplicate-key",
    ),
    pytest.param(
        # On the last line, without a newline, tomllib reports it "at end of document".
        spec(equations='[equations]\nz = "W@x + U*h + B"\na = "tanh(z)"\na = "z"'),
        'a = "z"',
        "a",
        "defined twice (first at line 14)",
        id="toml-duplicate-key-reported-at-end",
    ),
    pytest.param(
        spec(equations='[equations]\nz = "W@x + U*h + Q"\na = "tanh(z)"\n'),
        "z =",
        "Q",
        "unknown name",
        id="unknown-name",
    ),
    pytest.param(
        spec(equations='[equations]\nz = "W@x + U*h + B"\na = "softmax(z)"\n'),
        "a =",
        "softmax",
        "unknown function",
        id="unknown-function",
    ),
    pytest.param(
        spec(equations='[equations]\nz = "W@x + U*h"\nB = "tanh(z)"\na = "B"\n'),
        'B = "tanh',
        "B",
        "already defined (line 10)",
        id="equation-named-like-a-parameter",
    ),
    pytest.param(
        spec(params='[params]\nW = "matrix"\nU = "vector"\nB = "vector"\nx = "vector"\n'),
        "x = ",
        "x",
        "already defined",
        id="parameter-named-like-the-input",
    ),
    pytest.param(
        spec(equations='[equations]\nz = "W@x + U*h + B"\nh = "z"\na = "tanh(z)"\n'),
        "h = ",
        "h",
        "already defined",
        id="equation-named-like-a-state",
    ),
    pytest.param(
        spec(equations='[equations]\nz = "W@x + U*h + B + q"\nq = "B*B"\na = "tanh(z)"\n'),
        "z =",
        "q",
        "used before its definition",
        id="use-before-definition",
    ),
    pytest.param(
        spec(equations='[equations]\nz = "W@x + U*h + B + q"\nq = "z*B"\na = "tanh(z)"\n'),
        "z =",
        "q",
        "cycle: z -> q -> z",
        id="cycle",
    ),
    pytest.param(
        spec(equations='[equations]\nz = "W@x + U*h + B + z"\na = "tanh(z)"\n'),
        "z =",
        "z",
        "cycle: z -> z",
        id="self-reference",
    ),
    pytest.param(
        spec(equations='[equations]\nz = "W@x + W@h + U*h + B"\na = "tanh(z)"\n'),
        "z =",
        "W",
        "cannot be both",
        id="matrix-of-two-shapes",
    ),
    pytest.param(
        spec(equations='[equations]\nz = "W@x + U@h + B"\na = "tanh(z)"\n'),
        "z =",
        "U",
        "left side of '@' must be a matrix parameter",
        id="matmul-vector-parameter",
    ),
    pytest.param(
        spec(equations='[equations]\nz = "(2*W)@x + U*h + B"\na = "tanh(z)"\n'),
        "z =",
        "2 * W",
        "left side of '@' must be a matrix parameter",
        id="matmul-expression",
    ),
    pytest.param(
        spec(equations='[equations]\nz = "W@x + 2@h + U*h + B"\na = "tanh(z)"\n'),
        "z =",
        "2",
        "left side of '@' must be a matrix parameter",
        id="matmul-number",
    ),
    pytest.param(
        spec(equations='[equations]\nz = "W@x + W*h + U*h + B"\na = "tanh(z)"\n'),
        "z =",
        "W",
        "may only stand left of '@'",
        id="matrix-used-elementwise",
    ),
    pytest.param(
        spec(head=HEAD.replace('{ h = "a" }', '{ h = "b" }')),
        "state =",
        "b",
        "no defining equation",
        id="state-without-equation",
    ),
    pytest.param(
        spec(params='[params]\nW = "matrix"\nU = "vector"\nB = "vector"\nV = "vector"\n'),
        "V = ",
        "V",
        "unused",
        id="unused-parameter",
    ),
    pytest.param(
        spec(params='[params]\nW = "matrix"\nU = "vector"\nB = "vector"\nV = "matrix"\n'),
        "V = ",
        "V",
        "unused",
        id="unused-matrix",
    ),
    pytest.param(
        spec(equations='[equations]\nz = "W@x + U*h + B"\nq = "tanh(z)"\na = "tanh(z)"\n'),
        "q =",
        "q",
        "never used",
        id="unused-equation",
    ),
    pytest.param(
        spec(head=HEAD.replace('{ h = "a" }', '{ h = "a", g = "a" }')),
        "state =",
        "g",
        "never used",
        id="unused-state",
    ),
    pytest.param(
        spec(
            equations='[equations]\nz = "U*h + B"\na = "tanh(z)"\n',
            params='[params]\nU = "vector"\nB = "vector"\n',
        ),
        "input =",
        "x",
        "never used",
        id="unused-input",
    ),
    pytest.param(
        spec(equations='[equations]\nz = "W@x + x + U*h + B"\na = "tanh(z)"\n'),
        "z =",
        "x",
        "only enter through a matrix product",
        id="input-used-elementwise",
    ),
    pytest.param(
        spec(
            head=HEAD.replace('input = "x"', 'input = { x = "elementwise", y = "elementwise" }'),
            equations='[equations]\nz = "W@x + x + U*h + B"\na = "tanh(z)"\n',
        ),
        "input =",
        "input",
        "names one input",
        id="input-table-of-two",
    ),
    pytest.param(
        spec(
            head=HEAD.replace('input = "x"', 'input = { x = "lanes" }'),
            equations='[equations]\nz = "W@x + x + U*h + B"\na = "tanh(z)"\n',
        ),
        "input =",
        "x",
        "unknown input use 'lanes'",
        id="input-table-unknown-use",
    ),
    pytest.param(
        spec(
            head=HEAD.replace('input = "x"', 'input = { x = "elementwise" }'),
            equations='[equations]\nz = "W@(2*x) + x + U*h + B"\na = "tanh(z)"\n',
        ),
        "z =",
        "W @ (2 * x)",
        "multiplied alone",
        id="elementwise-input-in-an-expression-under-matmul",
    ),
    pytest.param(
        spec(
            head=HEAD.replace('input = "x"', 'input = { x = "elementwise" }'),
            equations='[equations]\nz = "W@x + x + U*h + B"\na = "tanh(z)"\n',
        )
        + "\n[claims]\ndC_dB = 'dC_dz*x'\n",
        "dC_dB",
        "dC_dB",
        "elementwise input 'x'",
        id="claim-naming-the-elementwise-input",
    ),
    pytest.param(
        spec(equations='[equations]\nz = "W@(2*x) + U*h + B"\na = "tanh(z)"\n'),
        "z =",
        "W @ (2 * x)",
        "multiplied alone",
        id="input-in-an-expression-under-matmul",
    ),
    # Names that are not identifiers, or that would shadow Python or generated code.
    pytest.param(
        spec(params='[params]\nW = "matrix"\nU = "vector"\nB = "vector"\n"W-1" = "vector"\n'),
        '"W-1"',
        "W-1",
        "not a valid identifier",
        id="quoted-name-not-identifier",
    ),
    pytest.param(
        spec(params='[params]\nW = "matrix"\nU = "vector"\nB = "vector"\n1B = "vector"\n'),
        "1B",
        "1B",
        "not a valid identifier",
        id="bare-name-not-identifier",
    ),
    pytest.param(
        spec(equations='[equations]\nz = "W@x + U*h + B"\n"a b" = "z"\na = "tanh(z)"\n'),
        '"a b"',
        "a b",
        "not a valid identifier",
        id="equation-name-with-space",
    ),
    pytest.param(
        spec(equations='[equations]\n"zé" = "W@x + U*h + B"\na = "tanh(zé)"\n'),
        '"zé"',
        "zé",
        "not a valid identifier",
        id="non-ascii-name",
    ),
    pytest.param(
        spec(head=HEAD.replace('output = "a"', 'output = "a-1"')),
        "output =",
        "a-1",
        "not a valid identifier",
        id="output-not-identifier",
    ),
    pytest.param(
        spec(params='[params]\nW = "matrix"\nU = "vector"\nB = "vector"\nlambda = "vector"\n'),
        "lambda",
        "lambda",
        "Python keyword",
        id="keyword-lambda",
    ),
    pytest.param(
        spec(params='[params]\nW = "matrix"\nU = "vector"\nB = "vector"\nmatch = "vector"\n'),
        "match",
        "match",
        "Python keyword",
        id="soft-keyword-match",
    ),
    pytest.param(
        spec(equations='[equations]\nz = "W@x + U*h + B"\nsum = "z"\na = "tanh(sum)"\n'),
        "sum =",
        "sum",
        "the equation name shadows the Python builtin",
        id="builtin-sum",
    ),
    pytest.param(
        spec(head=HEAD.replace('input = "x"', 'input = "input"')),
        "input =",
        "input",
        "Python builtin",
        id="builtin-input",
    ),
    pytest.param(
        spec(params='[params]\nW = "matrix"\nU = "vector"\nB = "vector"\ntanh = "vector"\n'),
        "tanh =",
        "tanh",
        "primitive",
        id="shadows-a-primitive",
    ),
    pytest.param(
        spec(params='[params]\nW = "matrix"\nU = "vector"\nB = "vector"\nnp = "vector"\n'),
        "np =",
        "np",
        "reserved",
        id="reserved-np",
    ),
    pytest.param(
        spec(params='[params]\nW = "matrix"\nU = "vector"\nB = "vector"\n_B = "vector"\n'),
        "_B",
        "_B",
        "'_'",
        id="leading-underscore",
    ),
    pytest.param(
        spec(params='[params]\nW = "matrix"\nU = "vector"\nB = "vector"\nd_t0 = "vector"\n'),
        "d_t0",
        "d_t0",
        "'d_'",
        id="adjoint-of-a-temporary",
    ),
    pytest.param(
        spec(equations='[equations]\nz = "W@x + U*h + B"\ndz = "z"\na = "tanh(dz)"\n'),
        "dz =",
        "dz",
        "adjoint",
        id="clashes-with-an-adjoint",
    ),
    # Unsupported syntax.
    pytest.param(
        spec(equations='[equations]\nz = "W@x + U*h + B"\na = "tanh(z.real)"\n'),
        "a =",
        "z.real",
        "attributes are not allowed",
        id="attribute",
    ),
    pytest.param(
        spec(equations='[equations]\nz = "W@x + U*h + B"\na = "tanh(z[0])"\n'),
        "a =",
        "z[0]",
        "unsupported syntax",
        id="subscript",
    ),
    pytest.param(
        spec(equations='[equations]\nz = "W@x + U*h + B"\na = "tanh(z) * (z > 0)"\n'),
        "a =",
        "z > 0",
        "unsupported syntax",
        id="comparison",
    ),
    pytest.param(
        spec(equations='[equations]\nz = "W@x + U*h + B"\na = "(lambda q: q)(z)"\n'),
        "a =",
        "lambda q: q",
        "only primitive functions may be called",
        id="lambda-call",
    ),
    pytest.param(
        spec(equations='[equations]\nz = "W@x + U*h + B"\na = "lambda: z"\n'),
        "a =",
        "lambda: z",
        "unsupported syntax",
        id="lambda",
    ),
    pytest.param(
        spec(equations='[equations]\nz = "W@x + U*h + B"\na = "tanh([q for q in z])"\n'),
        "a =",
        "[q for q in z]",
        "unsupported syntax",
        id="comprehension",
    ),
    pytest.param(
        spec(equations='[equations]\nz = "W@x + U*h + B"\na = "tanh(z) + \'a\'"\n'),
        "a =",
        "'a'",
        "only numbers",
        id="string",
    ),
    pytest.param(
        spec(equations='[equations]\nz = "W@x + U*h + B"\na = "tanh(z, z)"\n'),
        "a =",
        "tanh",
        "exactly one positional argument",
        id="two-arguments",
    ),
    pytest.param(
        spec(equations='[equations]\nz = "W@x + U*h + B"\na = "tanh(z=z)"\n'),
        "a =",
        "tanh",
        "exactly one positional argument",
        id="keyword-argument",
    ),
    pytest.param(
        spec(equations='[equations]\nz = "W@x + U*h + B"\na = "tanh(z) if z else z"\n'),
        "a =",
        "tanh(z) if z else z",
        "unsupported syntax",
        id="conditional",
    ),
    pytest.param(
        spec(equations='[equations]\nz = "W@x + U*h + B"\na = "tanh(z) // 2"\n'),
        "a =",
        "tanh(z) // 2",
        "unsupported operator",
        id="floor-division",
    ),
    pytest.param(
        spec(equations='[equations]\nz = "W@x + U*h + B"\na = "~z"\n'),
        "a =",
        "~z",
        "unsupported operator",
        id="invert",
    ),
    pytest.param(
        spec(equations='[equations]\nz = "W@x + U*h + B"\na = "tanh(z +)"\n'),
        "a =",
        "a",
        "syntax error",
        id="python-syntax-error",
    ),
    pytest.param(
        spec(equations='[equations]\nz = "W@x + U*h + B"\na = 3\n'),
        "a =",
        "a",
        "must be a string",
        id="equation-not-a-string",
    ),
    # Constants.
    pytest.param(
        spec(equations='[equations]\nz = "W@x + U*h + B"\na = "tanh(z)/(1 - 1)"\n'),
        "a =",
        "1 - 1",
        "division by zero",
        id="division-by-zero",
    ),
    pytest.param(
        spec(equations='[equations]\nz = "W@x + U*h + B"\na = "tanh(z) + (-1)**0.5"\n'),
        "a =",
        "(-1) ** 0.5",
        "not a real number",
        id="complex-constant",
    ),
    pytest.param(
        spec(equations='[equations]\nz = "W@x + U*h + B"\na = "tanh(z) + 2**10**10**10"\n'),
        "a =",
        "10 ** 10 ** 10",
        "exponent larger",
        id="huge-power",
    ),
    pytest.param(
        spec(equations='[equations]\nz = "W@x + U*h + B"\na = "tanh(z) + (10**60)**60"\n'),
        "a =",
        "(10 ** 60) ** 60",
        "constant larger",
        id="huge-constant",
    ),
    pytest.param(
        spec(equations='[equations]\nz = "W@x + U*h + B"\na = "tanh(z) + 1e309"\n'),
        "a =",
        "inf",
        "finite",
        id="infinite-constant",
    ),
    pytest.param(
        spec(
            equations='[equations]\nz = "W@x + U*h + B"\na = "'
            + "tanh(" * 45
            + "z"
            + ")" * 45
            + '"\n'
        ),
        "a =",
        "a",
        "nested deeper",
        id="nested-too-deeply",
    ),
    # Structure.
    pytest.param(
        spec(head=HEAD.replace('kind = "recurrent"', 'kind = "convolutional"')),
        "kind =",
        "convolutional",
        "unknown kind",
        id="unknown-kind",
    ),
    pytest.param(
        spec(head=HEAD + "layers = 3\n"),
        "layers =",
        "layers",
        "unknown key",
        id="unknown-key",
    ),
    pytest.param(
        spec(params='[params]\nW = "matrix"\nU = "scalar"\nB = "vector"\n'),
        "U =",
        "U",
        "unknown parameter kind",
        id="unknown-parameter-kind",
    ),
    pytest.param(
        spec(head=HEAD.replace('state = { h = "a" }\n', "")),
        "kind =",
        "state",
        "needs a 'state'",
        id="recurrent-without-state",
    ),
    pytest.param(
        spec(head=HEAD.replace('"recurrent"', '"feedforward"')),
        "state =",
        "state",
        "has no 'state'",
        id="feedforward-with-state",
    ),
    pytest.param(
        spec(head=HEAD.replace('output = "a"', 'output = "y"')),
        "output =",
        "y",
        "no defining equation",
        id="output-without-equation",
    ),
    pytest.param(
        spec(head=HEAD.replace('state = { h = "a" }', "state = { h = 1 }")),
        "state =",
        "h",
        "maps to an equation",
        id="state-not-a-name",
    ),
    pytest.param(
        spec(equations="[equations]\n"),
        "[equations]",
        "equations",
        "no equations",
        id="no-equations",
    ),
    pytest.param(
        spec() + '\n[claims]\nWTu = "h"\n',
        "WTu =",
        "WTu",
        "dC_d<name>",
        id="claim-key",
    ),
    pytest.param(
        spec() + '\n[claims]\ndC_dz = "dC_da"\n',
        "dC_dz =",
        "dC_dz",
        "not a parameter",
        id="claim-of-an-intermediate",
    ),
    pytest.param(
        spec() + '\n[claims]\ndC_dB = "dC_da*tanh_prime(z)*Q"\n',
        "dC_dB =",
        "Q",
        "unknown name",
        id="claim-unknown-name",
    ),
    pytest.param(
        spec() + '\n[claims]\ndC_dx = "W @ (dC_da)"\n',
        "dC_dx =",
        "dC_dx",
        "M.T @ v",
        id="claim-untransposed-product",
    ),
]


@pytest.mark.parametrize("text, marker, symbol, message", BAD)
def test_bad_spec_names_file_line_and_symbol(tmp_path, text, marker, symbol, message):
    check_error(tmp_path, text, marker, symbol, message)


COST_HEAD = 'name = "cost"\nkind = "cost"\nprediction = "a"\ntarget = "y"\n'

BAD_COSTS = [
    pytest.param(
        COST_HEAD + 'per_unit = "(a - q)**2"\n', "per_unit", "q", "unknown name", id="unknown-name"
    ),
    pytest.param(
        COST_HEAD + 'per_unit = "y**2"\n', "per_unit", "a", "does not depend", id="no-prediction"
    ),
    pytest.param(
        COST_HEAD.replace('"y"', '"a"') + 'per_unit = "a**2"\n',
        "target",
        "a",
        "the same name",
        id="same-names",
    ),
    pytest.param(
        COST_HEAD + 'per_unit = "cosh(a - y)"\n',
        "per_unit",
        "cosh",
        "unknown function",
        id="unknown-function",
    ),
    pytest.param(
        COST_HEAD + 'per_unit = "(a - y)**2"\nstate = 1\n',
        "state",
        "state",
        "unknown key",
        id="unknown-key",
    ),
]


@pytest.mark.parametrize("text, marker, symbol, message", BAD_COSTS)
def test_bad_cost_names_file_line_and_symbol(tmp_path, text, marker, symbol, message):
    check_error(tmp_path, text, marker, symbol, message)


def test_missing_key_names_the_file_and_key(tmp_path):
    err, path = load_error(tmp_path, spec(head=HEAD.replace('output = "a"\n', "")))
    assert err.symbol == "output" and str(err).startswith(str(path))


def test_unreadable_spec(tmp_path):
    with pytest.raises(SpecError, match="cannot read"):
        load(tmp_path / "missing.toml")
    (tmp_path / "latin1.toml").write_bytes(b'name = "caf\xe9"\n')
    with pytest.raises(SpecError, match="not UTF-8"):
        load(tmp_path / "latin1.toml")


def test_deeply_nested_toml_is_a_spec_error():
    with pytest.raises(SpecError, match="nested too deeply"):
        loads("a = " + "[" * 5000 + "]" * 5000)


# --- a spec is data: loading one never runs code -------------------------------------

HOSTILE = [
    "__import__('os').system('touch PWNED')",
    "().__class__.__bases__[0].__subclasses__()",
    "open('x', 'w')",
    "(lambda: open('x', 'w'))()",
    "lambda: __import__('os').system('touch PWNED')",
    "eval(\"open('x', 'w')\")",
    "exec(\"open('x', 'w')\")",
    "tanh(z) + __builtins__['open']('x', 'w')",
    "tanh(open('x', 'w'))",
    "tanh(z) + [open('x', 'w') for _ in (1,)][0]",
    "tanh(z) if open('x', 'w') else z",
    "tanh(z).__class__",
    "breakpoint()",
    "(PWNED := open('x', 'w'))",
    'f\'{open("x", "w")}\'',
    "tanh(z) + sp.sympify(\"open('x','w')\")",
]


@pytest.fixture
def no_eval(monkeypatch):
    """Any call of eval, exec or SymPy's text parser while loading fails the test.

    (compile stays: ast.parse uses it, only to build a syntax tree.)
    """

    def forbidden(*args, **kwargs):
        raise AssertionError("the parser evaluated text")

    # Warm up lazy imports first: importing a module legitimately runs exec.
    load(SPECS / "grn.toml")
    import sympy.parsing.sympy_parser as sympy_parser

    monkeypatch.setattr(sympy_parser, "parse_expr", forbidden)
    for name in ("eval", "exec"):
        monkeypatch.setattr(builtins, name, forbidden)


@pytest.mark.parametrize("source", HOSTILE)
def test_loading_never_runs_code(tmp_path, monkeypatch, no_eval, source):
    monkeypatch.chdir(tmp_path)
    # The equation as a TOML literal string: no escapes to get wrong.
    quoted = "'''" + source + "'''"
    text = spec(equations=f'[equations]\nz = "W@x + U*h + B"\na = {quoted}\n')
    path = tmp_path / "hostile.toml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        load(path)
    assert info.value.line == line_of(text, "a =")
    assert not (tmp_path / "PWNED").exists()
    assert not (tmp_path / "x").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hostile.toml"]


@pytest.mark.parametrize(
    "field, value",
    [
        ("name", "__import__('os').system('touch PWNED')"),
        ("input", "open('x', 'w')"),
        ("output", "().__class__"),
    ],
)
def test_hostile_names_are_rejected(tmp_path, monkeypatch, no_eval, field, value):
    monkeypatch.chdir(tmp_path)
    text = spec(head=HEAD.replace(f'{field} = "', f'{field} = "{value}" #', 1))
    with pytest.raises(SpecError, match="not a valid identifier"):
        loads(text, tmp_path / "hostile.toml")
    assert list(tmp_path.iterdir()) == []


def test_hostile_claim_is_rejected(tmp_path, monkeypatch, no_eval):
    monkeypatch.chdir(tmp_path)
    text = spec() + "\n[claims]\ndC_dB = '''__import__('os').system('touch PWNED')'''\n"
    with pytest.raises(SpecError) as info:
        loads(text, "hostile.toml")
    assert info.value.line == line_of(text, "dC_dB")
    assert list(tmp_path.iterdir()) == []


def test_good_specs_load_without_eval(no_eval):
    for path in sorted(SPECS.glob("*.toml")):
        load(path)


def test_an_undeclared_elementwise_input_says_how_to_declare_it(tmp_path):
    text = spec(equations='[equations]\nz = "W@x + x + U*h + B"\na = "tanh(z)"\n')
    err = check_error(tmp_path, text, "z =", "x", "only enter through a matrix product")
    assert 'input = { x = "elementwise" }' in str(err)
    assert "n_in = n_out" in str(err)


def test_an_elementwise_input_stands_in_equations_and_in_products():
    text = spec(
        head=HEAD.replace('input = "x"', 'input = { x = "elementwise" }'),
        equations='[equations]\nz = "W@x + U*h + B"\na = "tanh(z) + (1 - tanh(z))*x"\n',
    )
    cell = loads(text)
    assert cell.input == "x" and cell.input_elementwise
    assert S("x") in cell.equation("a").expr.free_symbols
    assert [(p.matrix, p.arg) for p in cell.projections] == [("W", "x")]
    assert cell.matrix_shape("W") == ("out", "in")
    plain = loads(spec())
    assert not plain.input_elementwise
