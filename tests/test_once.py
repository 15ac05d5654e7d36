"""``tests/once.py``: work shared by the test workers is done by one of them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

# A worker as pytest-xdist starts it: its own temporary folder under the session's.
WORKER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    sys.path.insert(0, {here!r})
    from once import once

    class Factory:
        def getbasetemp(self):
            return Path({base!r}) / ("popen-" + {worker!r})

    def compute(folder):
        with open(folder / "runs", "a") as runs:
            runs.write("ran\\n")
        time.sleep(0.5)  # the other worker asks meanwhile
        (folder / "made").write_text("by one worker")
        return {{"value": [1, 2, 3]}}

    Factory().getbasetemp().mkdir(parents=True)
    print(json.dumps(once(Factory(), "demo", compute)))
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file locks")
def test_two_workers_asking_at_once_get_one_computation(tmp_path):
    procs = []
    for worker in ("gw0", "gw1"):
        code = WORKER.format(here=str(HERE), base=str(tmp_path), worker=worker)
        env = dict(os.environ, PYTEST_XDIST_WORKER=worker)
        procs.append(
            subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=env)
        )
    outputs = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outputs == [{"value": [1, 2, 3]}] * 2
    shared = tmp_path / "shared-demo"
    assert (shared / "runs").read_text() == "ran\n"
    assert (shared / "made").read_text() == "by one worker"


def test_without_workers_the_work_is_done_here(tmp_path_factory, monkeypatch):
    from once import once

    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    seen = []

    def compute(folder):
        seen.append(folder)
        return len(seen)

    assert once(tmp_path_factory, "alone", compute) == 1
    assert once(tmp_path_factory, "alone", compute) == 2  # no result is kept between calls
    assert seen[0] == tmp_path_factory.getbasetemp() / "shared-alone"
