"""Spec (TOML) -> checked model (pipeline stage 1, ``model``).

Input: a spec file's path. Output: a :class:`~symbolic.model.Cell` or
:class:`~symbolic.model.Cost`.

A spec is data: its equations are read by walking Python's ``ast`` and building SymPy
objects node by node. Nothing in a spec is ever evaluated (no ``eval``, ``sympify`` or
``parse_expr`` of its text), so loading one never runs code. Every error is a
:class:`SpecError` naming the file, the line and the symbol.
"""

from __future__ import annotations

import ast
import builtins
import dataclasses
import hashlib
import keyword
import re
import tomllib
from pathlib import Path

import sympy as sp

from symbolic import inits, primitives, reductions, sizes
from symbolic.model import (
    COST,
    FEEDFORWARD,
    INPUT_KINDS,
    KINDS,
    RECURRENT,
    Cell,
    Claim,
    Cost,
    Equation,
    Init,
    Projection,
)

#: Names generated code uses for its own modules.
RESERVED = frozenset(
    {
        "np",
        "math",
        "numba",
        "nb",
        "prange",
        "torch",
        "jax",
        "jnp",
        "lax",
        "C",
        # the generated modules' API names and arguments
        "NAME",
        "KIND",
        "PARAMS",
        "STATES",
        "SPEC_SHA256",
        "RECURRENCE",
        "param_shapes",
        "init_params",
        "forward",
        "backward",
        "loss",
        "params",
        "cache",
        "grads",
        "state0",
        "dstate",
        "da",
        "dx",
        "dstate0",
        "need_dx",
        "apply",
        "Cell",
        # cache["state"] holds the states after the last step
        "state",
    }
)
#: Named constants an equation may use (exact: verification keeps pi as pi).
CONSTANTS = {"pi": sp.pi}
#: Functions beyond the primitives (:mod:`symbolic.reductions`): reductions over the
#: layer's units and elementwise functions of two arguments.
FUNCTIONS = (*reductions.SPEC_REDUCTIONS, *reductions.SPEC_BINARY)
#: Suffixes generated code appends to names (buffers, seeds, carried adjoints).
RESERVED_SUFFIXES = ("_seq", "_in", "_next")
CELL_KEYS = {
    "name",
    "title",
    "kind",
    "input",
    "output",
    "state",
    "params",
    "init",
    "equations",
    "claims",
    "latex_claims",
    "sizes",
}
COST_KEYS = {"name", "title", "kind", "prediction", "target", "per_unit", "claims", "inputs"}
#: The positional arguments of a cost's ``loss(a, y, ...)``: no input may take them.
LOSS_ARGUMENTS = ("a", "y")
PARAM_KINDS = ("matrix", "vector")
#: ``input = { x = "elementwise" }``: the input may stand outside products (n_in = n_out).
ELEMENTWISE = "elementwise"
MAX_EXPR_NODES = 2000
#: Deepest SymPy expression an equation may build (later stages recurse over it).
MAX_EXPR_DEPTH = 40
#: Largest numeric exponent and constant: SymPy evaluates powers of numbers exactly, so
#: ``2**10**10**10`` would never finish.
MAX_EXPONENT = 64
MAX_CONSTANT_BITS = 4096


class SpecError(ValueError):
    """A spec that cannot be used: names the file, the line and the symbol."""

    def __init__(self, path: Path | str, line: int | None, symbol: str | None, message: str):
        self.path = str(path)
        self.line = line
        self.symbol = symbol
        self.message = message
        where = f"{_one_line(self.path)}:{line}" if line else _one_line(self.path)
        what = f" '{_one_line(symbol, 80)}'" if symbol else ""
        super().__init__(f"{where}:{what} {_one_line(message, 400)}")


def _one_line(text: str, limit: int = 1000) -> str:
    """Text from a spec as an error message shows it: one line (newlines, control and
    invisible characters as their escapes), at most ``limit`` characters."""
    out = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)
    return out if len(out) <= limit else out[: limit - 3] + "..."


class _UsedTooEarly(SpecError):
    """A reference to an equation defined later (maybe a cycle: the loader looks)."""


class _Lines:
    """Where each key of a TOML file stands (tomllib keeps no positions)."""

    _HEADER = re.compile(r"^\s*\[\s*([A-Za-z0-9_.\"' -]+?)\s*\]\s*(#.*)?$")
    _KEY = re.compile(r"""^\s*("([^"\\]|\\.)*"|'[^']*'|[A-Za-z0-9_-]+)\s*=""")

    def __init__(self, text: str):
        self.lines: dict[tuple[str, str], int] = {}
        self.tables: dict[str, int] = {}
        #: line -> the key (or table) written on it, to name the symbol of a TOML error
        self.names: dict[int, str] = {}
        #: (table, key, line) of each key written a second time
        self.duplicates: list[tuple[str, str, int]] = []
        table = ""
        multiline = None  # the delimiter of a multi-line string being skipped
        # TOML ends lines at "\n" only; str.splitlines() would also split at \u2028,
        # \x0c, ... inside comments and strings and shift every later line number.
        for number, raw in enumerate(text.split("\n"), start=1):
            if multiline:
                if raw.count(multiline) % 2:
                    multiline = None
                continue
            header = self._HEADER.match(raw)
            if header and not raw.lstrip().startswith("[["):
                table = header.group(1).strip().strip("\"'")
                self.tables.setdefault(table, number)
                self.names[number] = table
                continue
            key = self._KEY.match(raw)
            if key:
                name = key.group(1).strip("\"'")
                if (table, name) in self.lines:
                    self.duplicates.append((table, name, number))
                self.lines.setdefault((table, name), number)
                self.names[number] = name
                # A value opening a multi-line string: its lines are not keys.
                value = raw[key.end() :].lstrip()
                for delim in ('"""', "'''"):
                    if value.startswith(delim) and value.count(delim) % 2:
                        multiline = delim

    def of(self, table: str, key: str) -> int | None:
        if (table, key) in self.lines:
            return self.lines[(table, key)]
        if not table:
            return self.tables.get(key)  # a top-level key written as a [table]
        # An inline table (state = { h = "a" }) has no header: fall back to its key's line.
        return self.tables.get(table) or self.lines.get(("", table))


def _check_identifier(path, line, name, what: str) -> None:
    if not isinstance(name, str) or not name.isidentifier() or not name.isascii():
        raise SpecError(path, line, str(name), f"{what} is not a valid identifier")
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        raise SpecError(path, line, name, f"{what} shadows the Python keyword '{name}'")
    if hasattr(builtins, name):
        raise SpecError(path, line, name, f"{what} shadows the Python builtin '{name}'")
    if name in primitives.PRIMITIVES:
        raise SpecError(path, line, name, f"{what} shadows the primitive '{name}'")
    if name in CONSTANTS:
        raise SpecError(path, line, name, f"{what} shadows the constant '{name}'")
    if name in FUNCTIONS:
        raise SpecError(path, line, name, f"{what} shadows the function '{name}'")
    if name in RESERVED:
        raise SpecError(path, line, name, f"{what} is reserved for generated code")
    if name.endswith(RESERVED_SUFFIXES):
        raise SpecError(
            path,
            line,
            name,
            f"{what} may not end with {', '.join(RESERVED_SUFFIXES)} (kept for buffers)",
        )
    if name.startswith("d_"):
        raise SpecError(
            path, line, name, f"{what} may not start with 'd_' (kept for adjoints of temporaries)"
        )
    if name.startswith("_"):
        raise SpecError(path, line, name, f"{what} may not start with '_' (kept for temporaries)")


def _string(path, lines: _Lines, data: dict, key: str, *, required=True, default=None) -> str:
    if key not in data:
        if required:
            raise SpecError(path, None, key, f"missing required key '{key}'")
        return default
    value = data[key]
    if not isinstance(value, str):
        raise SpecError(path, lines.of("", key), key, f"'{key}' must be a string")
    return value


class _ExprBuilder:
    """Builds a SymPy expression from a parsed Python expression, node by node."""

    def __init__(self, path, line: int, target: str, names: dict[str, str], *, claims=False):
        self.path = path
        self.line = line
        self.target = target
        # name -> role: "input", "state", "vector", "matrix", "equation", "target", ...
        self.names = names
        self.claims = claims
        self.projections: list[tuple[str, sp.Expr]] = []
        self.transposed: list[tuple[str, sp.Expr]] = []
        self.used: set[str] = set()
        self.nodes = 0

    def error(self, symbol, message, error=SpecError):
        if isinstance(symbol, str) and len(symbol) > 80:
            symbol = symbol[:77] + "..."
        raise error(self.path, self.line, symbol, f"in '{self.target}': {message}")

    def build(self, text: str) -> sp.Expr:
        if not isinstance(text, str):
            raise SpecError(self.path, self.line, self.target, "the equation must be a string")
        bad = next(
            (c for c in text if not (c.isascii() and (c.isprintable() or c in " \t\r\n"))), None
        )
        if bad is not None:
            # Python would read a look-alike letter (NFKC) as another name, and a control
            # or bidi character would reach the generated code's comments
            raise SpecError(
                self.path,
                self.line,
                self.target,
                f"the character {bad!r} (U+{ord(bad):04X}): equations are ASCII",
            )
        try:
            # In parentheses, so that an equation may span lines (a TOML multi-line
            # string) as Python allows inside brackets.
            tree = ast.parse("(\n" + text.strip() + "\n)", mode="eval")
        except SyntaxError as exc:
            raise SpecError(
                self.path, self.line, self.target, f"syntax error in '{text}': {exc.msg}"
            ) from None
        except (ValueError, MemoryError, RecursionError) as exc:
            raise SpecError(
                self.path, self.line, self.target, f"cannot read '{text}': {exc}"
            ) from None
        try:
            expr = self.visit(tree.body)
            # the text generated code shows: the parsed tree printed back (one line, no
            # comment, nothing but what the expression is)
            self.normalized = ast.unparse(tree.body)
        except RecursionError:
            self.error(self.target, "expression nested too deeply")
        if _depth(expr) > MAX_EXPR_DEPTH:
            self.error(self.target, f"expression nested deeper than {MAX_EXPR_DEPTH} levels")
        self.check_numbers(expr)
        return expr

    def check_numbers(self, expr: sp.Expr) -> None:
        """Every constant part of the expression is a finite real float64 value
        (``1e308*10`` overflows, ``log(-1)`` is complex, ``exp(1000)`` is inf)."""
        stack = [expr]
        while stack:
            node = stack.pop()
            if not node.is_number:
                stack.extend(node.args)
                continue
            try:
                value = complex(node.evalf(30))
                real = float(value.real)
            except (TypeError, ValueError, OverflowError, ZeroDivisionError):
                value, real = complex("nan"), float("nan")
            if value.imag != 0 or not abs(real) < float("inf"):
                what = "is not a real number" if value.imag != 0 else "is not a finite float64"
                self.error(sp.sstr(node), f"the constant {what} (value {value!r})")

    def visit(self, node) -> sp.Expr:
        self.nodes += 1
        if self.nodes > MAX_EXPR_NODES:
            self.error(self.target, f"expression longer than {MAX_EXPR_NODES} nodes")
        method = getattr(self, "visit_" + type(node).__name__, None)
        if method is None:
            # The symbol is the offending text: a node type name would not help a reader.
            self.error(ast.unparse(node), f"unsupported syntax ({type(node).__name__})")
        return method(node)

    def visit_Constant(self, node):
        value = node.value
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.error(repr(value), "only numbers may appear as constants")
        if isinstance(value, int):
            return self.check_constant(node, sp.Integer(value))
        if value != value or value in (float("inf"), float("-inf")):
            self.error(repr(value), "constants must be finite")
        return sp.Rational(repr(value)) if len(repr(value)) < 30 else sp.Float(value)

    def visit_Name(self, node):
        name = node.id
        role = self.names.get(name)
        if role is None and name in CONSTANTS:
            return CONSTANTS[name]
        if role is None:
            self.error(name, f"unknown name '{name}'")
        if role == "later":
            self.error(name, f"'{name}' is used before its definition", _UsedTooEarly)
        if role == "matrix":
            self.error(name, f"matrix parameter '{name}' may only stand left of '@'")
        if role == "input" and not self._in_projection and not self.elementwise_input:
            self.error(
                name,
                f"the input '{name}' has n_in units: it may only enter through a matrix "
                f"product (W@{name}), unless the spec declares it elementwise "
                f'(input = {{ {name} = "{ELEMENTWISE}" }}: n_in = n_out)',
            )
        self.used.add(name)
        return sp.Symbol(name)

    _in_projection = False
    #: the cell's input is declared elementwise: it may stand outside products
    elementwise_input = False

    def visit_UnaryOp(self, node):
        operand = self.visit(node.operand)
        if isinstance(node.op, ast.USub):
            return -operand
        if isinstance(node.op, ast.UAdd):
            return operand
        self.error(ast.unparse(node), f"unsupported operator ({type(node.op).__name__})")

    def visit_BinOp(self, node):
        if isinstance(node.op, ast.MatMult):
            return self.matmul(node)
        left, right = self.visit(node.left), self.visit(node.right)
        op = node.op
        if isinstance(op, ast.Add):
            return left + right
        if isinstance(op, ast.Sub):
            return left - right
        if isinstance(op, ast.Mult):
            return self.check_constant(node, left * right)
        if isinstance(op, ast.Div):
            if right == 0:
                self.error(ast.unparse(node.right), "division by zero")
            return self.check_constant(node, left / right)
        if isinstance(op, ast.Pow):
            if left == 0 and right.is_number and right.is_negative:
                self.error(ast.unparse(node), "zero to a negative power")
            if right.is_number and not abs(right) <= MAX_EXPONENT:
                self.error(ast.unparse(node), f"exponent larger than {MAX_EXPONENT}")
            result = left**right
            if result.is_number and result.is_extended_real is not True:
                self.error(ast.unparse(node), "not a real number")
            return self.check_constant(node, result)
        self.error(ast.unparse(node), f"unsupported operator ({type(op).__name__})")

    def check_constant(self, node, value: sp.Expr) -> sp.Expr:
        """Reject exact constants too large to compute with (each op stays cheap)."""
        if isinstance(value, sp.Rational) and (
            max(abs(value.p).bit_length(), value.q.bit_length()) > MAX_CONSTANT_BITS
        ):
            self.error(ast.unparse(node), f"constant larger than 2**{MAX_CONSTANT_BITS}")
        return value

    def matmul(self, node):
        left = node.left
        transposed = (
            self.claims
            and isinstance(left, ast.Attribute)
            and left.attr == "T"
            and isinstance(left.value, ast.Name)
        )
        matrix_node = left.value if transposed else left
        if not isinstance(matrix_node, ast.Name) or self.names.get(matrix_node.id) != "matrix":
            self.error(ast.unparse(left), "the left side of '@' must be a matrix parameter")
        matrix = matrix_node.id
        self.used.add(matrix)
        previous = self._in_projection
        self._in_projection = True
        try:
            arg = self.visit(node.right)
        finally:
            self._in_projection = previous
        inputs = {s.name for s in arg.free_symbols if self.names.get(s.name) == "input"}
        if inputs and arg != sp.Symbol(next(iter(inputs))):
            self.error(
                ast.unparse(node),
                "the input may only be multiplied alone (W@x): it has n_in units, "
                "the other symbols n_out",
            )
        if transposed:
            self.transposed.append((matrix, arg))
            return sp.Symbol(f"{matrix}_T_{len(self.transposed) - 1}")
        self.projections.append((matrix, arg))
        return sp.Symbol(f"__proj{len(self.projections) - 1}")

    def visit_Call(self, node):
        if not isinstance(node.func, ast.Name):
            self.error(ast.unparse(node.func), "only primitive functions may be called")
        fname = node.func.id
        if fname in FUNCTIONS and not self.claims:
            return self.function(node, fname)
        if node.keywords or len(node.args) != 1 or isinstance(node.args[0], ast.Starred):
            self.error(fname, f"'{fname}' takes exactly one positional argument")
        if fname in primitives.PRIMITIVES:
            return primitives.function(fname)(self.visit(node.args[0]))
        if self.claims and fname.endswith("_prime") and fname[:-6] in primitives.PRIMITIVES:
            return primitives.prime(fname[:-6], self.visit(node.args[0]))
        if self.claims and fname in FUNCTIONS:
            self.error(fname, f"'{fname}' is not supported in claims (a claim is per neuron)")
        known = ", ".join(sorted(primitives.PRIMITIVES))
        self.error(
            fname,
            f"unknown function '{fname}' (primitives: {known}; over the layer's units: "
            f"{', '.join(FUNCTIONS)})",
        )

    def function(self, node, fname: str) -> sp.Expr:
        """A reduction over the layer's units (``sum(e)``, ``mean(e)``, ``max(e)``) or an
        elementwise function of two arguments (``maximum(a, b)``, ``minimum(a, b)``)."""
        arity = 2 if fname in reductions.SPEC_BINARY else 1
        if (
            node.keywords
            or len(node.args) != arity
            or any(isinstance(a, ast.Starred) for a in node.args)
        ):
            what = "two positional arguments" if arity == 2 else "exactly one positional argument"
            hint = " (the elementwise maximum of two values is 'maximum(a, b)')"
            self.error(fname, f"'{fname}' takes {what}" + (hint if fname == "max" else ""))
        args = [self.visit(a) for a in node.args]
        if arity == 2:
            return reductions.FUNCTIONS[fname].func(*args)
        (arg,) = args
        if fname == "sum" and arg.is_number:
            self.error(
                ast.unparse(node),
                "the sum of a constant over the layer's units depends on the layer's size: "
                "write it with a vector (a parameter or an equation)",
            )
        return reductions.FUNCTIONS[reductions.SPEC_REDUCTIONS[fname]].func(arg)

    def visit_Attribute(self, node):
        self.error(ast.unparse(node), "attributes are not allowed here")


def _depth(expr: sp.Basic) -> int:
    """The depth of an expression tree (iterative: the tree may be deep)."""
    deepest, stack = 0, [(expr, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((arg, depth + 1) for arg in node.args)
    return deepest


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def load(path: str | Path) -> Cell | Cost:
    """Read and check one spec file.

    Args:
        path: The TOML file.

    Returns:
        The checked model.

    Raises:
        SpecError: Anything wrong, naming the file, the line and the symbol.
    """
    from symbolic import write

    path = Path(path)
    try:
        raw = write.read_spec(path)
    except write.WriteError as exc:
        raise SpecError(path, None, None, str(exc).split(": ", 1)[1]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SpecError(path, None, None, "the spec is not UTF-8 text") from None
    return loads(text, path)


def loads(text: str, path: str | Path = "<spec>") -> Cell | Cost:
    """Check a spec given as text (``path`` only names it in errors)."""
    path = Path(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        line = int(match.group(1)) if match else None
        scanned = _Lines(text)
        symbol = scanned.names.get(line)
        if line is None and scanned.duplicates:
            # tomllib reports a key written twice "at end of document": find it.
            table, symbol, line = scanned.duplicates[0]
            first = scanned.lines[(table, symbol)]
            raise SpecError(
                path,
                line,
                symbol,
                f"TOML syntax error: '{symbol}' is defined twice (first at line {first})",
            ) from None
        raise SpecError(path, line, symbol, f"TOML syntax error: {exc}") from None
    except RecursionError:
        # tomllib parses nested arrays and inline tables recursively.
        raise SpecError(path, None, None, "TOML syntax error: values nested too deeply") from None
    lines = _Lines(text)
    kind = _string(path, lines, data, "kind")
    if kind not in KINDS:
        raise SpecError(
            path, lines.of("", "kind"), kind, f"unknown kind (expected one of {', '.join(KINDS)})"
        )
    allowed = COST_KEYS if kind == COST else CELL_KEYS
    for key in data:
        if key not in allowed:
            raise SpecError(
                path, lines.of("", key) or lines.of(key, ""), key, f"unknown key for a {kind} spec"
            )
    name = _string(path, lines, data, "name")
    _check_identifier(path, lines.of("", "name"), name, "the spec name")
    title = _string(path, lines, data, "title", required=False, default=name)
    if kind == COST:
        return _load_cost(path, text, data, lines, name, title)
    return _load_cell(path, text, data, lines, name, title, kind)


def _load_cost(path, text, data, lines, name, title) -> Cost:
    prediction = _string(path, lines, data, "prediction")
    target = _string(path, lines, data, "target")
    for key, value in (("prediction", prediction), ("target", target)):
        _check_identifier(path, lines.of("", key), value, f"the {key}")
    if prediction == target:
        raise SpecError(
            path, lines.of("", "target"), target, "prediction and target are the same name"
        )
    line = lines.of("", "per_unit")
    source = _string(path, lines, data, "per_unit")
    inputs = _load_cost_inputs(path, lines, data, prediction, target)
    names = {prediction: "vector", target: "vector"} | dict.fromkeys(inputs, "vector")
    builder = _ExprBuilder(path, line, "per_unit", names)
    per_unit = builder.build(source)
    if prediction not in builder.used:
        raise SpecError(path, line, prediction, "per_unit does not depend on the prediction")
    for unused in (n for n in inputs if n not in builder.used):
        raise SpecError(path, lines.of("inputs", unused), unused, "the input is never used")
    cost = Cost(
        path,
        name,
        title,
        prediction,
        target,
        per_unit,
        line,
        builder.normalized,
        text,
        _digest(text),
        inputs=inputs,
    )
    cost.claims = _load_cost_claims(path, lines, _table(path, lines, data, "claims"), cost)
    return cost


def _load_cost_inputs(path, lines, data, prediction: str, target: str) -> dict[str, str]:
    """``[inputs]``: a cost's named inputs, ``name = "row"`` (one value per row, i.e.
    per sample and step, broadcast over the units: a mask) or ``name = "unit"`` (one
    value per unit, broadcast over the rows: class weights). They become keyword
    arguments of ``loss``; the cost is never differentiated by them."""
    inputs = {}
    for name, kind in _table(path, lines, data, "inputs").items():
        line = lines.of("inputs", name)
        _check_identifier(path, line, name, "the input name")
        if name in (prediction, target):
            raise SpecError(path, line, name, f"'{name}' is already the prediction or the target")
        if name in LOSS_ARGUMENTS:
            raise SpecError(
                path, line, name, f"'{name}' is a positional argument of loss(a, y): rename it"
            )
        if kind not in INPUT_KINDS:
            raise SpecError(
                path,
                line,
                name,
                f"unknown input kind {kind!r} (expected 'row': one value per sample and "
                "step, or 'unit': one value per unit)",
            )
        inputs[name] = kind
    return inputs


class _CostClaimBuilder(_ExprBuilder):
    """A cost claim's value: the cost's names, primitives and their ``<name>_prime``,
    and the reductions over the units (a cost's derivative at one unit may read the
    whole row, as softmax(a) - y does)."""

    def visit_Call(self, node):
        fname = node.func.id if isinstance(node.func, ast.Name) else None
        if fname and fname.endswith("_prime") and fname[:-6] in primitives.PRIMITIVES:
            if node.keywords or len(node.args) != 1 or isinstance(node.args[0], ast.Starred):
                self.error(fname, f"'{fname}' takes exactly one positional argument")
            return primitives.prime(fname[:-6], self.visit(node.args[0]))
        return super().visit_Call(node)


def _load_cost_claims(path, lines, claims_src: dict, cost: Cost) -> list[Claim]:
    """``[claims]`` of a cost: ``dC_d<prediction>``, the derivative by the prediction at
    one unit of the cost of one row (the sum of ``per_unit`` over the units of one
    sample at one step; the batch mean's 1/B is not part of it)."""
    names = {cost.prediction: "vector", cost.target: "vector"}
    names |= dict.fromkeys(cost.inputs, "vector")
    claims = []
    for key, source in claims_src.items():
        line = lines.of("claims", key)
        if key != "dC_d" + cost.prediction:
            raise SpecError(
                path,
                line,
                key,
                f"a cost's claim is dC_d{cost.prediction} (the derivative by the prediction; "
                "the target and the inputs are data)",
            )
        expr = _CostClaimBuilder(path, line, key, names).build(source)
        claims.append(Claim(key, cost.prediction, expr, line, str(source)))
    return claims


def _table(path, lines, data, key) -> dict:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise SpecError(path, lines.of("", key), key, f"'{key}' must be a table")
    return value


def _load_cell(path, text, data, lines, name, title, kind) -> Cell:
    input_name, elementwise = _load_input(path, lines, data)
    output = _string(path, lines, data, "output")
    _check_identifier(path, lines.of("", "input"), input_name, "the input")
    _check_identifier(path, lines.of("", "output"), output, "the output")

    names = _Names(path, lines, input_name)
    states = _load_states(path, lines, data, kind, names)
    named = _load_sizes(path, lines, data, kind)
    declared = _declared_shapes(path, lines, data, named)
    params = _load_params(path, lines, data, names)
    equations_src = _table(path, lines, data, "equations")
    if not equations_src:
        raise SpecError(path, lines.of("", "equations"), "equations", "the cell has no equations")
    order = list(equations_src)
    for eq_name in order:
        names.claim("equations", eq_name, "later")

    body = _Equations(path, lines, names.roles, equations_src)
    body.elementwise_input = elementwise
    for eq_name in order:
        body.add(eq_name)

    _check_matrix_shapes(path, body.projections, input_name)
    _check_sums_of_constants(path, body.equations)
    _check_uses(path, lines, input_name, output, states, params, equations_src, body.used)
    _check_all_needed(path, lines, output, states, equations_src, body.references)
    names.check_adjoint_clashes()

    cell = Cell(
        path=path,
        name=name,
        title=title,
        kind=kind,
        input=input_name,
        output=output,
        states=dict(states),
        params={p: params[p] for p in params},
        equations=body.equations,
        projections=body.projections,
        claims=[],
        text=text,
        sha256=_digest(text),
        init=_load_init(path, lines, _table(path, lines, data, "init"), params),
        input_elementwise=elementwise,
    )
    _infer_sizes(path, lines, cell, named, declared, names.roles)
    if named and _table(path, lines, data, "claims"):
        raise SpecError(
            path,
            lines.of("", "claims"),
            "claims",
            "claims are read per neuron of n_out units: not yet with named sizes",
        )
    cell.claims = _load_claims(path, lines, _table(path, lines, data, "claims"), cell, names.roles)
    cell.roles = dict(names.roles)
    cell.latex_claims = _load_latex_claims(path, lines, _table(path, lines, data, "latex_claims"))
    return cell


def _load_input(path, lines, data) -> tuple[str, bool]:
    """``input = "x"`` (x enters through matrix products only, n_in units) or
    ``input = { x = "elementwise" }`` (x may also stand in the equations as a lane value:
    n_in = n_out, checked by the generated code at run time)."""
    value = data.get("input")
    line = lines.of("", "input")
    if not isinstance(value, dict):
        return _string(path, lines, data, "input"), False
    if len(value) != 1:
        raise SpecError(
            path,
            line,
            "input",
            f'an input table names one input: input = {{ x = "{ELEMENTWISE}" }}',
        )
    ((name, how),) = value.items()
    if how != ELEMENTWISE:
        raise SpecError(
            path,
            line,
            str(name),
            f'unknown input use {how!r} (expected "{ELEMENTWISE}": x may stand outside '
            f'products, n_in = n_out; or write input = "{name}" for products only)',
        )
    return name, True


class _Names:
    """The names a cell defines, each with its role and the line that defines it."""

    def __init__(self, path, lines: _Lines, input_name: str):
        self.path = path
        self.lines = lines
        self.roles: dict[str, str] = {input_name: "input"}
        self.defined_at: dict[str, int | None] = {input_name: lines.of("", "input")}

    def claim(self, table: str, key: str, role: str) -> None:
        """Define ``key`` (a checked identifier, defined once) in ``role``."""
        line = self.lines.of(table, key)
        what = {"state": "state", "vector": "parameter", "later": "equation"}[role]
        _check_identifier(self.path, line, key, f"the {what} name")
        if key in self.roles:
            raise SpecError(
                self.path, line, key, f"'{key}' is already defined (line {self.defined_at[key]})"
            )
        self.roles[key] = role
        self.defined_at[key] = line

    def check_adjoint_clashes(self) -> None:
        # The adjoint of each symbol is named d<symbol> in generated code.
        for sym in list(self.roles):
            if ("d" + sym) in self.roles:
                raise SpecError(
                    self.path,
                    self.defined_at.get("d" + sym),
                    "d" + sym,
                    f"'d{sym}' would clash with the adjoint of '{sym}' in generated code",
                )


def _load_states(path, lines, data, kind, names: _Names) -> dict:
    states = _table(path, lines, data, "state")
    if kind == RECURRENT and not states:
        raise SpecError(path, lines.of("", "kind"), "state", "a recurrent cell needs a 'state'")
    if kind == FEEDFORWARD and states:
        raise SpecError(path, lines.of("", "state"), "state", "a feedforward cell has no 'state'")
    for state, target in states.items():
        names.claim("state", state, "state")
        if not isinstance(target, str):
            raise SpecError(
                path, lines.of("state", state), state, "a state maps to an equation name"
            )
    return states


def _load_params(path, lines, data, names: _Names) -> dict:
    params = _table(path, lines, data, "params")
    params = {p: v.get("kind") if isinstance(v, dict) else v for p, v in params.items()}
    for param, pkind in params.items():
        names.claim("params", param, "vector")
        if pkind not in PARAM_KINDS:
            raise SpecError(
                path,
                lines.of("params", param),
                param,
                f"unknown parameter kind {pkind!r} (expected 'matrix' or 'vector')",
            )
        names.roles[param] = "matrix" if pkind == "matrix" else "vector"
    return params


def _load_sizes(path, lines, data, kind) -> dict[str, int]:
    """``[sizes]``: each named width's default (:mod:`symbolic.sizes`); a feedforward
    cell's only (a recurrent cell's step is n_out wide)."""
    table = _table(path, lines, data, "sizes")
    if table and kind == RECURRENT:
        raise SpecError(
            path,
            lines.of("", "sizes"),
            "sizes",
            "named sizes are for feedforward cells (a recurrent cell's values have n_out units)",
        )
    named = {}
    for size, value in table.items():
        line = lines.of("sizes", size)
        try:
            named[size] = sizes.read_default(size, value)
        except ValueError as exc:
            raise SpecError(path, line, size, str(exc)) from None
    return named


def _declared_shapes(path, lines, data, named: dict[str, int]) -> dict[str, tuple[str, ...]]:
    """The shapes ``[params]`` tables declare in size names (the plain forms: none)."""
    declared = {}
    for param, value in _table(path, lines, data, "params").items():
        try:
            _, shape = sizes.read_param(value, named)
        except ValueError as exc:
            raise SpecError(path, lines.of("params", param), param, str(exc)) from None
        if shape is not None:
            declared[param] = shape
    return declared


def _infer_sizes(path, lines, cell: Cell, named, declared, roles) -> None:
    """Every parameter's shape and vector's width (:func:`symbolic.sizes.infer`), each
    named size used and clashing with no name of the cell."""
    for size in named:
        if size in roles:
            raise SpecError(
                path, lines.of("sizes", size), size, f"the size '{size}' is also a name of the cell"
            )
    try:
        cell.shapes, cell.widths = sizes.infer(cell, declared)
    except sizes.SizeError as exc:
        raise SpecError(path, exc.line, exc.symbol, exc.message) from None
    cell.sizes = dict(named)
    used = {s for shape in cell.shapes.values() for s in shape}
    for size in named:
        if size not in used:
            raise SpecError(
                path, lines.of("sizes", size), size, "the size is no parameter's width (unused)"
            )
    if named and sizes.N_OUT not in sizes.sources(cell):
        raise SpecError(
            path, lines.of("", "params"), "params", "no parameter has n_out units on an axis"
        )


def _load_init(path, lines, init_src: dict, params: dict) -> dict[str, Init]:
    """``[init]``: each entry names a parameter and one of :mod:`symbolic.inits`."""
    init = {}
    for param, value in init_src.items():
        line = lines.of("init", param)
        if param not in params:
            raise SpecError(path, line, param, f"init for '{param}', which is not a parameter")
        try:
            init[param] = inits.read(value, params[param])
        except ValueError as exc:
            raise SpecError(path, line, param, str(exc)) from None
    return init


class _Equations:
    """A cell's equations, read in order, and the matrix products they contain: each
    distinct ``matrix @ vector`` becomes one named projection.

    ``roles`` is the cell's (shared with the expression builders): each equation, lifted
    vector and projection is added to it as it is read.
    """

    def __init__(self, path, lines: _Lines, roles: dict[str, str], equations_src: dict):
        self.path = path
        self.lines = lines
        self.roles = roles
        self.equations_src = equations_src
        self.order = list(equations_src)
        self.equations: list[Equation] = []
        self.projections: list[Projection] = []
        self.by_key: dict[tuple[str, sp.Expr], str] = {}
        self.used: set[str] = set()
        self.references: dict[str, set[str]] = {}
        self.temp = 0
        self.elementwise_input = False

    def add(self, eq_name: str) -> None:
        """Read the equation ``eq_name``, naming the products it contains."""
        line = self.lines.of("equations", eq_name)
        builder = _ExprBuilder(self.path, line, eq_name, self.roles)
        builder.elementwise_input = self.elementwise_input
        expr = self.build(builder, eq_name, line)
        self.references[eq_name] = builder.used
        self.used |= builder.used
        substitutions = {}
        for index, (matrix, arg) in enumerate(builder.projections):
            # Inner products come first (W@(U@h)): their names replace them in arg.
            proj_name = self.product(matrix, arg.xreplace(substitutions), line)
            substitutions[sp.Symbol(f"__proj{index}")] = sp.Symbol(proj_name)
        expr = expr.xreplace(substitutions)
        # A constant equation is allowed (e.g. a fixed gate); it just has no inputs.
        self.equations.append(Equation(eq_name, expr, line, builder.normalized))
        self.roles[eq_name] = "equation"

    def build(self, builder: _ExprBuilder, eq_name: str, line) -> sp.Expr:
        """The equation's expression; a reference to a later equation that closes a cycle
        is reported as the cycle."""
        source = self.equations_src[eq_name]
        # Find cycles before reporting a plain use-before-definition.
        try:
            return builder.build(source)
        except _UsedTooEarly as exc:
            # Only a reference to a later equation can start a cycle (not, say, a syntax
            # error, whose symbol is the equation's own name).
            if exc.symbol in self.order and self.roles.get(exc.symbol) == "later":
                cycle = _find_cycle(eq_name, exc.symbol, self.equations_src, self.order, self.roles)
                if cycle:
                    raise SpecError(
                        self.path, line, exc.symbol, "cycle: " + " -> ".join(cycle)
                    ) from None
            raise

    def product(self, matrix: str, arg: sp.Expr, line) -> str:
        """The name of the projection ``matrix @ arg``, made the first time it is seen."""
        # Only the input, a state or an equation is a vector the forward pass holds
        # when it multiplies; anything else (an expression, a vector parameter, a
        # product) gets its own lifted equation.
        direct = isinstance(arg, sp.Symbol) and self.roles.get(arg.name) in (
            "input",
            "state",
            "equation",
        )
        key = (matrix, arg)
        proj_name = self.by_key.get(key)
        if proj_name is not None:
            return proj_name
        if direct:
            arg_name = arg.name
        else:
            arg_name = f"_t{self.temp}"
            self.temp += 1
            self.equations.append(Equation(arg_name, arg, line, str(arg), lifted=True))
            self.roles[arg_name] = "equation"
        proj_name = f"{matrix}_{arg_name}" if direct else f"{matrix}{arg_name}"
        while proj_name in self.roles:
            proj_name += "_p"
        self.by_key[key] = proj_name
        self.projections.append(Projection(proj_name, matrix, arg_name, line))
        self.roles[proj_name] = "projection"
        return proj_name


def _check_matrix_shapes(path, projections: list[Projection], input_name: str) -> None:
    # A matrix's shape is inferred from what it multiplies: it must be one shape.
    shapes: dict[str, tuple[str, int]] = {}
    for proj in projections:
        size = "n_in" if proj.arg == input_name else "n_out"
        first, first_line = shapes.setdefault(proj.matrix, (size, proj.line))
        if size != first:
            raise SpecError(
                path,
                proj.line,
                proj.matrix,
                f"matrix '{proj.matrix}' multiplies vectors of {first} units (line "
                f"{first_line}) and of {size} units: its shape cannot be both",
            )


def _check_sums_of_constants(path, equations: list[Equation]) -> None:
    """No ``sum`` over the units of an equation whose value is a constant (``e = 2``,
    ``a = sum(e)``): its value would depend on the layer's size."""
    constants: dict[sp.Symbol, sp.Expr] = {}
    for eq in equations:
        value = eq.expr.xreplace(constants)
        if value.is_number:
            constants[sp.Symbol(eq.name)] = value
        for node in sp.preorder_traversal(value):
            if reductions.name_of(node) == reductions.SUM and node.args[0].is_number:
                raise SpecError(
                    path,
                    eq.line,
                    eq.name,
                    "the sum of a constant over the layer's units depends on the layer's "
                    "size: write it with a vector (a parameter or an equation of one)",
                )


def _check_uses(path, lines, input_name, output, states, params, equations_src, used) -> None:
    """The output and every state have a defining equation; every state, parameter and
    the input is used."""
    if output not in equations_src:
        raise SpecError(path, lines.of("", "output"), output, "the output has no defining equation")
    for state, target in states.items():
        if target not in equations_src:
            raise SpecError(
                path,
                lines.of("state", state),
                target,
                f"state '{state}' has no defining equation '{target}'",
            )
        if state not in used:
            raise SpecError(path, lines.of("state", state), state, f"state '{state}' is never used")
    for param in params:
        if param not in used:
            raise SpecError(
                path, lines.of("params", param), param, f"parameter '{param}' is unused"
            )
    if input_name not in used:
        raise SpecError(path, lines.of("", "input"), input_name, "the input is never used")


def _check_all_needed(path, lines, output, states, equations_src, references) -> None:
    # Every equation must reach the output or a state: dead equations are mistakes.
    needed = {output, *states.values()}
    for eq_name in reversed(equations_src):
        if eq_name in needed:
            needed |= {n for n in references[eq_name] if n in equations_src}
    for eq_name in equations_src:
        if eq_name not in needed:
            raise SpecError(
                path,
                lines.of("equations", eq_name),
                eq_name,
                "the equation is never used (it feeds neither the output nor a state)",
            )


def _find_cycle(start, first, equations_src, order, roles) -> list[str] | None:
    """A path start -> first -> ... -> start through later equations, if any."""
    names = set(order)

    def refs(eq):
        try:
            tree = ast.parse(str(equations_src[eq]).strip(), mode="eval")
        except (SyntaxError, ValueError, MemoryError, RecursionError):
            return set()
        return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id in names}

    stack = [(first, [start, first])]
    seen = set()
    while stack:
        node, trail = stack.pop()
        if node == start:
            return trail
        if node in seen:
            continue
        seen.add(node)
        for nxt in sorted(refs(node)):
            stack.append((nxt, trail + [nxt]))
    return None


def _claim_names(cell: Cell, roles) -> dict[str, str]:
    names = {n: r for n, r in roles.items() if r != "projection"}
    names = {n: ("vector" if r in ("later", "equation") else r) for n, r in names.items()}
    # Inside claims the input stands for the entry's input x_j, so it may appear alone.
    names[cell.input] = "claim-input"
    symbols = [n for n, r in roles.items() if r not in ("matrix", "projection")]
    for sym in symbols:
        names["dC_d" + sym] = "adjoint"
    return names


def _claim_wrt(path, line, key: str, cell: Cell) -> str:
    if not key.startswith("dC_d"):
        raise SpecError(path, line, key, "a claim's key is dC_d<name>")
    wrt = key[4:]
    if wrt not in cell.params and wrt != cell.input and wrt not in cell.states:
        raise SpecError(
            path, line, key, f"'{wrt}' is not a parameter, the input or a state of the cell"
        )
    return wrt


def _check_elementwise_claim(path, line, key: str, cell: Cell, wrt: str, used: set) -> None:
    """A cell whose input is elementwise: a claim may not differentiate by the input or
    name it (in a claim the input stands for a matrix entry's x_j; as a lane value it is
    x_i: the two readings differ)."""
    if cell.input_elementwise and (wrt == cell.input or cell.input in used):
        raise SpecError(
            path,
            line,
            key,
            f"claims by or naming the elementwise input '{cell.input}' are not supported "
            "(x_j of a matrix entry and the lane value x_i would be one symbol)",
        )


def _load_latex_claims(path, lines, table: dict) -> list[tuple[str, str, int | None]]:
    # [latex_claims]: dC_d<name> = LaTeX in a paper's notation (symbolic.verify reads
    # them), and the optional settings "notation" and "section".
    out = []
    for key, source in table.items():
        line = lines.of("latex_claims", key)
        if not isinstance(source, str):
            raise SpecError(path, line, key, "a LaTeX claim is a string")
        if key not in ("notation", "section"):
            out.append((key, source, line))
    return out


def claim_from_text(cell: Cell, key: str, text: str, line: int | None, source: str) -> Claim:
    """A claim of ``cell`` whose value ``text`` is in the claim language (a LaTeX claim,
    once translated); ``source`` is what the spec wrote.

    Raises:
        SpecError: The key or the value cannot be a claim of this cell.
    """
    claim = _load_claims(cell.path, _FixedLine(line), {key: text}, cell, cell.roles)[0]
    return dataclasses.replace(claim, source=source)


class _FixedLine:
    """Lines of one claim translated from elsewhere: every key is on ``line``."""

    def __init__(self, line: int | None):
        self.line = line

    def of(self, table: str, key: str) -> int | None:
        return self.line


def _load_claims(path, lines, claims_src, cell: Cell, roles) -> list[Claim]:
    claims = []
    names = _claim_names(cell, roles)
    for key, source in claims_src.items():
        line = lines.of("claims", key)
        wrt = _claim_wrt(path, line, key, cell)
        builder = _ExprBuilder(path, line, key, names, claims=True)
        expr = builder.build(source)
        _check_elementwise_claim(path, line, key, cell, wrt, builder.used)
        transposed = {f"{m}_T_{i}": (m, arg) for i, (m, arg) in enumerate(builder.transposed)}
        # A product the cell computes (W@x) is its value at this neuron.
        products = {(proj.matrix, proj.arg): proj.name for proj in cell.projections}
        lifted = {eq.expr: eq.name for eq in cell.equations if eq.lifted}
        substitutions = {}
        for index, (matrix, arg) in enumerate(builder.projections):
            arg_name = arg.name if isinstance(arg, sp.Symbol) else lifted.get(arg)
            name = products.get((matrix, arg_name))
            if name is None:
                raise SpecError(
                    path,
                    line,
                    key,
                    f"{matrix}@{arg} is not a product the cell computes: a claim's value is "
                    "per neuron (write M.T @ v for a sum over the layer's neurons)",
                )
            substitutions[sp.Symbol(f"__proj{index}")] = sp.Symbol(name)
        expr = expr.xreplace(substitutions)
        transposed = {k: (m, v.xreplace(substitutions)) for k, (m, v) in transposed.items()}
        claims.append(Claim(key, wrt, expr, line, str(source), transposed))
    return claims
