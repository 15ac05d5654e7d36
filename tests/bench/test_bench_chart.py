"""The report's chart: one panel per timed workload and dtype, none for an untimed run."""

from __future__ import annotations

import struct
from pathlib import Path

from symbolic.bench.candidates import Row
from symbolic.bench.chart import chart_path, save_chart
from symbolic.bench.cli import draw_chart
from symbolic.bench.measure import Section
from symbolic.bench.steps import GEMM, NUMPY, REFERENCE
from symbolic.bench.workloads import WORKLOADS


def _section(name: str, dtype: str, timed: bool = True, bound: bool = False) -> Section:
    samples = [0.010, 0.012, 0.011] if timed else []
    rows = [
        Row(NUMPY, "generated numpy", True, False, samples=list(samples)),
        Row(REFERENCE, "hand-written NumPy", False, False, samples=[s * 1.3 for s in samples]),
        Row("torch", "PyTorch eager", False, True, status="skipped", reason="not installed"),
    ]
    if bound:
        rows.append(Row(GEMM, "matrix products alone", False, False, samples=[0.008, 0.009]))
    return Section(WORKLOADS[name], dtype, rows, 1e-9)


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_one_panel_per_timed_section_and_untimed_ones_left_out(tmp_path):
    one, two, with_untimed = tmp_path / "one.png", tmp_path / "two.png", tmp_path / "u.png"
    assert save_chart(one, [_section("B1", "float64")])
    assert save_chart(two, [_section("B1", "float32"), _section("A2", "float64", bound=True)])
    assert save_chart(with_untimed, [_section("B1", "float64"), _section("B2", "float64", False)])
    width_one, height_one = _png_size(one)
    width_two, height_two = _png_size(two)
    assert width_two == width_one and height_two > height_one  # stacked
    assert _png_size(with_untimed) == (width_one, height_one)  # the untimed section: no panel


def test_nothing_is_written_when_no_row_was_timed(tmp_path):
    path = tmp_path / "bench.png"
    assert not save_chart(path, [_section("B1", "float64", timed=False)])
    assert not save_chart(path, [])
    assert list(tmp_path.iterdir()) == []


def test_the_chart_sits_beside_the_report_and_never_on_it():
    assert chart_path("out/bench.md") == Path("out/bench.png")
    assert chart_path("report") == Path("report.png")
    assert chart_path("results/run.PNG") == Path("results/run.PNG.png")


def test_a_chart_that_cannot_be_drawn_costs_the_report_nothing(tmp_path, monkeypatch, capsys):
    def broken(path, sections):
        raise RuntimeError("no fonts")

    monkeypatch.setattr("symbolic.bench.cli.save_chart", broken)
    assert draw_chart(tmp_path / "bench.md", [_section("B1", "float64")]) is None
    err = capsys.readouterr().err
    assert "no chart drawn" in err and "no fonts" in err
    assert list(tmp_path.iterdir()) == []


def test_draw_chart_names_the_chart_it_drew(tmp_path):
    assert draw_chart(tmp_path / "bench.md", [_section("B1", "float64")]) == tmp_path / "bench.png"
    assert draw_chart(tmp_path / "b.md", [_section("B1", "float64", timed=False)]) is None


def test_long_labels_are_broken_into_lines_and_given_the_height_they_need(tmp_path):
    from symbolic.bench import chart

    long = (
        "generated numba (its own policy, after a NumPy product of the caller's before each"
        " step, another Python thread alive (as in a notebook))"
    )
    lines = chart._label(long).split("\n")
    assert len(lines) == 3 and all(len(line) <= chart.LABEL_WIDTH for line in lines)
    assert " ".join(lines) == long  # broken at spaces, nothing lost
    assert chart._label("generated numpy") == "generated numpy"
    short, wrapped = _section("B1", "float64"), _section("B1", "float64")
    wrapped.rows[0].label = long
    assert chart._panel_height(wrapped) > chart._panel_height(short)
    assert save_chart(tmp_path / "short.png", [short])
    assert save_chart(tmp_path / "long.png", [wrapped])
    assert _png_size(tmp_path / "long.png")[1] > _png_size(tmp_path / "short.png")[1]
