"""The second document, ``symbolic/papers/elman-bptt.md`` (BPTT in an Elman network):
each of its verdicts proven by a check independent of the engine that gave it.

The oracle is an Elman network written by hand in torch (float64): autograd gives the
total adjoints (dC/d^t a, dC/d^t z, dC/dW, dC/dU, dC/db, dC/d^0 a) and, with a copy of
U^l for each step, the contribution of step t alone. Each formula's right side is
written here again as printed, in NumPy, from the torch run's values and adjoints; a
formula holds when it equals the total everywhere, holds locally when it is not the
total but is the contribution of step t, and fails otherwise. The engine must say the
same, and give every formula that fails a correction that the oracle shows to hold.
The corrections are derived from the spec's equations (the notation file writes none):
each is also printed, parsed back to the same text and verified ``holds`` on its own.
"""

# ruff: noqa: E741 (l is the paper's layer index throughout)

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

import symbolic
from symbolic.cli import main
from symbolic.parse import SpecError
from symbolic.verify import latex
from symbolic.verify.document import document_paper, verify_document
from symbolic.verify.mapping import syms_of
from symbolic.verify.notation import default_path, load
from symbolic.verify.printer import Printer, spellings
from symbolic.verify.verdict import FAILS, HOLDS, HOLDS_LOCALLY

DOC = Path(symbolic.__file__).parent / "papers" / "elman-bptt.md"
NOTATION = load(default_path(DOC))

EXPECTED = {
    "elman.tanh_prime": HOLDS,
    "elman.dC_dz": HOLDS,
    "elman.dC_dz.expanded": FAILS,  # a wrong sign: (a - 1) for (1 - a)
    "elman.dC_da.recursion": HOLDS,
    "elman.dC_da_below": FAILS,  # a transposed index: W_{ij} for W_{ji}
    "elman.dC_da0": HOLDS,
    "elman.dC_dW.chain": HOLDS,
    "elman.dC_dW.value": HOLDS,
    "elman.dC_dU.step": HOLDS_LOCALLY,  # the sum over t missing
    "elman.dC_db.chain": FAILS,  # a missing derivative factor, d^t a / d^t z
    "elman.dC_db.value": FAILS,  # the same
    "elman.dC_dU.value": HOLDS,
}
# The correction each non-holds formula must get: derived from the spec's equations
# (the notation file writes none), in the document's notation.
DC_DZ = r"\frac{\partial C}{\partial^t z_j^l} = \frac{\partial C}{\partial^t a_j^l} \cdot \tanh'({}^t z_j^l)"
DC_DA_BELOW = (
    r"\frac{\partial C}{\partial^t a_i^{l-1}} = \sum_{j=0}^{n^l-1} \frac{\partial C}{\partial^t a_j^l}"
    r" \cdot \tanh'({}^t z_j^l) \cdot W_{ji}^{l-1} + [t < T, l-1 \text{ is an Elman layer}]"
    r" \sum_{j=0}^{n^{l-1}-1} \frac{\partial C}{\partial^{t+1} a_j^{l-1}} \cdot"
    r" \tanh'({}^{t+1} z_j^{l-1}) \cdot U_{ji}^{l-1}"
)
DC_DB = (
    r"\frac{\partial C}{\partial b_j^l} = \sum_{t=1}^{T} \frac{\partial C}{\partial^t a_j^l}"
    r" \cdot \tanh'({}^t z_j^l)"
)
DC_DU = (
    r"\frac{\partial C}{\partial U_{jk}^l} = \sum_{t=1}^{T} \frac{\partial C}{\partial^t a_j^l}"
    r" \cdot \tanh'({}^t z_j^l) \cdot {}^{t-1} a_k^l"
)
FIXES = {
    "elman.dC_dz.expanded": DC_DZ,
    "elman.dC_da_below": DC_DA_BELOW,
    "elman.dC_db.chain": DC_DB,
    "elman.dC_db.value": DC_DB,
    "elman.dC_dU.step": DC_DU,
}
FINDINGS = {f.id: f for f in verify_document(DOC)}

# Shapes the oracle runs: sizes from the input layer up, and T. Larger than the engine's
# (three steps of a stacked network), and non-square weights.
SHAPES = [((2, 2), 3), ((3, 3, 3), 3), ((2, 3, 2), 2)]
SEEDS = (3, 8)


# ------------------------------------------------------------------ the oracle


@dataclass
class Run:
    """One forward and backward pass of the hand-written network (NumPy values)."""

    sizes: tuple[int, ...]
    T: int
    W: dict = field(default_factory=dict)  # W[l-1]: (n^l, n^{l-1}), feeds layer l
    U: dict = field(default_factory=dict)  # U[l]: (n^l, n^l)
    b: dict = field(default_factory=dict)
    a: dict = field(default_factory=dict)  # a[t, l]; a[t, 0] the input; a[0, l] the state
    z: dict = field(default_factory=dict)
    y: dict = field(default_factory=dict)
    ga: dict = field(default_factory=dict)  # dC/d^t a^l (total)
    gz: dict = field(default_factory=dict)
    gW: dict = field(default_factory=dict)
    gU: dict = field(default_factory=dict)
    gb: dict = field(default_factory=dict)
    gU_step: dict = field(default_factory=dict)  # [t, l]: the contribution of step t

    @property
    def L(self) -> int:
        return len(self.sizes) - 1


def _leaf(rng, *shape) -> torch.Tensor:
    return torch.tensor(rng.uniform(-1, 1, shape), dtype=torch.float64, requires_grad=True)


def run(sizes: tuple[int, ...], T: int, seed: int) -> Run:
    """The Elman network of the document in torch: C = sum_t sum_j (^t a^L_j - ^t y_j)^2."""
    rng, L = np.random.default_rng(seed), len(sizes) - 1
    W = {l - 1: _leaf(rng, sizes[l], sizes[l - 1]) for l in range(1, L + 1)}
    U = {l: _leaf(rng, sizes[l], sizes[l]) for l in range(1, L + 1)}
    b = {l: _leaf(rng, sizes[l]) for l in range(1, L + 1)}
    a = {(t, 0): _leaf(rng, sizes[0]) for t in range(1, T + 1)}
    a |= {(0, l): _leaf(rng, sizes[l]) for l in range(1, L + 1)}
    y = {t: torch.tensor(rng.uniform(-1, 1, sizes[L])) for t in range(1, T + 1)}
    # the same values again, with a copy of U^l per step: their gradients are the steps'
    copies = {(t, l): U[l].detach().clone().requires_grad_() for t in range(1, T + 1) for l in U}
    out = Run(sizes, T)
    for shared in (True, False):
        acts, zs = dict(a), {}
        cost = torch.zeros((), dtype=torch.float64)
        for t in range(1, T + 1):
            for l in range(1, L + 1):
                u = U[l] if shared else copies[t, l]
                zs[t, l] = W[l - 1] @ acts[t, l - 1] + u @ acts[t - 1, l] + b[l]
                acts[t, l] = torch.tanh(zs[t, l])
                for x in (zs[t, l], acts[t, l]):
                    x.retain_grad()
            cost = cost + ((acts[t, L] - y[t]) ** 2).sum()
        cost.backward()
        if shared:
            out.a = {k: v.detach().numpy() for k, v in acts.items()}
            out.z = {k: v.detach().numpy() for k, v in zs.items()}
            out.ga = {k: v.grad.numpy().copy() for k, v in acts.items()}
            out.gz = {k: v.grad.numpy().copy() for k, v in zs.items()}
            out.gW = {k: v.grad.numpy().copy() for k, v in W.items()}
            out.gU = {k: v.grad.numpy().copy() for k, v in U.items()}
            out.gb = {k: v.grad.numpy().copy() for k, v in b.items()}
    out.W = {k: v.detach().numpy() for k, v in W.items()}
    out.U = {k: v.detach().numpy() for k, v in U.items()}
    out.b = {k: v.detach().numpy() for k, v in b.items()}
    out.y = {k: v.numpy() for k, v in y.items()}
    out.gU_step = {k: v.grad.numpy() for k, v in copies.items()}
    return out


def tanh_prime(z: np.ndarray) -> np.ndarray:
    """tanh' by autograd (not by the document's formula)."""
    x = torch.tensor(z, requires_grad=True)
    torch.tanh(x).sum().backward()
    return x.grad.numpy()


# ------------------------------------------------- the formulas, as printed
# Each: run -> a list of (printed right side, total, contribution of step t or None).


def dC_dz(r: Run, sign: int = 1):
    # line 29 (sign 1), line 30 (sign -1: ({}^t a - 1)(1 + {}^t a)); the correction
    # (1 - a)(1 + a) is sign 1 with the product.
    out = []
    for (t, l), gz in r.gz.items():
        a, ga = r.a[t, l], r.ga[t, l]
        printed = ga * tanh_prime(r.z[t, l]) if sign == 1 else ga * (a - 1) * (1 + a)
        out.append((printed, gz, None))
    return out


def dC_dz_fixed(r: Run):
    # the correction: dC/d^t a_j^l tanh'(^t z_j^l)
    return [(r.ga[k] * tanh_prime(r.z[k]), gz, None) for k, gz in r.gz.items()]


def dC_da_recursion(r: Run):
    # line 36, at every layer (the input layer too) and step
    out = []
    for t in range(1, r.T + 1):
        for l in range(0, r.L + 1):
            rhs = np.zeros(r.sizes[l])
            if l == r.L:
                rhs += 2 * (r.a[t, l] - r.y[t])
            if l < r.L:
                rhs += r.W[l].T @ r.gz[t, l + 1]  # sum_k dC/d^t z_k^{l+1} W_{kj}^l
            if l >= 1 and t < r.T:
                rhs += r.U[l].T @ r.gz[t + 1, l]  # sum_k dC/d^{t+1} z_k^l U_{kj}^l
            out.append((rhs, r.ga[t, l], None))
    return out


def dC_da_below(r: Run, transposed: bool = True):
    # line 40: W_{ij}^{l-1} as printed (transposed), W_{ji}^{l-1} in the correction
    out = []
    for t in range(1, r.T + 1):
        for l in range(1, r.L + 1):
            n_below, n = r.sizes[l - 1], r.sizes[l]
            rhs = np.zeros(n_below)
            for i in range(n_below):
                for j in range(n):
                    w = r.W[l - 1][i, j] if transposed else r.W[l - 1][j, i]
                    rhs[i] += r.gz[t, l][j] * w
                if l - 1 >= 1 and t < r.T:
                    rhs[i] += sum(r.gz[t + 1, l - 1][k] * r.U[l - 1][k, i] for k in range(n_below))
            out.append((rhs, r.ga[t, l - 1], None))
    return out


def dC_da_below_fixed(r: Run):
    # the correction: each z's adjoint written dC/d^t a tanh'(^t z), W_{ji}^{l-1}
    out = []
    for t in range(1, r.T + 1):
        for l in range(1, r.L + 1):
            rhs = r.W[l - 1].T @ (r.ga[t, l] * tanh_prime(r.z[t, l]))
            if l - 1 >= 1 and t < r.T:
                rhs = rhs + r.U[l - 1].T @ (r.ga[t + 1, l - 1] * tanh_prime(r.z[t + 1, l - 1]))
            out.append((rhs, r.ga[t, l - 1], None))
    return out


def dC_da0(r: Run):
    # line 44: sum_j dC/d^1 z_j^l U_{jk}^l
    return [(r.U[l].T @ r.gz[1, l], r.ga[0, l], None) for l in range(1, r.L + 1)]


def dC_dW_chain(r: Run):
    # line 51: sum_t dC/d^t a_j^l * d^t a_j^l/d^t z_j^l * d^t z_j^l/dW_{ji}^{l-1}, the last
    # the local partial of z's equation, ^t a_i^{l-1}
    return [
        (
            sum(
                np.outer(r.ga[t, l] * tanh_prime(r.z[t, l]), r.a[t, l - 1])
                for t in range(1, r.T + 1)
            ),
            r.gW[l - 1],
            None,
        )
        for l in range(1, r.L + 1)
    ]


def dC_dW_value(r: Run):
    # line 52: sum_t dC/d^t z_j^l ^t a_i^{l-1}
    steps = range(1, r.T + 1)
    return [
        (sum(np.outer(r.gz[t, l], r.a[t, l - 1]) for t in steps), r.gW[l - 1], None)
        for l in range(1, r.L + 1)
    ]


def dC_dU_step(r: Run):
    # line 55: dC/d^t z_j^l ^{t-1} a_k^l at each t (no sum)
    return [
        (np.outer(r.gz[t, l], r.a[t - 1, l]), r.gU[l], r.gU_step[t, l])
        for t in range(1, r.T + 1)
        for l in range(1, r.L + 1)
    ]


def dC_dU_value(r: Run):
    # line 64: the same, summed over t
    steps = range(1, r.T + 1)
    return [
        (sum(np.outer(r.gz[t, l], r.a[t - 1, l]) for t in steps), r.gU[l], None)
        for l in range(1, r.L + 1)
    ]


def dC_dU_fixed(r: Run):
    # the correction: sum_t dC/d^t a_j^l tanh'(^t z_j^l) ^{t-1} a_k^l
    steps = range(1, r.T + 1)
    return [
        (
            sum(np.outer(r.ga[t, l] * tanh_prime(r.z[t, l]), r.a[t - 1, l]) for t in steps),
            r.gU[l],
            None,
        )
        for l in range(1, r.L + 1)
    ]


def dC_db(r: Run):
    # lines 58-59: sum_t dC/d^t a_j^l * d^t z_j^l/db_j^l (= 1): d^t a/d^t z is missing
    steps = range(1, r.T + 1)
    return [(sum(r.ga[t, l] for t in steps), r.gb[l], None) for l in range(1, r.L + 1)]


def dC_db_fixed(r: Run):
    steps = range(1, r.T + 1)
    return [
        (sum(r.ga[t, l] * tanh_prime(r.z[t, l]) for t in steps), r.gb[l], None)
        for l in range(1, r.L + 1)
    ]


PRINTED = {
    "elman.dC_dz": dC_dz,
    "elman.dC_dz.expanded": lambda r: dC_dz(r, sign=-1),
    "elman.dC_da.recursion": dC_da_recursion,
    "elman.dC_da_below": dC_da_below,
    "elman.dC_da0": dC_da0,
    "elman.dC_dW.chain": dC_dW_chain,
    "elman.dC_dW.value": dC_dW_value,
    "elman.dC_dU.step": dC_dU_step,
    "elman.dC_db.chain": dC_db,
    "elman.dC_db.value": dC_db,
    "elman.dC_dU.value": dC_dU_value,
}
FIXED = {
    "elman.dC_dz.expanded": dC_dz_fixed,
    "elman.dC_da_below": dC_da_below_fixed,
    "elman.dC_db.chain": dC_db_fixed,
    "elman.dC_db.value": dC_db_fixed,
    "elman.dC_dU.step": dC_dU_fixed,
}
RUNS = [run(sizes, T, seed) for sizes, T in SHAPES for seed in SEEDS]


def _close(x, y) -> bool:
    return bool(np.allclose(x, y, rtol=1e-10, atol=1e-12))


def oracle_verdict(formula) -> str:
    """The verdict from the torch runs: total everywhere, the contribution of step t
    everywhere, or neither (a formula that reads a weight a shape lacks fails there)."""
    total = local = True
    for r in RUNS:
        try:
            cases = formula(r)
        except IndexError:
            return FAILS
        for printed, truth, step in cases:
            total &= _close(printed, truth)
            local &= step is not None and _close(printed, step)
    return HOLDS if total else HOLDS_LOCALLY if local else FAILS


# ------------------------------------------------------------------------ tests


def test_the_document_is_read_whole():
    assert list(FINDINGS) == list(EXPECTED)
    assert all(f.file == str(DOC) for f in FINDINGS.values())


@pytest.mark.parametrize("fid", [f for f in EXPECTED if f in PRINTED])
def test_each_verdict_is_the_oracles(fid):
    assert oracle_verdict(PRINTED[fid]) == EXPECTED[fid]
    assert FINDINGS[fid].verdict == EXPECTED[fid], FINDINGS[fid].detail


def test_the_derivative_of_tanh_holds_by_autograd():
    x = np.linspace(-4, 4, 33)
    assert _close((1 - np.tanh(x)) * (1 + np.tanh(x)), tanh_prime(x))
    assert FINDINGS["elman.tanh_prime"].verdict == HOLDS


@pytest.mark.parametrize("fid", list(FIXES))
def test_each_wrong_formula_gets_a_correction_that_holds(fid):
    finding = FINDINGS[fid]
    assert finding.verdict in (FAILS, HOLDS_LOCALLY)
    assert finding.corrected == FIXES[fid]
    assert any(c.startswith("corrected form holds") for c in finding.checks)
    assert oracle_verdict(FIXED[fid]) == HOLDS  # the correction, by the oracle


def test_a_fails_verdict_has_a_counterexample_the_oracle_confirms():
    # The engine's counterexample is a point of its own model; the oracle's runs differ
    # from the printed formula at least as clearly (relative difference > 1e-4).
    finding = FINDINGS["elman.dC_dz.expanded"]
    cx = finding.counterexample
    assert cx and abs(cx["formula"] - cx["total"]) > 1e-4 * max(abs(cx["total"]), 1e-2)
    assert abs(cx["formula"] + cx["total"]) < 1e-9  # the sign, and only the sign
    gaps = [np.max(np.abs(p - t)) for r in RUNS for p, t, _ in dC_dz(r, sign=-1)]
    assert max(gaps) > 1e-2


def test_the_missing_sum_is_the_total_at_one_step():
    # holds-locally: at T = 1 the step's contribution is the whole gradient.
    single = run((2, 2), 1, SEEDS[0])
    assert all(_close(p, t) for p, t, _ in dC_dU_step(single))
    assert "total derivative on elman 2-2 (layers 0-1), T=1" in FINDINGS["elman.dC_dU.step"].detail


def test_the_cli_decides_every_formula(capsys):
    assert main(["verify", "--paper", str(DOC), "--json"]) == 0
    found = {f["id"]: f["verdict"] for f in json.loads(capsys.readouterr().out)}
    assert found == EXPECTED


def _copy(tmp_path: Path, old: str, new: str, line: int) -> Path:
    lines = DOC.read_text().split("\n")
    assert old in lines[line - 1]
    lines[line - 1] = lines[line - 1].replace(old, new)
    paper = tmp_path / DOC.name
    paper.write_text("\n".join(lines))
    shutil.copy(default_path(DOC), default_path(paper))
    return paper


def test_fixing_the_transposed_index_makes_it_hold(tmp_path):
    doc = document_paper(_copy(tmp_path, "W_{ij}^{l-1}", "W_{ji}^{l-1}", 40))
    assert doc.verify_formula("elman.dC_da_below").verdict == HOLDS
    assert oracle_verdict(lambda r: dC_da_below(r, transposed=False)) == HOLDS


def test_an_unknown_symbol_in_the_document_names_its_line(tmp_path):
    with pytest.raises(SpecError) as error:
        document_paper(_copy(tmp_path, "U_{jk}^l", "V_{jk}^l", 44))
    assert (error.value.line, error.value.symbol) == (44, "V")


# ------------------------------------------- derived corrections, round trip

CORRECTED = [f for f in FINDINGS.values() if f.verdict != HOLDS]
FUNCTIONS = frozenset(NOTATION.functions)


def test_the_notation_file_writes_no_correction_and_no_definition():
    # the corrections are derived from the spec's own equations (symbolic.verify.celldefs)
    (section,) = NOTATION.sections
    assert not section.corrections and not section.definitions
    assert section.model == "spec:elman"
    assert sorted(f.id for f in CORRECTED) == sorted(FIXES)


@pytest.mark.parametrize("finding", CORRECTED, ids=lambda f: f.id)
def test_a_correction_parses_back_and_prints_the_same(finding):
    (repair, eq), *others = latex.parse(finding.corrected, FUNCTIONS)
    assert not others and repair.name == "as printed"
    (scoped,) = latex.readings(eq)  # one scope: the printer brackets what is ambiguous
    counts = spellings(s for f in CORRECTED for s in syms_of(latex.parse(f.corrected)[0][1].rhs))
    printer = Printer(NOTATION, NOTATION.sections[0], counts)
    assert printer.equation(scoped.lhs.factors[0], scoped.rhs) == finding.corrected


def test_every_correction_verifies_as_a_formula_of_its_own(tmp_path):
    # a document of the corrections alone, under the document's heading: each holds
    texts = list(dict.fromkeys(f.corrected for f in CORRECTED))
    lines = ["# Corrections", "", "# Elman Recurrent Network", ""]
    for text in texts:
        lines += [f"$${text}$$", ""]
    paper = tmp_path / "corrections.md"
    paper.write_text("\n".join(lines), encoding="utf-8")
    shutil.copy(default_path(DOC), default_path(paper))
    findings = verify_document(paper)
    assert len(findings) == len(texts) == 4
    assert [f.verdict for f in findings] == [HOLDS] * len(texts), [
        (f.line, f.detail) for f in findings if f.verdict != HOLDS
    ]
