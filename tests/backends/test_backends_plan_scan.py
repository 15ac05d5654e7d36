"""The NumPy plan's backward scan emits the recurrence analysis' data (the kernel's
:class:`~symbolic.ir.AdjointScan`) and computes nothing of its own: each coefficient the
analysis names is one block of the module's code, and without the data the plan runs the
adjoint step one step at a time, with the same gradients."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from generated import grn_numpy
from symbolic import generate, parse, validate
from symbolic.backends.numpy import layout

SPECS = {path.stem: path for path in generate.builtin_specs()}


def compiled(name: str):
    return generate.compile_model(parse.load(SPECS[name]))


@pytest.mark.parametrize("name", ["grn", "indrnn"])
def test_the_scan_computes_the_analysis_coefficients(name):
    kernel = compiled(name).kernel
    _, keys = layout.cell(kernel, {})
    assert keys["block_scan"] is True
    lines = "\n".join(keys["coefficients"])
    for st in kernel.adjoint_scan.programs:
        assert f"# {st.comment}" in lines
        assert f"out={st.target})" in lines or f"{st.target} = " in lines, st.target


def test_the_plan_follows_the_data_it_is_given():
    """Coefficients the analysis names differently are the names the code computes."""
    kernel = compiled("grn").kernel
    scan = kernel.adjoint_scan
    comments = [dataclasses.replace(st, comment="coefficient " + st.target) for st in scan.programs]
    kernel.adjoint_scan = dataclasses.replace(scan, programs=comments)
    _, keys = layout.cell(kernel, {})
    assert [line for line in keys["coefficients"] if line.startswith("# coefficient ")] == [
        f"# coefficient {st.target}" for st in scan.programs
    ]


def test_without_coefficients_the_adjoint_runs_step_by_step(tmp_path):
    """A diagonal cell whose kernel has no coefficients: the per-step backward, whose
    gradients equal the block scan's (two implementations of one adjoint step)."""
    model = compiled("grn")
    model.kernel.adjoint_scan = None
    _, keys = layout.cell(model.kernel, {})
    assert keys["block_scan"] is False
    text = generate.module(model, "numpy").text
    assert "_dh_per_da" not in text
    step_by_step = validate.load(validate.stage(text, "grn_numpy.py", tmp_path))

    rng = np.random.default_rng(3)
    T, B, n_in, n_out = 9, 3, 4, 5
    params = grn_numpy.init_params(n_in, n_out, seed=2)
    x = rng.standard_normal((T, B, n_in))
    state0 = {"h": rng.standard_normal((B, n_out))}
    a, cache = grn_numpy.forward(params, x, state0)
    a2, cache2 = step_by_step.forward(params, x, state0)
    np.testing.assert_array_equal(a2, a)
    da = rng.standard_normal(a.shape)
    dstate = {"h": rng.standard_normal((B, n_out))}
    grads, dx, dh0 = grn_numpy.backward(params, cache, da, dstate)
    grads2, dx2, dh02 = step_by_step.backward(params, cache2, da, dstate)
    assert set(grads2) == set(grads)
    for key in grads:
        np.testing.assert_allclose(grads2[key], grads[key], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx2, dx, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dh02["h"], dh0["h"], rtol=1e-10, atol=1e-12)
