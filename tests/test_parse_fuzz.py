"""Fuzzing the spec parser: whatever the text, ``loads`` returns a model or raises SpecError.

Three sources of input: random TOML documents, specs assembled from grammar pieces (names,
operators, ``@``, primitive calls, numbers, garbage tokens), and random edits of the
shipped specs. A model that loads must also derive, and every name in it must be a
checked identifier (names reach generated code).
"""

from __future__ import annotations

import json
import keyword
import re
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import symbolic
from symbolic.derive import derive
from symbolic.model import Cell, Cost
from symbolic.parse import SpecError, loads
from symbolic.primitives import PRIMITIVES

SPECS = Path(symbolic.__file__).parent / "specs"
SHIPPED = [p.read_text() for p in sorted(SPECS.glob("*.toml"))]

FUZZ = settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- grammar pieces ---------------------------------------------------------------------

VECTORS = ["x", "h", "c", "a", "z", "B", "U", "q", "r", "G"]
MATRICES = ["W", "V", "R", "U"]
ODD_NAMES = [
    "lambda", "sum", "np", "input", "open", "__import__", "_t0", "W_x", "dz", "da_in",
    "tanh", "1a", "a-b", "é", "", "a b", "dC_da", "self", "True", "None", "match",
]  # fmt: skip
FUNCTIONS = sorted(PRIMITIVES) + ["softmax", "abs", "eval", "sigmoid_prime", "W.T"]
NUMBERS = [
    "0", "1", "2", "0.5", "3.", ".5", "1e5", "1e309", "1e-400", "1_000", "0x1F", "1j",
    "10**400", "(-1)**0.5", "2**2**2**2**2", "0**-1", "1/0", "nan", "inf",
]  # fmt: skip
BINARY = ["+", "-", "*", "/", "**", "@", "//", "%", "<", "and", ",", "if", "==", "|"]
GARBAGE = [
    "(", ")", "[", "]", "{", "}", ",", ".", ":", ";", "=", "'", '"', "\\", "#", "\n", "\t",
    "\x00", "lambda", "for", "in", "yield", "await", "...", "@", "**", "__class__", "\u2028",
    "'''", '"""', "\r", "é", "$", "?",
]  # fmt: skip

names = st.sampled_from(VECTORS + MATRICES + ODD_NAMES)
atoms = st.one_of(st.sampled_from(VECTORS), st.sampled_from(NUMBERS), names)


def _combine(children):
    return st.one_of(
        st.tuples(children, st.sampled_from(BINARY), children).map(" ".join),
        st.tuples(st.sampled_from(FUNCTIONS), children).map(lambda t: f"{t[0]}({t[1]})"),
        st.tuples(st.sampled_from(MATRICES + VECTORS[:2]), children).map(
            lambda t: f"{t[0]}@{t[1]}"
        ),
        st.tuples(st.sampled_from(MATRICES), st.sampled_from(["x", "h", "a", "(r*h)"])).map(
            "@".join
        ),
        children.map(lambda s: f"({s})"),
        children.map(lambda s: f"-{s}"),
    )


#: Mostly well-formed expressions over the pool of names.
expressions = st.recursive(atoms, _combine, max_leaves=12)


@st.composite
def mutated(draw, text_strategy):
    """A text with garbage tokens inserted and characters deleted at random places."""
    text = draw(text_strategy)
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(text)))
        if draw(st.booleans()):
            text = text[:at] + draw(st.sampled_from(GARBAGE + BINARY)) + text[at:]
        else:
            text = text[:at] + text[at + 1 :]
    return text


token_soup = st.lists(
    st.sampled_from(GARBAGE + BINARY + VECTORS + NUMBERS + FUNCTIONS), max_size=12
).map(" ".join)
equation_text = st.one_of(expressions, expressions, mutated(expressions), token_soup)


def toml_string(value: str) -> str:
    # A JSON string is a TOML basic string (both escape control characters as \uXXXX).
    return json.dumps(value, ensure_ascii=False)


def toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else toml_string(key)


@st.composite
def cell_specs(draw):
    """A spec that looks like a cell, with names and equations drawn from the grammar."""
    # Mostly valid frames, so that the equations are reached.
    kind = draw(st.sampled_from(["recurrent"] * 4 + ["feedforward"] * 2 + ["cost", "conv"]))
    lines = [f"name = {toml_string(draw(st.sampled_from(['cell'] * 6 + ['lambda', '1x'])))}"]
    lines.append(f"kind = {toml_string(kind)}")
    lines.append(f"input = {toml_string(draw(st.sampled_from(['x'] * 6 + ['h', 'input'])))}")
    output = draw(st.sampled_from(["a", "a", "a", "z", "y"]))
    lines.append(f"output = {toml_string(output)}")
    if kind == "cost":
        lines.append(f"prediction = {toml_string(output)}")
        lines.append(f'target = "y"\nper_unit = {toml_string(draw(equation_text))}')
    targets = st.sampled_from(["a", "a", "c", "z"]) | names
    states = draw(
        st.lists(
            st.tuples(st.sampled_from(["h", "c", "g"]), targets),
            min_size=1 if kind == "recurrent" else 0,
            max_size=2 if kind == "recurrent" else 1,
            unique_by=lambda t: t[0],
        )
    )
    if states:
        body = ", ".join(f"{toml_key(s)} = {toml_string(t)}" for s, t in states)
        lines.append(f"state = {{ {body} }}")
    lines.append("[params]")
    kinds = st.sampled_from(["matrix", "vector"] * 4 + ["scalar"])
    params = draw(
        st.lists(
            st.tuples(st.sampled_from(MATRICES) | names, kinds),
            max_size=5,
            unique_by=lambda t: t[0],
        )
    )
    lines += [f"{toml_key(p)} = {toml_string(k)}" for p, k in params]
    lines.append("[equations]")
    eq_names = draw(
        st.lists(
            st.sampled_from(["z", "r", "q", "c", "a"]) | names, min_size=1, max_size=5, unique=True
        )
    )
    lines += [f"{toml_key(n)} = {toml_string(draw(equation_text))}" for n in eq_names]
    if draw(st.integers(0, 4)) == 0:
        lines.append("[claims]")
        keys = st.sampled_from(["dC_dW", "dC_dB", "dC_dx", "dC_dh", "dC_dz", "W"])
        claim_text = st.one_of(equation_text, st.just("W.T @ (dC_da*tanh_prime(z))"))
        for key in draw(st.lists(keys, max_size=3, unique=True)):
            lines.append(f"{toml_key(key)} = {toml_string(draw(claim_text))}")
    return "\n".join(lines) + "\n"


@st.composite
def wellformed_specs(draw):
    """Specs close to valid: the GRN's frame with one equation drawn from the grammar."""
    eq = draw(expressions)
    return (
        'name = "cell"\nkind = "recurrent"\ninput = "x"\noutput = "a"\nstate = { h = "a" }\n'
        '[params]\nW = "matrix"\nV = "matrix"\nU = "vector"\nB = "vector"\n'
        '[equations]\nz = "W@x + U*h + B"\n'
        f"r = {toml_string(eq)}\n"
        'a = "tanh(z + r) + V@(r*h)"\n'
    )


toml_scalars = st.one_of(
    st.text(max_size=12),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
)
toml_values = st.recursive(
    toml_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.text(max_size=8), children, max_size=3),
    ),
    max_leaves=5,
)


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{ " + ", ".join(f"{toml_string(k)} = {toml_value(v)}" for k, v in value.items()) + " }"


@st.composite
def random_toml(draw):
    """A random TOML document whose top-level keys are mostly the spec's own."""
    keys = st.one_of(st.sampled_from(sorted({"name", "kind", "input", "output", "state", "params", "equations", "claims", "prediction", "target", "per_unit", "title"})), st.text(max_size=8))  # fmt: skip
    doc = draw(st.dictionaries(keys, toml_values, max_size=8))
    scalars = {k: v for k, v in doc.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in doc.items() if isinstance(v, dict)}
    lines = [f"{toml_string(k)} = {toml_value(v)}" for k, v in scalars.items()]
    for table, body in tables.items():
        lines.append(f"[{toml_string(table)}]")
        lines += [f"{toml_string(k)} = {toml_value(v)}" for k, v in body.items()]
    return "\n".join(lines) + "\n"


# --- the property -----------------------------------------------------------------------


def model_or_spec_error(text: str) -> None:
    try:
        model = loads(text, "fuzz.toml")
    except SpecError as err:
        assert str(err).startswith("fuzz.toml"), err
        return
    assert isinstance(model, Cell | Cost)
    if isinstance(model, Cost):
        return
    names = [*model.params, *model.states, model.input, model.output]
    names += [eq.name for eq in model.equations] + [p.name for p in model.projections]
    for name in names:
        assert name.isidentifier() and name.isascii() and not keyword.iskeyword(name), name
    held = {model.input, *model.states, *model.equation_names}
    for proj in model.projections:
        assert proj.arg in held and model.params.get(proj.matrix) == "matrix", proj
    derivation = derive(model)
    str(derivation)


@FUZZ
@given(st.text(max_size=200))
def test_random_text(text):
    model_or_spec_error(text)


@FUZZ
@given(random_toml())
def test_random_toml(text):
    model_or_spec_error(text)


@FUZZ
@given(cell_specs())
def test_specs_from_grammar_pieces(text):
    model_or_spec_error(text)


@FUZZ
@given(wellformed_specs())
def test_wellformed_frames_with_random_equations(text):
    model_or_spec_error(text)


@FUZZ
@given(mutated(st.sampled_from(SHIPPED)))
def test_edited_shipped_specs(text):
    model_or_spec_error(text)
