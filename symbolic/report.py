"""``derivgen report``: a Markdown document to hold next to a paper.

For each spec: the equations as written (LaTeX), the derived adjoint program per
intermediate, each claim with its verdict and corrected form, the recurrence analysis,
and the operation counts of the generated forward and backward steps.
"""

from __future__ import annotations

import argparse
import sys

import sympy as sp

from symbolic import passes, primitives, write
from symbolic.derive import derive, derive_cost
from symbolic.generate import builtin_specs
from symbolic.ir import AFFINE, COUPLED, DIAGONAL, NONE, MatVec
from symbolic.lower import lower
from symbolic.model import Cell, Cost
from symbolic.parse import load

RECURRENCE_TEXT = {
    DIAGONAL: (
        "**diagonal**: no matrix multiplies a state inside the time loop, so each lane "
        "(batch x neuron) depends only on itself over time. The Numba backend runs the "
        "forward and the backward pass as one compiled loop each, parallel over lanes."
    ),
    COUPLED: (
        "**matrix-coupled**: a state (or something computed from it) is multiplied by a "
        "matrix every step, so each step needs a matrix product inside the time loop."
    ),
    AFFINE: (
        "**affine in the state**: h_t = A_t h_{t-1} + b_t with A_t and b_t free of h, so "
        "the recurrence is also diagonal and can be evaluated by a parallel scan."
    ),
    NONE: "no recurrence (a feedforward cell).",
}


def _tex(expr: sp.Expr) -> str:
    # Temporaries (_c0, _t1) would start a LaTeX subscript: print them as c_0, t_1.
    temps = {s: sp.Symbol(s.name.lstrip("_")) for s in expr.free_symbols if s.name.startswith("_")}
    return sp.latex(expr.xreplace(temps), mul_symbol="dot")


def cell_section(cell: Cell) -> list[str]:
    """The report section of one cell."""
    derivation = derive(cell)
    kernel = lower(derivation)
    out = [f"## {cell.title} (`{cell.name}`)", ""]
    out.append(f"Spec: `{cell.path.name}`, sha256 `{cell.sha256[:16]}...`; kind: {cell.kind}.")
    out.append("")
    out += _equation_lines(cell)
    out += _adjoint_lines(kernel)
    out += _gradient_lines(cell, kernel)
    out += _recurrence_lines(kernel)
    out += _count_lines(kernel)
    if cell.claims:
        out += _claim_lines(cell, derivation)
    return out


def _equation_lines(cell: Cell) -> list[str]:
    """The equations per neuron (LaTeX) and what the states are."""
    out = ["### Equations, per neuron", "", "$$", r"\begin{aligned}"]
    projections = {sp.Symbol(p.name): sp.Symbol(f"({p.matrix} {p.arg})") for p in cell.projections}
    for eq in cell.equations:
        rhs = eq.expr.xreplace(projections)
        out.append(f"{sp.latex(sp.Symbol(eq.name))} &= {_tex(rhs)} \\\\")
    out.append(r"\end{aligned}")
    out.append("$$")
    out.append("")
    if cell.states:
        states = ", ".join(f"`{s}` is the previous step's `{t}`" for s, t in cell.states.items())
        out.append(f"States: {states}. `(W v)` is the projection sum_j W_ij v_j.")
        out.append("")
    return out


def _adjoint_lines(kernel) -> list[str]:
    """The table of the adjoint program of one step, in the order it runs."""
    out = ["### Derived adjoint program of one step", ""]
    out.append(
        "Each line is one adjoint (`dX` is dC/dX at this step), in the order the backward "
        "pass computes it; `_cN` are shared subexpressions."
    )
    out.append("")
    out.append("| adjoint | value | from |")
    out.append("|---|---|---|")
    for stmt in kernel.backward:
        if isinstance(stmt, MatVec):
            value = f"`{stmt.arg} @ {stmt.matrix}`"
        else:
            value = f"${_tex(stmt.expr)}$"
        out.append(f"| `{stmt.target}` | {value} | {stmt.comment} |")
    out.append("")
    return out


def _gradient_lines(cell: Cell, kernel) -> list[str]:
    """The parameter and input gradients as sums over the batch and time."""
    out = ["Parameter gradients (sums over the batch and every time step):", ""]
    for param, expr in kernel.vector_grads:
        out.append(f"- `d{param}` = sum of ${_tex(expr)}$")
    for param, terms in kernel.matrix_grads:
        text = " + ".join(f"`{adj}`^T `{arg}`" for adj, arg in terms)
        out.append(f"- `d{param}` = sum of {text}")
    terms = [f"`{adj} @ {m}`" for adj, m in kernel.input_grads]
    if kernel.input_adjoint is not None:  # an elementwise input's own adjoint
        terms.append(f"`{kernel.input_adjoint}` (the input used elementwise)")
    out.append(f"- `d{cell.input}` = {' + '.join(terms)}")
    out.append("")
    return out


def _recurrence_lines(kernel) -> list[str]:
    """The kind of recurrence, with the affine form of each state when there is one."""
    out = ["### Recurrence", "", RECURRENCE_TEXT[kernel.recurrence]]
    if kernel.affine:
        for state, (coeff, rest) in kernel.affine.items():
            out.append(
                f"- ${state}_t = A_t\\,{state}_{{t-1}} + b_t$ with $A_t = {_tex(coeff)}$, $b_t = {_tex(rest)}$"
            )
    out.append("")
    return out


def _count_lines(kernel) -> list[str]:
    """The operation counts of the generated forward and backward steps."""
    out = ["### Operation counts per lane and step (generated code)", ""]
    fwd = passes.count_ops(kernel.forward)
    bwd = passes.count_ops(kernel.backward)
    out.append(
        "| pass | arithmetic | primitive calls | matrix products in the loop | cached values |"
    )
    out.append("|---|---|---|---|---|")
    out.append(
        f"| forward | {fwd['arithmetic']} | {fwd['calls']} | {fwd['matvecs']} | {len(kernel.cached)} |"
    )
    out.append(
        f"| backward | {bwd['arithmetic']} | {bwd['calls']} | {bwd['matvecs']} | {len(kernel.stored)} stored adjoints |"
    )
    out.append("")
    out.append(
        f"Matrix products hoisted out of the time loop: {len(kernel.pre)} forward, "
        f"{sum(len(t) for _, t in kernel.matrix_grads) + len(kernel.input_grads)} backward."
    )
    out.append("")
    return out


def _claim_lines(cell: Cell, derivation) -> list[str]:
    """Each claim of the spec with its verdict and corrected form."""
    from symbolic.verify import SingleStep, verify_claim

    single = SingleStep(derivation)
    out = ["### Claims", ""]
    out.append("| claim | line | verdict | as written | corrected |")
    out.append("|---|---|---|---|---|")
    for claim in cell.claims:
        finding = verify_claim(cell, single, claim)
        corrected = f"`{finding.corrected}`" if finding.corrected else ""
        out.append(
            f"| `{claim.key}` | {claim.line} | **{finding.verdict}** | `{claim.source}` | {corrected} |"
        )
    out.append("")
    return out


def cost_section(cost: Cost) -> list[str]:
    derived = derive_cost(cost)
    return [
        f"## {cost.title} (`{cost.name}`)",
        "",
        f"$$C = \\frac{{1}}{{B}} \\sum {_tex(derived.per_unit)}, \\qquad "
        f"\\frac{{\\partial C}}{{\\partial {cost.prediction}}} = \\frac{{1}}{{B}}\\left({_tex(derived.gradient)}\\right)$$",
        "",
    ]


def report(paths) -> str:
    """The Markdown report of the given specs."""
    out = ["# derivgen report", ""]
    out.append(
        "Primitives: "
        + ", ".join(
            f"`{n}`" + (f" ({p.note})" if p.note else "") for n, p in primitives.PRIMITIVES.items()
        )
        + "."
    )
    out.append("")
    for path in paths:
        model = load(path)
        out += cell_section(model) if isinstance(model, Cell) else cost_section(model)
    return "\n".join(out).rstrip() + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "spec", nargs="*", type=write.path_argument, help="spec files (default: the built-in specs)"
    )
    parser.add_argument(
        "-o",
        "--output",
        type=write.path_argument,
        default=None,
        help="write to FILE (default: stdout)",
    )


def main(args) -> int:
    if args.output is not None:  # checked before the work
        write.check_folder(args.output.parent, "--output's folder")
    text = report(args.spec or builtin_specs())
    if args.output is None:
        sys.stdout.write(text)
        return 0
    write.atomic_write(args.output, text)
    print(f"wrote {args.output}")
    return 0


__all__ = ["report", "add_arguments", "main"]
