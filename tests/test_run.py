"""The main job, ``derivgen run`` (symbolic/run.py): verify, check, train the MLP and the GRN."""

from __future__ import annotations

import argparse

from symbolic import run
from symbolic.train.plot import PLOT
from symbolic.verify import Finding


def tour_args(tmp_path, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    run.add_arguments(parser)
    return parser.parse_args(["--quick", "--no-progress", "--out", str(tmp_path), *extra])


def test_tour_quick(tmp_path, capsys, monkeypatch):
    # The paper's verification and the generated check have their own tests (and take
    # ~15 s); here they are stand-ins, and the tour's own work runs for real.
    findings = [
        Finding("a", 3, "x", "holds"),
        Finding("b", 9, "y", "fails", corrected="z"),
        Finding("c", 12, "w", "holds-locally", corrected="v"),
    ]
    monkeypatch.setattr(run, "run_verification", lambda: run.summarise_findings(findings, 0.5))
    monkeypatch.setattr(
        run, "run_check", lambda: run.Step("generated modules", True, "current", 0.1)
    )
    assert run.main(tour_args(tmp_path)) == 0
    out = capsys.readouterr().out
    assert "3 formulas: 1 holds, 1 holds-locally, 1 fails" in out
    assert "line   9  fails" in out
    assert "MLP on digits" in out and "GRN on digits" in out and "test accuracy" in out
    assert str(tmp_path / "mlp" / PLOT) in out
    assert (tmp_path / "digits-rows" / PLOT).exists()


def test_tour_reports_a_failed_step_and_goes_on(tmp_path, capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_paper(name, *args, **kwargs):
        if name == "symbolic.verify":
            raise ImportError("symbolic.verify is being written")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_paper)
    monkeypatch.setattr(run, "run_check", lambda: run.Step("generated modules", True, "ok", 0))
    monkeypatch.setattr(run, "TOUR_MODELS", run.TOUR_MODELS[:1])
    assert run.main(tour_args(tmp_path)) == 1
    out = capsys.readouterr().out
    assert "FAILED: could not run: ImportError: symbolic.verify is being written" in out
    assert "MLP on digits" in out


def test_tour_verifies_the_paper_from_its_document(monkeypatch):
    # The step reads the paper (symbolic.verify.document), not the hand transcription.
    import symbolic.verify
    from symbolic.verify import moraes2020

    read = [Finding("mlp.x", 20, "x", "holds"), Finding("grn.y", 80, "y", "fails")]

    def transcription():
        raise AssertionError("derivgen run must not verify the transcription")

    monkeypatch.setattr(symbolic.verify, "verify_document", lambda: read, raising=False)
    monkeypatch.setattr(moraes2020, "verify_paper", transcription)
    monkeypatch.setattr(symbolic.verify, "verify_paper", transcription, raising=False)
    step = run.run_verification()
    assert step.ok and step.result == "2 formulas: 1 holds, 1 fails"
    assert step.details[0] == "line  80  fails          grn.y"
