"""Soundness: every spec ``generate`` accepts becomes correct code, or is refused.

- Each construct that was once accepted and miscompiled has a regression spec in
  ``tests/regressions/`` (named after the construct; the issue or the fuzzer that found
  it is in its first comment). Each is generated for every built-in backend (NumPy,
  Numba, JAX) and validated as ``derivgen generate`` does: against the reference
  interpreter, finite differences and the NumPy module.
- Specs whose numbers cannot be checked (no finite value anywhere) are refused with exit
  status 2, and modules that fail validation are never written (exit status 3).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from once import once

from symbolic import parse, validate
from symbolic.backends import BUILTIN
from symbolic.generate import build_models

BACKENDS = tuple(BUILTIN)

ROOT = Path(__file__).resolve().parent.parent

REGRESSIONS = sorted((ROOT / "tests" / "regressions").glob("*.toml"))


#: Specs a backend refuses, with the reason (each refusal is itself checked below).
REFUSED = {
    ("parameters_only_value_of_a_named_width", "torch"): "broadcasts a value of parameters",
    ("parameters_only_value_of_a_named_width", "jax"): "broadcasts a value of parameters",
}


def _built():
    out = []
    for spec in REGRESSIONS:
        for backend in BACKENDS:
            if (spec.stem, backend) not in REFUSED:
                out += build_models([spec], [backend])
    return out


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory) -> dict[str, list[validate.Verdict]]:
    """Every regression spec, every backend, validated in worker processes (in parallel,
    as ``derivgen generate`` validates), once for all the test workers."""
    found = once(tmp_path_factory, "soundness", lambda _: _validated())
    return {spec: [validate.Verdict(**v) for v in vs] for spec, vs in found.items()}


def _validated() -> dict[str, list[dict]]:
    jobs = []
    for model, module in sorted(_built(), key=lambda mb: not mb[1].filename.endswith("numpy.py")):
        path = validate.stage(module.text, module.filename)
        backend = module.filename.rsplit("_", 1)[1].removesuffix(".py")
        job = next((j for j in jobs if j.spec == str(model.path)), None)
        if job is None:
            job = validate.Job(str(model.path), model.text, [])
            jobs.append(job)
        job.modules.append((backend, str(path)))
    out: dict[str, list[dict]] = {}
    for verdict in validate.run(jobs, progress=False):
        out.setdefault(verdict.spec, []).append(dict(verdict.__dict__))
    return out


@pytest.mark.parametrize("spec", REGRESSIONS, ids=lambda p: p.stem)
def test_regression_spec_is_validated(spec, verdicts):
    found = verdicts[str(spec)]
    assert sorted(v.module for v in found) == sorted(
        f"{parse.load(spec).name}_{b}.py" for b in BACKENDS if (spec.stem, b) not in REFUSED
    )
    bad = [v.message for v in found if v.status != "ok"]
    assert not bad, "\n".join(bad)


def test_regressions_cover_the_issue_constructs():
    """The constructs the soundness issue lists, by name."""
    names = {p.stem for p in REGRESSIONS}
    assert {
        "input_projection_as_a_factor",
        "product_of_input_and_state_projections",
        "state_free_of_states",
        "product_of_named_projections",
        "input_projection_squared_feedforward",
        "product_of_two_input_projections",
        "parameter_with_zero_gradient",
    } <= names


def test_state_free_of_states_carries_the_previous_input():
    """The construct behind the regression above, checked on its meaning: p at step t is
    V@x of step t-1 (and state0 at the first step)."""
    from symbolic import evaluate

    model = parse.load(ROOT / "tests" / "regressions" / "state_free_of_states.toml")
    rng = np.random.default_rng(0)
    params = {"V": rng.standard_normal((4, 3)), "W": rng.standard_normal((4, 3))}
    x = rng.standard_normal((3, 2, 3))
    state0 = {"h": rng.standard_normal((2, 4)), "p": rng.standard_normal((2, 4))}
    a, final = evaluate.forward(model, params, x, state0)
    h = state0["h"]
    p = state0["p"]
    for t in range(3):
        h = np.tanh(x[t] @ params["W"].T + p * h)
        p = x[t] @ params["V"].T
        np.testing.assert_allclose(a[t], h, rtol=1e-14)
    np.testing.assert_allclose(final["p"], p, rtol=1e-14)


@pytest.mark.parametrize(("stem", "backend"), sorted(REFUSED))
def test_refusals_are_clear(stem, backend):
    """What a backend cannot compile is refused, naming the file, the line, the symbol
    and the construct; nothing is emitted."""
    from symbolic.backends import UnsupportedSpec

    spec = ROOT / "tests" / "regressions" / f"{stem}.toml"
    with pytest.raises(UnsupportedSpec) as info:
        build_models([spec], [backend])
    message = str(info.value)
    assert message.startswith(f"{spec}:")
    line = int(message.split(":")[1])
    symbol = message.split("'")[1]
    assert spec.read_text().splitlines()[line - 1].startswith(f"{symbol} = ")
    assert "'" in message and REFUSED[(stem, backend)] in message
