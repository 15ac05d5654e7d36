"""``derivgen bench`` in --quick mode, on toy sizes, with no PyTorch or JAX needed."""

from __future__ import annotations

import argparse

import pytest

from symbolic import bench
from symbolic.bench.cli import settings_from_args


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
            "numpy,numba,numba[both],numba[product],reference,gemm",
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
        assert len(numba_rows) == 3
        for row in rows:
            if row.startswith("| **generated numba") and not _numba_rows_expected():
                assert "skipped" in row
            elif not row.startswith("| matrix products"):
                assert " ok (" in row or "oracle" in row, row
    assert "CPU:" in report and "BLAS" in report
    assert "](bench.png)" in report  # the chart, drawn beside the report
    assert (tmp_path / "bench.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert "## Targets" in report and "## Thread pools" in report
    if _numba_rows_expected():  # a context of the module's own policy, never "the best"
        assert "(best: both pools on every core" in report
        assert "(best: its own policy, after a NumPy product" not in report


def test_child_processes_a_row_default_to_three_and_one_for_quick(capsys):
    assert settings_from_args(_args()).processes == 3
    assert settings_from_args(_args("--quick")).processes == 1
    assert settings_from_args(_args("--processes", "5")).processes == 5
    with pytest.raises(SystemExit) as exc:
        settings_from_args(_args("--processes", "0"))
    assert exc.value.code == 2
    assert "--processes must be 1 or more" in capsys.readouterr().err
