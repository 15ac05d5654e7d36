"""The report's picture (``bench.png`` beside ``--out``'s Markdown): one panel per
workload and dtype, stacked, a point per timed row at its median with its value, a whisker
from its fastest to its slowest sample, the generated modules in blue and the others in
grey, and the bound (the matrix products alone, or those and one pass of the
transcendentals) as a dashed red line.

Uses matplotlib's object API with the Agg canvas, as the training plot does: drawing never
switches the backend of a user's pyplot session.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from symbolic import write
from symbolic.bench.measure import Section
from symbolic.bench.steps import GEMM

OURS = "tab:blue"
OTHERS = "0.6"
BOUND = "tab:red"
#: A row's label is broken into lines of at most this many characters, so that the long
#: labels of the policy and context rows leave the panel its width (and the panel's two
#: titles, left and right, room apart).
LABEL_WIDTH = 48


def chart_path(report: Path | str) -> Path:
    """Where the chart of a report goes: the report's name with ``.png`` for its suffix
    (``bench.md`` -> ``bench.png``), or ``.png`` added when the report is itself named
    ``.png``, so that the two never overwrite each other."""
    report = Path(report)
    if report.suffix.lower() == ".png":
        return report.with_name(report.name + ".png")
    return report.with_suffix(".png")


def _timed(section: Section) -> list:
    """The rows drawn as points: every timed row but the bound, in the report's order."""
    return [row for row in section.rows if row.timed and row.key != GEMM]


def _label(text: str) -> str:
    """``text`` broken into lines of at most ``LABEL_WIDTH`` characters, at spaces."""
    return textwrap.fill(text, LABEL_WIDTH, break_long_words=False, break_on_hyphens=False)


def _panel_height(section: Section) -> float:
    """Inches for a panel: its axes and titles, and each row's label lines."""
    lines = sum(_label(row.label).count("\n") + 1 for row in _timed(section))
    return 0.9 + 0.15 * len(_timed(section)) + 0.12 * lines


def save_chart(path: Path, sections: list[Section]) -> bool:
    """Draw every section with a timed row into one PNG at ``path`` (written atomically).

    Returns:
        Whether a chart was written: nothing is when no row was timed (a run whose every
        row was rejected, skipped or failed).
    """
    drawn = [section for section in sections if _timed(section)]
    if not drawn:
        return False
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    heights = [_panel_height(section) for section in drawn]
    figure = Figure(figsize=(11, sum(heights)), layout="constrained")
    FigureCanvasAgg(figure)
    panels = figure.subplots(len(drawn), 1, squeeze=False, height_ratios=heights).ravel()
    for axes, section in zip(panels, drawn, strict=True):
        _draw_section(axes, section)
    write.atomic_write(path, lambda handle: figure.savefig(handle, format="png", dpi=100))
    return True


def _draw_section(axes, section: Section) -> None:
    """One panel: each row's median as a point with its value beside it, a whisker from
    its fastest sample to its slowest, on a log scale of milliseconds per step, the
    report's first row at the top."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    timed = _timed(section)
    places = list(range(len(timed)))
    for place, row in zip(places, timed, strict=True):
        colour = OURS if row.ours else OTHERS
        axes.errorbar(
            row.median_ms,
            place,
            xerr=[[row.median_ms - row.min_ms], [row.max_ms - row.median_ms]],
            fmt="o" if row.ours else "s",
            color=colour,
            ecolor=colour,
            capsize=2,
            ms=5,
        )
        axes.annotate(
            f"{row.median_ms:.3g}",
            (row.max_ms, place),
            xytext=(4, 0),
            textcoords="offset points",
            va="center",
            fontsize=7,
        )
    axes.set_yticks(places, [_label(row.label) for row in timed], fontsize=8)
    axes.set_ylim(len(timed) - 0.5, -0.5)  # the first row at the top
    axes.set_xscale("log")
    axes.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axes.xaxis.set_minor_formatter(NullFormatter())
    lowest = min(row.min_ms for row in timed)
    bound = section.row(GEMM)
    if bound is not None and bound.timed:
        axes.axvline(bound.median_ms, color=BOUND, ls="--", lw=1)
        axes.set_title(
            f"dashed: {bound.label}, {bound.median_ms:.3g} ms", fontsize=8, loc="right", color=BOUND
        )
        lowest = min(lowest, bound.median_ms)
    axes.set_xlim(lowest / 1.3, max(row.max_ms for row in timed) * 1.6)
    axes.set_xlabel("ms per step (point: median; whisker: fastest to slowest sample)", fontsize=8)
    axes.set_title(f"{section.workload.name} {section.dtype}", fontsize=10, loc="left")
    axes.grid(axis="x", which="both", alpha=0.3)
