"""The progress bar of the training loop (symbolic/progress.py)."""

from __future__ import annotations

import io

from symbolic import progress


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_redraws_one_line():
    stream = FakeTerminal()
    with progress.Progress(5, "run", stream=stream) as bar:
        for _ in range(5):
            bar.update(1, loss="0.5")
    text = stream.getvalue()
    assert text.startswith("\r") and text.endswith("\n") and text.count("\n") == 1
    assert "100% 5/5" in text and "loss 0.5" in text


def test_progress_elsewhere_prints_periodic_lines():
    stream = io.StringIO()
    with progress.Progress(1000, "run", stream=stream) as bar:
        for _ in range(1000):
            bar.update(1)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 10  # 10%, 20%, ..., 90%, and the final line
    assert lines[-1].startswith("run: [####################] 100% 1000/1000")
    silent = io.StringIO()
    with progress.Progress(10, stream=silent, enabled=False) as bar:
        bar.update(10)
    assert silent.getvalue() == ""


def test_format_duration():
    assert progress.format_duration(4.25) == "4.2s"
    assert progress.format_duration(75) == "1:15"
    assert progress.format_duration(3725) == "1:02:05"
