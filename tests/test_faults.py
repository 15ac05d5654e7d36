"""Faults: no fault loses work or ends in a traceback; exit statuses mean one thing each.

- generate: a kill at any moment leaves every module old or new, never missing, and the
  next run cleans the leftovers; files get the umask's mode; a bad --out, a spec that
  is not a regular file (a FIFO, /dev/zero, a folder, a huge file), a folder where a
  module goes, a user spec named like a built-in, and a CRLF module under --check are
  each one line and the right status;
- DESIGN.md's exit statuses, for every command.

The faults of ``derivgen train`` (bad checkpoints, bad option values, an unwritable
--out) are tested with the training: tests/train/.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import derivgen, one_line_error

from symbolic import generate as gen
from symbolic import write

ROOT = Path(__file__).resolve().parent.parent
SPECS = {p.stem: p for p in gen.builtin_specs()}


# --- writing ------------------------------------------------------------------------------

KILL_LOOP = """
import sys
from pathlib import Path
from symbolic import write
out = Path(sys.argv[1])
versions = [{f"m{i}.py": f"# version {v} of m{i}\\n" + "x = 1\\n" * 20000 for i in range(8)}
            for v in (0, 1)]
print("ready", flush=True)
while True:
    for files in versions:
        write.write_files(out, files)
"""


def test_a_kill_during_writing_leaves_every_file_old_or_new(tmp_path):
    out = tmp_path / "out"
    names = [f"m{i}.py" for i in range(8)]
    rng = np.random.default_rng(0)
    for trial in range(8):
        proc = subprocess.Popen(
            [sys.executable, "-c", KILL_LOOP, str(out)],
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(0.05 + float(rng.uniform(0, 0.4)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for name in names:
            if trial == 0 and not (out / name).exists():
                continue  # killed before the first write finished: no file yet, fine
            text = (out / name).read_text()
            assert text.startswith(("# version 0 of", "# version 1 of")), (trial, name)
            assert text.count("x = 1") == 20000
    # the next run cleans what the killed ones left
    write.write_files(out, {n: "# done\n" for n in names})
    assert sorted(p.name for p in out.iterdir()) == names


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_files_get_the_umask_mode(tmp_path, umask):
    old = os.umask(umask)
    try:
        write.write_files(tmp_path, {"a.py": "x = 1\n"})
        write.atomic_write(tmp_path / "b.json", "{}")
    finally:
        os.umask(old)
    for name in ("a.py", "b.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask


def test_generated_modules_get_the_umask_mode(tmp_path):
    old = os.umask(0o022)
    try:
        gen.generate([SPECS["dense_tanh"]], ["numpy"], tmp_path / "out", progress=False)
    finally:
        os.umask(old)
    for path in (tmp_path / "out").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda t: "", ("--out", "empty")),
        (lambda t: (t / "file").write_text("x") and str(t / "file"), ("not a folder",)),
        (lambda t: (t / "file2").write_text("x") and str(t / "file2" / "sub"), ("cannot write",)),
        (lambda t: "/dev/null", ("not a folder",)),
    ],
    ids=["empty", "a-file", "under-a-file", "dev-null"],
)
def test_a_bad_out_is_one_line_before_any_work(tmp_path, make, words):
    out = make(tmp_path)
    done = derivgen("generate", "--out", out, str(SPECS["dense_tanh"]), cwd=tmp_path)
    if out == "":  # argparse refuses it, after its usage line
        assert done.returncode == 2 and "--out: an empty path" in done.stderr
        return
    one_line_error(done, 2, *words)
    assert "validate" not in done.stderr  # refused before the work


def test_a_folder_where_a_module_goes(tmp_path):
    out = tmp_path / "out"
    (out / "dense_tanh_numpy.py").mkdir(parents=True)
    done = derivgen("generate", "--backend", "numpy", "--out", str(out),
                    str(SPECS["dense_tanh"]), cwd=tmp_path)  # fmt: skip
    one_line_error(done, 2, "dense_tanh_numpy.py", "a folder")
    assert (out / "dense_tanh_numpy.py").is_dir()
    assert sorted(p.name for p in out.iterdir()) == ["dense_tanh_numpy.py"]


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "folder", "huge"])
def test_a_spec_that_is_not_a_regular_file(tmp_path, kind):
    if kind == "fifo":
        spec = tmp_path / "spec.toml"
        os.mkfifo(spec)
    elif kind == "dev-zero":
        spec = Path("/dev/zero")
    elif kind == "folder":
        spec = tmp_path / "folder.toml"
        spec.mkdir()
    else:
        spec = tmp_path / "huge.toml"
        spec.write_bytes(b"# " + b"x" * (write.MAX_SPEC_BYTES + 10) + b"\n")
    start = time.perf_counter()
    done = derivgen("generate", "--out", str(tmp_path / "out"), str(spec), cwd=tmp_path,
                    timeout=60)  # fmt: skip
    one_line_error(done, 2, str(spec), "cannot read the spec")
    assert time.perf_counter() - start < 30


def test_a_user_spec_named_like_a_built_in_does_not_replace_it(tmp_path, monkeypatch, capsys):
    """Generating a user's spec into the package's own folder may not overwrite a
    built-in module (here the folder is a copy, in case the check failed)."""
    package = tmp_path / "generated"
    package.mkdir()
    monkeypatch.setattr(gen, "default_out", lambda: package)
    mine = tmp_path / "mine.toml"
    mine.write_text(SPECS["dense_tanh"].read_text().replace('name = "dense_tanh"', 'name = "grn"'))
    from symbolic.cli import main

    assert main(["generate", "--backend", "numpy", str(mine)]) == 2
    err = capsys.readouterr().err
    assert "a built-in spec is named 'grn'" in err and "--out" in err
    assert not any(package.iterdir())


def test_check_compares_bytes(tmp_path):
    out = tmp_path / "out"
    gen.generate([SPECS["dense_tanh"]], ["numpy"], out, progress=False)
    path = out / "dense_tanh_numpy.py"
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    done = derivgen("generate", "--check", "--backend", "numpy", "--out", str(out),
                    str(SPECS["dense_tanh"]), cwd=tmp_path)  # fmt: skip
    assert done.returncode == 1 and "line endings" in done.stdout


# --- exit statuses ------------------------------------------------------------------------

BAD_SPEC = 'name = "bad"\nkind = "feedforward"\n'


@pytest.mark.parametrize(
    ("args", "status"),
    [
        (["verify", "{claims}"], 0),
        (["verify", "--strict", "{claims}"], 1),
        (["verify", "{bad}"], 2),
        (["verify", "--json", "{bad}"], 2),
        (["generate", "--check", "--out", "{empty}"], 1),
        (["generate", "--out", "{out}", "{bad}"], 2),
        (["generate", "--bogus"], 2),
        (["report", "{bad}"], 2),
        (["report", "-o", "/dev/null/x.md"], 2),
        (["train", "--model", "nope"], 2),
        (["train", "--resume", "--out", "{empty}"], 2),
        (["bench", "--workloads", "Z9"], 2),
        (["bench", "--quick", "--out", "/dev/null/r.md", "--workloads", "A1"], 2),
    ],
)
def test_exit_statuses(tmp_path, args, status):
    bad = tmp_path / "bad.toml"
    bad.write_text(BAD_SPEC)
    (tmp_path / "empty").mkdir()
    names = {
        "claims": str(ROOT / "symbolic" / "specs" / "examples" / "grn_claims.toml"),
        "bad": str(bad),
        "empty": str(tmp_path / "empty"),
        "out": str(tmp_path / "out"),
    }
    argv = [a.format(**names) for a in args]
    done = derivgen(*argv, cwd=tmp_path)
    assert done.returncode == status, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    if "--json" in argv:
        assert json.loads(done.stdout)["status"] == status


def test_an_internal_error_is_status_3_in_one_line(monkeypatch, capsys):
    from symbolic import cli

    def boom(args):
        raise ZeroDivisionError("division by zero")

    parser = cli.build_parser("generate")
    monkeypatch.setattr(cli, "build_parser", lambda selected: parser)
    parser._subparsers._group_actions[0].choices["generate"].set_defaults(func=boom)
    assert cli.main(["generate"]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error ZeroDivisionError" in err


def test_a_long_chain_of_equations_generates(tmp_path):
    """400 equations, each reading the one before, recurrent: no recursion error, and not
    the quadratic-or-worse time it once took (a 200-equation chain took 3 minutes)."""
    lines = ['name = "chain"', 'kind = "recurrent"', 'input = "x"', 'output = "a"',
             'state = { h = "a" }', "[params]", 'W = "matrix"', 'B = "vector"', "[equations]",
             'e0 = "tanh(W@x + B + h)"']  # fmt: skip
    lines += [f'e{i} = "tanh(e{i - 1}*B + {0.5 + (i % 7) / 10})"' for i in range(1, 400)]
    lines.append('a = "e399"')
    spec = tmp_path / "chain.toml"
    spec.write_text("\n".join(lines) + "\n")
    start = time.perf_counter()
    gen.generate([spec], ["numpy"], tmp_path / "out", validate=False)
    assert time.perf_counter() - start < 60
    assert (tmp_path / "out" / "chain_numpy.py").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["generate", "--show", "kernel", "SPEC"],
        ["verify", "--paper", "symbolic/papers/elman-bptt.md", "--json"],
    ],
)
def test_a_closed_output_pipe_stops_the_command_quietly(argv):
    # `derivgen ... | head` whose reader has gone: no traceback, the status of SIGPIPE
    argv = [str(SPECS["lstm"]) if a == "SPEC" else a for a in argv]
    proc = subprocess.Popen(
        [sys.executable, "-m", "symbolic.cli", *argv],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # the reader goes away before anything is written
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
