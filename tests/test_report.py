"""`derivgen report`: the Markdown document a reader holds next to a paper."""

from __future__ import annotations

from pathlib import Path

from symbolic.cli import main
from symbolic.generate import specs_dir
from symbolic.report import report


def test_report_has_every_part(tmp_path):
    specs = [
        specs_dir() / "grn.toml",
        specs_dir() / "gru.toml",
        specs_dir() / "mingru.toml",
        specs_dir() / "examples" / "grn_claims.toml",
        specs_dir() / "squared_error.toml",
    ]
    text = report(specs)
    assert text.count("### Equations, per neuron") == 4
    assert "| `dZu` |" in text  # the adjoint program, per intermediate
    assert (
        "**diagonal**" in text
        and "**matrix-coupled**" in text
        and "**affine in the state**" in text
    )
    assert "A_t = 1 - z" in text  # minGRU's coefficient
    assert "| `dC_dh` | 36 | **fails** |" in text  # a claim with its verdict and line
    assert "### Operation counts" in text
    # LaTeX for the equations and adjoints, no raw temporaries starting a subscript
    assert "\\operatorname{sigmoid}" in text and "$_c" not in text and " _c0" not in text


def test_report_cli_writes_a_file(tmp_path):
    out = tmp_path / "report.md"
    assert main(["report", str(specs_dir() / "grn.toml"), "-o", str(out)]) == 0
    assert out.read_text().startswith("# derivgen report")
    assert not [p for p in Path(tmp_path).iterdir() if p.name.startswith(".")]
