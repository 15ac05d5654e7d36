"""Hypothesis strategies that build random *valid* specs, for differential fuzzing.

Each example is a :class:`FuzzSpec`: the TOML text of a feedforward cell, a recurrent
cell with one to three states, or a cost, and the set of constructs it contains (so a
test can show that a sample covers every one of them). The equations form a random DAG
over every primitive, ``+ - * /``, integer powers and constants, reductions over the
units (``sum``, ``mean``, ``max``) and ``maximum``/``minimum``; projections of the
input, of states, of intermediates and of expressions; projections used as factors and
products of two projections; states whose next value depends on no state; outputs that
are not states; a matrix used twice; vector parameters anywhere; an ``[init]`` entry
for some parameters (every initialisation); costs with named inputs (``[inputs]``: a
row input such as a mask, a unit input such as class weights); a hidden layer of a named
width (``[sizes]``); an input declared elementwise and used outside products (a term, a
factor, inside a primitive).

Numerics are kept tame so that a random point has finite values: ``log`` and division
only see positive arguments (``log(1 + e**2)``, ``e/(2 + tanh(f))``), ``exp`` sees
bounded ones unless drawn plain.
"""

from __future__ import annotations

import random
import re
import zlib
from dataclasses import dataclass, field

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from symbolic.primitives import PRIMITIVES

#: Every construct the strategy can produce (a test checks that a sample covers them).
FEATURES = frozenset(
    {f"primitive:{name}" for name in PRIMITIVES}
    | {"op:+", "op:-", "op:*", "op:/", "op:**", "constant"}
    | {"kind:feedforward", "kind:recurrent", "kind:cost"}
    | {"states:1", "states:2", "states:3"}
    | {"projection:input", "projection:state", "projection:intermediate"}
    | {"projection:expression", "projection:factor", "projection:product"}
    | {"state:stateless", "output:not-a-state", "matrix:twice", "vector:in-primitive"}
    | {"vector:in-projection", "vector:divisor", "vector:factor"}
    | {"claims:latex"}
    | {f"init:{name}" for name in ("constant", "normal", "uniform", "orthogonal", "chrono")}
    | {"init:indrnn", "init:bounds"}
    | {f"reduction:{name}" for name in ("sum", "mean", "max")}
    | {"function:maximum", "function:minimum"}
    | {"sizes:named"}
    | {"cost-input:row", "cost-input:unit"}
    | {"input:elementwise"}
)
#: How an equation uses an elementwise input (``input = { x = "elementwise" }``): as a
#: term, a factor, inside a primitive.
ELEMENTWISE_FORMS = ("({}) + x", "({})*(1 + 0.5*x)", "({}) + tanh(x)")
#: ``[init]`` entries the strategy draws, by parameter kind, with the feature each one is.
INITS = {
    "matrix": (
        ('"normal"', "normal"),
        ("{ normal = 0.5 }", "normal"),
        ("{ uniform = 2 }", "uniform"),
        ('"orthogonal"', "orthogonal"),
        ("{ orthogonal = -0.5 }", "orthogonal"),
        ('"zeros"', "constant"),
    ),
    "vector": (
        ('"ones"', "constant"),
        ("-0.5", "constant"),
        ('"chrono"', "chrono"),
        ("{ chrono = -1 }", "chrono"),
        ('"indrnn"', "indrnn"),
        ("{ uniform = [0.5, 1] }", "bounds"),
        ('"uniform"', "uniform"),
    ),
}

INPUT_MATRICES = ("Wa", "Wb", "Wc")
MATRICES = ("Ua", "Ub", "Uc")
VECTORS = ("va", "vb", "vc", "vd")
STATES = ("h", "c", "m")
CONSTANTS = ("0.5", "2", "1", "3", "0.25")


@dataclass
class FuzzSpec:
    """A random valid spec and the constructs it uses."""

    text: str
    kind: str
    features: set[str] = field(default_factory=set)

    def __repr__(self) -> str:  # hypothesis prints the falsifying example with this
        return f"FuzzSpec(kind={self.kind!r}, text=\n{self.text}\n)"


class _Builder:
    """Draws one expression tree at a time, tracking the names it uses."""

    def __init__(self, draw, recurrent: bool, states: list[str], features: set[str]):
        self.draw = draw
        self.recurrent = recurrent
        self.states = states
        self.features = features
        self.used: set[str] = set()
        self.matrix_uses: dict[str, int] = {}

    def matrix(self, pool) -> str:
        name = self.draw(st.sampled_from(pool))
        self.matrix_uses[name] = self.matrix_uses.get(name, 0) + 1
        if self.matrix_uses[name] == 2:
            self.features.add("matrix:twice")
        self.used.add(name)
        return name

    def vector(self) -> str:
        name = self.draw(st.sampled_from(VECTORS))
        self.used.add(name)
        return name

    def leaf(self, earlier: list[str]) -> tuple[str, str]:
        """(text, what): a leaf of an equation."""
        kinds = ["input", "vector", "constant"]
        if earlier:
            kinds += ["equation", "projection:intermediate"]
        if self.states:
            kinds += ["state", "projection:state", "projection:expression"]
        kind = self.draw(st.sampled_from(kinds))
        if kind == "input":
            self.features.add("projection:input")
            return f"{self.matrix(INPUT_MATRICES)}@x", "projection"
        if kind == "vector":
            return self.vector(), "vector"
        if kind == "constant":
            self.features.add("constant")
            return self.draw(st.sampled_from(CONSTANTS)), "constant"
        if kind == "equation":
            name = self.draw(st.sampled_from(earlier))
            self.used.add(name)
            return name, "symbol"
        if kind == "state":
            name = self.draw(st.sampled_from(self.states))
            self.used.add(name)
            return name, "symbol"
        if kind == "projection:state":
            self.features.add(kind)
            state = self.draw(st.sampled_from(self.states))
            self.used.add(state)
            return f"{self.matrix(MATRICES)}@{state}", "projection"
        if kind == "projection:intermediate":
            self.features.add(kind)
            name = self.draw(st.sampled_from(earlier))
            self.used.add(name)
            return f"{self.matrix(MATRICES)}@{name}", "projection"
        # a projection of an expression: U@(v*h), U@(e*h), U@(h + v)
        self.features.add("projection:expression")
        state = self.draw(st.sampled_from(self.states))
        self.used.add(state)
        other = self.draw(st.sampled_from([*earlier, "vector"]))
        if other == "vector":
            other = self.vector()
            self.features.add("vector:in-projection")
        else:
            self.used.add(other)
        op = self.draw(st.sampled_from(["*", "+"]))
        return f"{self.matrix(MATRICES)}@({other}{op}{state})", "projection"

    def expr(self, earlier: list[str], depth: int) -> tuple[str, str]:
        if depth <= 0 or self.draw(st.integers(0, 3)) == 0:
            return self.leaf(earlier)
        node = self.draw(
            st.sampled_from(["+", "-", "*", "*", "/", "**", "call", "call", "product", "reduce"])
        )
        if node == "reduce":
            return _reduction(
                self.draw, self.features, lambda: self.expr(earlier, depth - 1), self.vector
            )
        if node == "call":
            name = self.draw(st.sampled_from(sorted(PRIMITIVES)))
            self.features.add(f"primitive:{name}")
            arg, what = self.expr(earlier, depth - 1)
            if what == "vector":
                self.features.add("vector:in-primitive")
            if name == "log":  # positive arguments only
                form = self.draw(
                    st.sampled_from(["1 + ({})**2", "sigmoid({})", "softplus({}) + 1"])
                )
                if "sigmoid" in form:
                    self.features.add("primitive:sigmoid")
                if "softplus" in form:
                    self.features.add("primitive:softplus")
                return f"log({form.format(arg)})", "call"
            if name == "exp" and self.draw(st.booleans()):
                self.features.add("primitive:tanh")
                return f"exp(tanh({arg}))", "call"
            return f"{name}({arg})", "call"
        if node == "product":  # two projections multiplied
            left, lwhat = self.leaf(earlier)
            right, rwhat = self.leaf(earlier)
            if lwhat == rwhat == "projection":
                self.features.add("projection:product")
            if "projection" in (lwhat, rwhat):
                self.features.add("projection:factor")
            self.features.add("op:*")
            return f"({left})*({right})", "product"
        left, lwhat = self.expr(earlier, depth - 1)
        self.features.add(f"op:{node}")
        if node == "**":
            power = self.draw(st.sampled_from(["2", "3", "-1"]))
            if power == "-1":
                return f"(1 + ({left})**2)**-1", "power"
            return f"({left})**{power}", "power"
        right, rwhat = self.expr(earlier, depth - 1)
        if node == "*":
            if "projection" in (lwhat, rwhat):
                self.features.add("projection:factor")
            if "vector" in (lwhat, rwhat):
                self.features.add("vector:factor")
            return f"({left})*({right})", "product"
        if node == "/":  # a positive divisor
            if rwhat == "vector":
                self.features.add("vector:divisor")
            form = self.draw(st.sampled_from(["2 + tanh({})", "1 + ({})**2"]))
            self.features.add("primitive:tanh" if "tanh" in form else "op:**")
            return f"({left})/({form.format(right)})", "quotient"
        return f"({left}) {node} ({right})", "sum"


def _reduction(draw, features: set[str], operand, varying) -> tuple[str, str]:
    """``sum(e)``, ``mean(e)``, ``max(e)`` over the units, or ``maximum(a, b)`` /
    ``minimum(a, b)``; ``operand()`` draws an argument as ``(text, what)``, ``varying()``
    a name that is not a constant."""
    name = draw(st.sampled_from(["sum", "mean", "max", "maximum", "minimum"]))
    arg, what = operand()
    if name in ("maximum", "minimum"):
        features.add(f"function:{name}")
        other, _ = operand()
        return f"{name}({arg}, {other})", "call"
    features.add(f"reduction:{name}")
    if name == "sum" and what not in ("projection", "vector"):
        # the sum of a constant (or of an equation that is one) would depend on the
        # layer's size: the spec is refused, so the strategy never draws it
        arg = f"({arg})*{varying()}"
    return f"{name}({arg})", "call"


@st.composite
def cells(draw, kinds=("feedforward", "recurrent")) -> FuzzSpec:
    """A random valid feedforward or recurrent cell."""
    kind = draw(st.sampled_from(kinds))
    features = {f"kind:{kind}"}
    recurrent = kind == "recurrent"
    n_states = draw(st.integers(1, 3)) if recurrent else 0
    states = list(STATES[:n_states])
    if recurrent:
        features.add(f"states:{n_states}")
    builder = _Builder(draw, recurrent, states, features)
    n_eq = draw(st.integers(0, 4))
    names = [f"e{i}" for i in range(n_eq)]
    equations: dict[str, str] = {}
    for i, name in enumerate(names):
        equations[name] = builder.expr(names[:i], depth=draw(st.integers(1, 3)))[0]
    output_expr = builder.expr(names, depth=draw(st.integers(1, 3)))[0]
    targets = {}
    for s in states:
        # a state carries the output, an intermediate, or a value of the input alone
        choice = draw(st.sampled_from(["output", "intermediate", "stateless"]))
        if choice == "intermediate" and names:
            targets[s] = draw(st.sampled_from(names))
        elif choice == "stateless":
            name = f"p{s}"
            equations[name] = f"tanh({builder.matrix(INPUT_MATRICES)}@x + {builder.vector()})"
            features.update({"state:stateless", "primitive:tanh", "projection:input"})
            targets[s] = name
        else:
            targets[s] = "a"
    if recurrent and "a" not in targets.values():
        features.add("output:not-a-state")
    # Every state, the input and every intermediate must be read somewhere.
    extra = []
    if not re.search(r"@x\b", "".join(equations.values()) + output_expr):
        extra.append(f"{builder.matrix(INPUT_MATRICES)}@x")
        features.add("projection:input")
    for s in states:
        if s not in builder.used:
            extra.append(f"0.5*{s}")
            builder.used.add(s)
    read = set(builder.used)
    for name in equations:
        if name not in read and name not in targets.values():
            extra.append(name)
    if extra:
        output_expr = f"{output_expr} + " + " + ".join(extra)
    equations["a"] = output_expr
    sized = _hidden_layer(kind, equations, features)
    params = [m for m in (*INPUT_MATRICES, *MATRICES) if m in builder.used]
    params += [v for v in VECTORS if v in builder.used]
    elementwise = _elementwise_input(equations, features)
    input_line = 'input = { x = "elementwise" }' if elementwise else 'input = "x"'
    lines = [f'name = "fz_{kind[:2]}"', f'kind = "{kind}"', input_line, 'output = "a"']
    if recurrent:
        lines.append("state = { " + ", ".join(f'{s} = "{t}"' for s, t in targets.items()) + " }")
    kinds = {p: "matrix" if p[0] in "WU" else "vector" for p in params}
    lines += ["[sizes]", "hidden = 4"] if sized else []
    lines.append("[params]")
    lines += [f'{p} = "{kind}"' for p, kind in kinds.items()]
    lines += sized
    lines += _inits(lines, kinds, features)
    lines.append("[equations]")
    # the state-only equations (p<state>) come first: they read nothing but x
    order = [n for n in equations if n.startswith("p")] + [
        n for n in equations if not n.startswith("p")
    ]
    lines += [f'{n} = "{equations[n]}"' for n in order]
    if params and draw(st.booleans()):
        # a stated derivative in a paper's LaTeX: data for derivgen verify, which
        # generate reads and leaves alone (it changes no module)
        features.add("claims:latex")
        lines.append("[latex_claims]")
        lines.append(f"dC_d{params[-1]} = '\\frac{{\\partial C}}{{\\partial {params[-1]}_j}} = 0'")
    return FuzzSpec("\n".join(lines) + "\n", kind, features)


#: The hidden layer a feedforward cell may gain (``[sizes]``): its parameters' entries.
HIDDEN_PARAMS = [
    'Wh = { kind = "matrix", shape = ["hidden", "n_in"] }',
    'vh = { kind = "vector", size = "hidden" }',
    'Vh = "matrix"',
]
#: Its equation: elementwise, or with a reduction over the hidden units.
HIDDEN_EQUATIONS = ("tanh(Wh@x + vh)", "tanh(Wh@x + vh) - mean(Wh@x)*vh")


def _hidden_layer(kind: str, equations: dict[str, str], features: set[str]) -> list[str]:
    """Sometimes (picked by the equations' text: no draw, so the rest of the strategy
    draws what it drew before), a hidden layer of a named width for a feedforward cell:
    ``hz`` of ``hidden`` units enters the output as ``Vh@hz``. Returns the parameters'
    entries (none: no hidden layer)."""
    if kind != "feedforward":
        return []
    pick = random.Random(zlib.crc32("|".join(equations.values()).encode()))
    if pick.random() < 0.6:
        return []
    output = equations.pop("a")
    equations["hz"] = pick.choice(HIDDEN_EQUATIONS)
    equations["a"] = f"{output} + Vh@hz"
    features.add("sizes:named")
    if "mean" in equations["hz"]:
        features.add("reduction:mean")
    return list(HIDDEN_PARAMS)


def _elementwise_input(equations: dict[str, str], features: set[str]) -> bool:
    """Sometimes (picked by the equations' text, no draw: the sample CI runs keeps what
    it drew before), declare the input elementwise and use it in one equation outside a
    product (as a term, a factor or inside a primitive; ``equations`` is edited)."""
    pick = random.Random(zlib.crc32(repr(sorted(equations.items())).encode()))
    if pick.random() >= 0.3:
        return False
    # not the hidden layer's equation: x has n_out units, hz has ``hidden``
    name = pick.choice(sorted(n for n in equations if n != "hz"))
    equations[name] = pick.choice(ELEMENTWISE_FORMS).format(equations[name])
    features.add("input:elementwise")
    return True


def _inits(lines: list[str], kinds: dict[str, str], features: set[str]) -> list[str]:
    """An ``[init]`` table for some of the parameters (none, sometimes), picked by the
    spec's text so far: no draw, so the rest of the strategy draws what it drew before
    ``[init]`` existed (the sample CI runs stays the one it was)."""
    pick = random.Random(zlib.crc32("\n".join(lines).encode()))
    lines = []
    for param, kind in kinds.items():
        if pick.random() < 0.5:
            text, feature = pick.choice(INITS[kind])
            lines.append(f"{param} = {text}")
            features.add(f"init:{feature}")
    return ["[init]", *lines] if lines else []


@st.composite
def costs(draw) -> FuzzSpec:
    """A random valid cost of (a, y)."""
    features = {"kind:cost"}

    def expr(depth: int) -> str:
        if depth <= 0 or draw(st.integers(0, 2)) == 0:
            return draw(st.sampled_from(["a", "a", "y", "0.5", "2"]))
        node = draw(st.sampled_from(["+", "-", "*", "/", "**", "call", "reduce"]))
        if node == "reduce":
            text, _ = _reduction(
                draw, features, lambda: (f"({expr(depth - 1)}) + a", "sum"), lambda: "a"
            )
            return text
        if node not in ("call", "reduce"):
            features.add(f"op:{node}")
        if node == "call":
            name = draw(st.sampled_from(sorted(PRIMITIVES)))
            features.add(f"primitive:{name}")
            arg = expr(depth - 1)
            if name == "log":
                return f"log(1 + ({arg})**2)"
            return f"{name}({arg})"
        left = expr(depth - 1)
        if node == "**":
            return f"({left})**{draw(st.sampled_from(['2', '3']))}"
        right = expr(depth - 1)
        if node == "/":
            return f"({left})/(2 + tanh({right}))"
        return f"({left}) {node} ({right})"

    per_unit = expr(draw(st.integers(1, 4)))
    if not re.search(r"\ba\b", per_unit):
        per_unit = f"({per_unit}) + (a - y)**2"
    per_unit, inputs = _cost_inputs(per_unit, features)
    text = (
        'name = "fz_cost"\nkind = "cost"\nprediction = "a"\ntarget = "y"\n'
        f'per_unit = "{per_unit}"\n'
    ) + "".join(f"{line}\n" for line in inputs)
    return FuzzSpec(text, "cost", features)


def _cost_inputs(per_unit: str, features: set[str]) -> tuple[str, list[str]]:
    """Named inputs for some costs: a row input (a mask) multiplying the cost, a unit
    input (weights) multiplying it or entering a reduction, picked by the cost's text (no
    draw: the costs drawn before ``[inputs]`` existed stay the ones CI's sample holds)."""
    pick = random.Random(zlib.crc32(per_unit.encode()))
    inputs = []
    if pick.random() < 0.4:
        per_unit = f"m*({per_unit})"
        inputs.append('m = "row"')
        features.add("cost-input:row")
    if pick.random() < 0.4:
        per_unit = pick.choice(
            [f"w*({per_unit})", f"({per_unit}) + (a - sum(w*y))**2", f"({per_unit})/(1 + w**2)"]
        )
        inputs.append('w = "unit"')
        features.add("cost-input:unit")
    return per_unit, ["[inputs]", *inputs] if inputs else []


def specs() -> st.SearchStrategy[FuzzSpec]:
    """Cells (feedforward and recurrent) and costs, mostly cells."""
    return st.one_of(cells(), cells(("recurrent",)), costs())


def examples(
    strategy: st.SearchStrategy[FuzzSpec],
    count: int,
    *,
    derandomize: bool = True,
    seed: int | None = None,
) -> list[FuzzSpec]:
    """``count`` examples of ``strategy`` (the same ones every run when derandomized)."""
    found: list[FuzzSpec] = []

    @settings(
        max_examples=count,
        deadline=None,
        derandomize=derandomize,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(example):
        found.append(example)

    if seed is not None:
        collect = hypothesis_seed(seed)(collect)
    collect()
    return found
