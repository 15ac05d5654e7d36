"""``derivgen bench`` in --quick mode, on toy sizes, with no PyTorch or JAX needed."""

from __future__ import annotations

import argparse
import io
import math

import numpy as np
import pytest

from symbolic import bench
from symbolic.bench import competitors, reference


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    return parser.parse_args(list(argv))


def _numba_rows_expected() -> bool:
    try:
        import numba  # noqa: F401

        from generated import dense_sigmoid_numba, grn_numba  # noqa: F401
    except ImportError:
        return False
    return True


def test_quick_bench_writes_a_table_with_every_row(tmp_path, capsys):
    out = tmp_path / "bench.md"
    status = bench.main(
        _args(
            "--quick",
            "--workloads",
            "A1,B1",
            "--dtype",
            "both",
            "--repeats",
            "2",
            "--backends",
            "numpy,numba,numba[both],reference,gemm",
            "--out",
            str(out),
        )
    )
    assert status == 0
    report = out.read_text(encoding="utf-8")
    assert capsys.readouterr().out == report
    for title in ("A1 float32", "A1 float64", "B1 float32", "B1 float64"):
        assert f"### {title}:" in report
    tables = report.split("### ")[1:]
    for table in tables:
        lines = table.split("\n\n")[1].splitlines()  # the title, then the table
        rows = lines[2:]  # under the header and its rule
        labels = [row.split(" | ")[0].strip("| *") for row in rows]
        assert "generated numpy" in labels and "hand-written NumPy" in labels
        assert ("matrix products alone" in labels) == table.startswith("A1")
        numba_rows = [label for label in labels if label.startswith("generated numba")]
        assert len(numba_rows) == 2
        for row in rows:
            if row.startswith("| **generated numba") and not _numba_rows_expected():
                assert "skipped" in row
            elif not row.startswith("| matrix products"):
                assert " ok (" in row or "oracle" in row, row
    assert "CPU:" in report and "BLAS" in report
    assert "## Targets" in report and "## Thread pools" in report


def _perturbed_reference(scale: float):
    """The hand-written GRN with the largest entry of one gradient multiplied by ``scale``."""

    def factory(problem: bench.Problem) -> competitors.Prepared:
        def step():
            cost, grads = reference.grn_step(problem.params, problem.x, problem.y)
            grads = dict(grads)
            grads["WTc"] = grads["WTc"].copy()
            grads["WTc"][np.argmax(np.abs(grads["WTc"]))] *= scale
            return cost, grads

        return competitors.Prepared(step, lambda result: result)

    return factory


def test_a_competitor_with_wrong_gradients_is_rejected_and_not_timed():
    settings = bench.Settings(
        workloads=[bench.QUICK_WORKLOADS["B1"]],
        dtypes=["float64"],
        backends=["numpy"],
        repeats=2,
        min_sample_ms=0.1,
        settle=0.0,
        quick=True,
        log=io.StringIO(),
        extra={
            "off": ("slightly wrong", _perturbed_reference(1 + 1e-5)),
            "exact": ("exact copy", _perturbed_reference(1.0)),
        },
    )
    (section,) = bench.Bench(settings).run()
    off, exact = section.row("off"), section.row("exact")
    assert off.status == "rejected" and not off.timed
    assert "WTc" in off.reason and off.check_error > 1e-6
    assert exact.status == "ok" and exact.timed and exact.check_error <= 1e-12
    table = "\n".join(bench.section_table(section))
    assert "rejected: gradient check failed" in table
    assert "REJECTED" in settings.log.getvalue()


def test_relative_error():
    grads = {"W": np.array([[1.0, -2.0]]), "B": np.array([0.5])}
    assert bench.relative_error((2.0, grads), (2.0, dict(grads))) == (0.0, "cost")
    error, where = bench.relative_error((2.0, grads), (2.0, {**grads, "B": np.array([0.5001])}))
    assert where == "B" and error == pytest.approx(2e-4)
    assert bench.relative_error((2.0, grads), (2.0, {"W": grads["W"]}))[0] == math.inf
    nan = {**grads, "W": np.array([[np.nan, 0.0]])}
    assert bench.relative_error((2.0, grads), (2.0, nan)) == (math.inf, "W")
    assert bench.relative_error((2.0, grads), (2.2, grads))[0] == pytest.approx(0.1)


def test_missing_frameworks_are_skipped_with_a_note(monkeypatch):
    def missing():
        raise competitors.Unavailable("not installed here")

    monkeypatch.setattr(competitors, "_import_torch", missing)
    monkeypatch.setattr(competitors, "_import_jax", missing)
    settings = bench.Settings(
        workloads=[bench.QUICK_WORKLOADS["A1"]],
        dtypes=["float32"],
        backends=["numpy", "torch", "torch.compile", "jax"],
        repeats=1,
        min_sample_ms=0.1,
        settle=0.0,
        compile_budget=0,  # no child process: the monkeypatch must apply
        quick=True,
        log=io.StringIO(),
    )
    (section,) = bench.Bench(settings).run()
    for key in ("torch", "torch.compile", "jax"):
        row = section.row(key)
        assert row.status == "skipped" and row.reason == "not installed here"
    assert section.row("numpy").timed


def test_compile_probe_is_killed_at_its_budget():
    probe = competitors.probe_compile(
        "jax", "B1", "grn", bench.QUICK_WORKLOADS["B1"].dims, "float64", budget=0.05
    )
    assert not probe.ok and probe.message.startswith("did not compile in")


def test_workload_table_and_backend_parsing():
    assert bench.WORKLOADS["B2"].dims == {"T": 200, "B": 64, "D": 64, "H": 256}
    assert bench.WORKLOADS["A2"].dims["sizes"] == [1024, 1024, 1024, 10]
    assert set(bench.QUICK_WORKLOADS) == set(bench.WORKLOADS)
    assert bench.parse_backends("numpy, numba[blas1],jax") == ["numpy", "numba[blas1]", "jax"]
    with pytest.raises(argparse.ArgumentTypeError):
        bench.parse_backends("numpy,tensorflow")
    with pytest.raises(argparse.ArgumentTypeError):
        bench.parse_backends("numba[sometimes]")
    problem = bench.make_problem(bench.WORKLOADS["A1"], np.dtype("float32"))
    # 2 * batch * n_in * n_out per product: forward and weight gradient of every layer,
    # the input gradient of all but the first (whose input is the data).
    assert bench.mlp_gemm_flops(problem) == 2 * 256 * (2 * 64 * 128 + 3 * 128 * 128 + 3 * 128 * 10)
    assert problem.x.dtype == np.float32 and problem.params["layer3.W"].shape == (10, 128)
