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


def expression(node: nodes.Expr, matmul: str | None = None) -> str:
    """The code of an array expression of the plan; a matrix product ``a @ b`` as
    ``matmul(a, b)`` where ``matmul`` names a function (the Numba modules' ``_matmul``)."""
    if isinstance(node, nodes.Name):
        return node.id
    if isinstance(node, nodes.Raw):
        return node.text
    if isinstance(node, nodes.Str):
        return f'"{node.text}"'
    if isinstance(node, nodes.Index):
        return f"{expression(node.base, matmul)}[{expression(node.index, matmul)}]"
    if isinstance(node, nodes.Attr):
        return f"{expression(node.base, matmul)}.{node.attr}"
    if isinstance(node, nodes.Apply):
        func = node.func if isinstance(node.func, str) else expression(node.func, matmul)
        args = [expression(a, matmul) for a in node.args]
        args += [f"{key}={expression(value, matmul)}" for key, value in node.kwargs]
        return f"{func}({', '.join(args)})"
    if isinstance(node, nodes.Op):
        operands = [expression(e, matmul) for e in node.operands]
        if node.op == "@" and matmul:
            product = operands[0]
            for operand in operands[1:]:
                product = f"{matmul}({product}, {operand})"
            return product
        return f" {node.op} ".join(operands)
    if isinstance(node, nodes.Paren):
        return f"({expression(node.inner, matmul)})"
    if isinstance(node, nodes.Grouped):
        text = expression(node.inner, matmul)
        return text if text.isidentifier() else f"({text})"
    if isinstance(node, nodes.Tuple):
        return f"({', '.join(expression(e, matmul) for e in node.items)})"
    if isinstance(node, nodes.Sym):
        return code(node.expr, dict(node.rename))
    if isinstance(node, nodes.Reduce):
        return f"{expression(node.value, matmul)}.sum(axis={node.axes})"
    raise TypeError(f"not an expression of the plan: {node!r}")


def statement(node: nodes.Node, matmul: str | None = None) -> list[str]:
    """The lines of one statement of the plan (``matmul``: see ``expression``)."""
    if isinstance(node, nodes.Comment):
        return ["# " + display(node.text)]
    if isinstance(node, nodes.Let):
        return [f"{expression(node.target, matmul)} {node.op} {expression(node.value, matmul)}"]
    if isinstance(node, nodes.Alloc):
        if node.like is not None:
            return [f"{node.target} = np.empty_like({node.like})"]
        return [f"{node.target} = np.empty({node.shape}, _dtype)"]
    if isinstance(node, nodes.Call):
        args = ", ".join(expression(a, matmul) for a in node.args)
        return [f"{node.func}({args}, out={expression(node.out, matmul)})"]
    if isinstance(node, nodes.Copy):
        return [f"np.copyto({expression(node.out, matmul)}, {expression(node.source, matmul)})"]
    if isinstance(node, nodes.Fill):
        return [f"{expression(node.out, matmul)}.fill({node.value})"]
    if isinstance(node, nodes.Primitive):
        entry = FORMS[node.name] if node.name in FORMS else REDUCTIONS[node.name]
        return [entry.out.format(i=expression(node.arg, matmul), o=expression(node.out, matmul))]
    if isinstance(node, nodes.MultiLet):
        values = ", ".join(expression(v, matmul) for v in node.values)
        return [f"{', '.join(node.targets)} = {values}"]
    if isinstance(node, nodes.If):
        return [f"if {expression(node.condition, matmul)}:"] + [
            "    " + line for line in lines(node.body, matmul)
        ]
    raise TypeError(f"not a statement of the plan: {node!r}")


def lines(statements: Iterable[nodes.Node], matmul: str | None = None) -> list[str]:
    """The lines of the plan's statements, as the templates receive them (``matmul``:
    see ``expression``)."""
    return [line for node in statements for line in statement(node, matmul)]
