"""The NumPy plan's nodes (symbolic/backends/numpy/nodes.py), their printer, and the
names the plan binds because its nodes read them.

The printer is checked line by line against the exact code; the bound names against an
independent reading of the printed lines (every identifier outside comments and string
literals), over every shipped cell.
"""

from __future__ import annotations

import re

import pytest
import sympy as sp

from symbolic import generate, parse
from symbolic.backends.numpy import layout, plan, printer
from symbolic.backends.numpy.nodes import (
    Alloc,
    Apply,
    Call,
    Comment,
    Copy,
    Fill,
    Grouped,
    If,
    Index,
    Let,
    MultiLet,
    Name,
    Op,
    Paren,
    Primitive,
    Raw,
    Reduce,
    Str,
    Sym,
    Tuple,
    at,
    mentioned,
    method,
    transposed,
)
from symbolic.model import Cell

h, WTu = sp.symbols("h WTu")

PRINTED = [
    (Comment('a = "b"\\'), ['# a = \\"b\\"\\\\']),
    (Comment("two\nlines"), ["# two\\nlines"]),
    (Alloc("G_seq", "(_T, _B, _n_out)"), ["G_seq = np.empty((_T, _B, _n_out), _dtype)"]),
    (Alloc("_cw0", like="a"), ["_cw0 = np.empty_like(a)"]),
    (Let(Name("G"), at("G_seq", "_t")), ["G = G_seq[_t]"]),
    (Let(at(at("_h_all", "1:"), "_t"), Name("a")), ["_h_all[1:][_t] = a"]),
    (
        Let(Index(Name("grads"), Str("B")), Reduce(Grouped(Sym(h * WTu)), "(0, 1)"), "+="),
        ['grads["B"] += (WTu*h).sum(axis=(0, 1))'],
    ),
    (Let(Name("g"), Reduce(Grouped(Sym(h, (("h", "h_seq"),))), "0")), ["g = h_seq.sum(axis=0)"]),
    (Call("np.add", (Name("a"), Raw("1.0")), Name("c")), ["np.add(a, 1.0, out=c)"]),
    (Copy(at("_S_dh", "_k"), Name("dh")), ["np.copyto(_S_dh[_k], dh)"]),
    (Fill(Name("dh_next"), "0"), ["dh_next.fill(0)"]),
    (Primitive("tanh", Name("Zc"), Name("ac")), ["np.tanh(Zc, out=ac)"]),
    (
        MultiLet(("_w_dh", "dh_next"), (Name("dh_next"), Name("dh"))),
        ["_w_dh, dh_next = dh_next, dh"],
    ),
    (
        Let(Name("_W_in"), Apply("np.concatenate", (Tuple((Name("Wu"), Name("Wc"))),))),
        ["_W_in = np.concatenate((Wu, Wc))"],
    ),
    (
        Let(Name("_dW"), transposed(Paren(Op("@", (transposed("_x2"), Name("_dP2")))))),
        ["_dW = (_x2.T @ _dP2).T"],
    ),
    (
        Let(Name("_P"), method("_x", "reshape", Raw("_T"), Raw("-1"))),
        ["_P = _x.reshape(_T, -1)"],
    ),
    (Let(Name("s"), method("_dP2", "sum", axis=Raw("0"))), ["s = _dP2.sum(axis=0)"]),
    (
        If(Name("need_dx"), (Let(Name("dx"), Op("+", (Name("a"), Name("b")))),)),
        ["if need_dx:", "    dx = a + b"],
    ),
]


@pytest.mark.parametrize(("node", "lines"), PRINTED)
def test_each_node_prints_as_its_line(node, lines):
    assert printer.lines([node]) == lines


def test_nodes_know_what_they_read_and_write():
    call = Call("np.multiply", (Name("k"), at("G_seq", "_t")), at("out_seq", "_t"))
    assert call.reads() == {"k", "G_seq"} and call.writes() == {"out_seq"}
    grad = Let(Index(Name("grads"), Str("W")), Op("@", (transposed("dZ"), Name("x"))), "+=")
    assert grad.reads() == {"dZ", "x", "grads"} and grad.writes() == {"grads"}
    assert Alloc("b", like="a").reads() == {"a"} and Alloc("b", "(_B, _n_out)").reads() == set()
    assert Sym(h * WTu, (("h", "h_seq"),)).names() == {"h_seq", "WTu"}
    assert Comment("uses G and h").reads() == set()
    branch = If(Name("need_dx"), (Let(Name("dx"), Name("dP")),))
    assert branch.reads() == {"need_dx", "dP"} and branch.writes() == {"dx"}
    assert mentioned([call, branch]) == {"k", "G_seq", "out_seq", "need_dx", "dP", "dx"}


def test_a_name_is_an_identifier():
    with pytest.raises(ValueError, match="not a name"):
        Name("G_seq[_t]")


def _identifiers(lines: list[str]) -> set[str]:
    """Every identifier in code lines, outside comments and string literals (the
    reading the plan once did with regular expressions, kept here as the oracle)."""
    found: set[str] = set()
    for line in lines:
        if not line.lstrip().startswith("#"):
            code = re.sub(r"\"[^\"]*\"", "", line)
            found |= set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", code))
    return found


CELLS = [p for p in generate.builtin_specs() if isinstance(parse.load(p), Cell)]


@pytest.mark.parametrize("spec", CELLS, ids=lambda p: p.stem)
def test_the_plan_binds_exactly_what_its_code_reads(spec):
    kernel = generate.compile_model(parse.load(spec)).kernel
    _, keys = layout.cell(kernel, {})
    params = set(kernel.cell.params)
    if "ff_backward" in keys:
        read = _identifiers(keys["ff_backward"] + keys["ff_grads"])
        assert set(keys["ff_backward_params"]) == params & read
        assert set(keys["ff_cached"]) == set(kernel.cached) & read
        return
    read = _identifiers(sum((keys[k] for k in plan.BACKWARD_KEYS), []))
    assert set(keys["bptt_params"]) == params & read
    for line in keys["cache_reads"]:
        assert line.split(" = ")[0] in read
    forward = [keys[k] for k in ("projections", "alloc", "before", "bind", "step")]
    forward = sum(forward, [])
    for line in keys["before"] + keys["projections"]:
        target = line.split(" = ")[0]
        if re.fullmatch(r"_k\d+|\w+_seq", target):
            # a hoisted constant, a view of the product: bound only for code that reads it
            assert target in _identifiers([x for x in forward if x is not line]), target
