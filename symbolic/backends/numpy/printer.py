"""The NumPy backend's printer: per-neuron expressions as NumPy array code, and the
plan's nodes (:mod:`.nodes`) as the lines the templates receive."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import sympy as sp

from symbolic.backends.numpy import nodes
from symbolic.backends.numpy.primitives import FORMS, REDUCTIONS
from symbolic.printing import Printer, display


class NumpyPrinter(Printer):
    """Arrays and ufuncs: ``np.tanh(Zc)``, ``_np_sigmoid(Zu)``."""

    forms = FORMS
    functions = REDUCTIONS
    sqrt = "np.sqrt"


def code(expr: sp.Expr, names: Mapping[str, str] | None = None) -> str:
    """The NumPy code of ``expr``, with symbols renamed through ``names``."""
    return NumpyPrinter(names).doprint(expr)


# --- the plan's nodes -------------------------------------------------------------------


def expression(node: nodes.Expr) -> str:
    """The code of an array expression of the plan."""
    if isinstance(node, nodes.Name):
        return node.id
    if isinstance(node, nodes.Raw):
        return node.text
    if isinstance(node, nodes.Str):
        return f'"{node.text}"'
    if isinstance(node, nodes.Index):
        return f"{expression(node.base)}[{expression(node.index)}]"
    if isinstance(node, nodes.Attr):
        return f"{expression(node.base)}.{node.attr}"
    if isinstance(node, nodes.Apply):
        func = node.func if isinstance(node.func, str) else expression(node.func)
        args = [expression(a) for a in node.args]
        args += [f"{key}={expression(value)}" for key, value in node.kwargs]
        return f"{func}({', '.join(args)})"
    if isinstance(node, nodes.Op):
        return f" {node.op} ".join(expression(e) for e in node.operands)
    if isinstance(node, nodes.Paren):
        return f"({expression(node.inner)})"
    if isinstance(node, nodes.Grouped):
        text = expression(node.inner)
        return text if text.isidentifier() else f"({text})"
    if isinstance(node, nodes.Tuple):
        return f"({', '.join(expression(e) for e in node.items)})"
    if isinstance(node, nodes.Sym):
        return code(node.expr, dict(node.rename))
    if isinstance(node, nodes.Reduce):
        return f"{expression(node.value)}.sum(axis={node.axes})"
    raise TypeError(f"not an expression of the plan: {node!r}")


def statement(node: nodes.Node) -> list[str]:
    """The lines of one statement of the plan."""
    if isinstance(node, nodes.Comment):
        return ["# " + display(node.text)]
    if isinstance(node, nodes.Let):
        return [f"{expression(node.target)} {node.op} {expression(node.value)}"]
    if isinstance(node, nodes.Alloc):
        if node.like is not None:
            return [f"{node.target} = np.empty_like({node.like})"]
        return [f"{node.target} = np.empty({node.shape}, _dtype)"]
    if isinstance(node, nodes.Call):
        args = ", ".join(expression(a) for a in node.args)
        return [f"{node.func}({args}, out={expression(node.out)})"]
    if isinstance(node, nodes.Copy):
        return [f"np.copyto({expression(node.out)}, {expression(node.source)})"]
    if isinstance(node, nodes.Fill):
        return [f"{expression(node.out)}.fill({node.value})"]
    if isinstance(node, nodes.Primitive):
        entry = FORMS[node.name] if node.name in FORMS else REDUCTIONS[node.name]
        return [entry.out.format(i=expression(node.arg), o=expression(node.out))]
    if isinstance(node, nodes.MultiLet):
        values = ", ".join(expression(v) for v in node.values)
        return [f"{', '.join(node.targets)} = {values}"]
    if isinstance(node, nodes.If):
        return [f"if {expression(node.condition)}:"] + ["    " + line for line in lines(node.body)]
    raise TypeError(f"not a statement of the plan: {node!r}")


def lines(statements: Iterable[nodes.Node]) -> list[str]:
    """The lines of the plan's statements, as the templates receive them."""
    return [line for node in statements for line in statement(node)]
