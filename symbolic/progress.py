"""A small progress bar for training loops, written to stderr.

On a terminal it redraws one line in place (at most ten times a second). Elsewhere (a
log file, CI, a pipe) carriage returns would pile up into one huge line, so it prints a
plain line each time another tenth of the work is done, and one at the end.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO

_REDRAW_SECONDS = 0.1


def format_duration(seconds: float) -> str:
    """``75.3`` -> ``"1:15"``; under a minute, ``"4.2s"``."""
    if seconds != seconds or seconds == float("inf"):
        return "?"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """A progress bar over ``total`` units of work.

    Use it as a context manager, or call :meth:`close` at the end::

        with Progress(total=steps, desc="mlp") as bar:
            for step in range(steps):
                ...
                bar.update(1, loss=f"{loss:.4f}")

    Args:
        total: Units of work in the whole run.
        desc: A label printed before the bar.
        stream: Where to write (default: ``sys.stderr``).
        enabled: False prints nothing at all.
        initial: Units already done (a resumed run).
        lines: Periodic lines printed when ``stream`` is not a terminal.
    """

    def __init__(
        self,
        total: int,
        desc: str = "",
        *,
        stream: TextIO | None = None,
        enabled: bool = True,
        initial: int = 0,
        lines: int = 10,
    ) -> None:
        self.total = max(int(total), 0)
        self.desc = desc
        self.stream = sys.stderr if stream is None else stream
        self.enabled = enabled
        self.n = int(initial)
        self.postfix = ""
        self._initial = self.n
        self._lines = max(lines, 1)
        self._start = time.perf_counter()
        self._last_draw = 0.0
        self._width = 0
        self._closed = False
        isatty = getattr(self.stream, "isatty", None)
        self._tty = bool(isatty and isatty())
        # Non-terminal output: the next tenth (of `lines`) at which to print a line.
        self._next_line = self._fraction_index(self.n) + 1

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _fraction_index(self, n: int) -> int:
        return (n * self._lines) // self.total if self.total else self._lines

    def update(self, n: int = 1, **postfix: object) -> None:
        """Record ``n`` more units of work, and the figures to show after the bar."""
        self.n += n
        if postfix:
            self.postfix = "  ".join(f"{key} {value}" for key, value in postfix.items())
        if not self.enabled:
            return
        if self._tty:
            now = time.perf_counter()
            if now - self._last_draw >= _REDRAW_SECONDS or self.n >= self.total:
                self._last_draw = now
                self._draw()
        elif self._fraction_index(self.n) >= self._next_line and self.n < self.total:
            self._next_line = self._fraction_index(self.n) + 1
            self._print_line()

    def write(self, message: str) -> None:
        """Print a line of text without breaking the bar."""
        if not self.enabled:
            return
        if self._tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
        self.stream.write(message + "\n")
        if self._tty and not self._closed:
            self._draw()
        self.stream.flush()

    def close(self) -> None:
        """Draw the final state and end the line."""
        if self._closed:
            return
        self._closed = True
        if not self.enabled:
            return
        if self._tty:
            self._draw()
            self.stream.write("\n")
        else:
            self._print_line()
        self.stream.flush()

    def text(self, bar_width: int = 20) -> str:
        """The progress line, as drawn (without the carriage return)."""
        elapsed = time.perf_counter() - self._start
        done = self.n - self._initial
        rate = done / elapsed if elapsed > 0 and done > 0 else 0.0
        remaining = (self.total - self.n) / rate if rate else float("nan")
        fraction = min(self.n / self.total, 1.0) if self.total else 1.0
        filled = int(round(fraction * bar_width))
        bar = "#" * filled + "." * (bar_width - filled)
        head = f"{self.desc}: " if self.desc else ""
        timing = f"{format_duration(elapsed)} elapsed"
        if self.n < self.total:
            timing += f", eta {format_duration(remaining)}"
        if rate:
            timing += f", {rate:.1f} it/s" if rate < 1000 else f", {rate:.0f} it/s"
        tail = f"  {self.postfix}" if self.postfix else ""
        return f"{head}[{bar}] {100 * fraction:3.0f}% {self.n}/{self.total}{tail}  [{timing}]"

    def _draw(self) -> None:
        columns = shutil.get_terminal_size((100, 20)).columns
        line = self.text()[: max(columns - 1, 10)]
        # Pad with spaces over the previous, possibly longer, line.
        self.stream.write("\r" + line + " " * max(self._width - len(line), 0))
        self._width = len(line)
        self.stream.flush()

    def _print_line(self) -> None:
        self.stream.write(self.text() + "\n")
        self.stream.flush()
