"""Verdicts: what `derivgen verify` reports for each formula or claim.

DESIGN.md fixes the vocabulary. A :class:`Finding` is one row of the report and one
object of ``derivgen verify --json``; :func:`verify_table` is the report as printed.

The rule, for a paper's formulas and a spec's claims alike:

- ``holds``: every reading is the total derivative (a claim: the single-step gradient it
  is defined to be), proved exactly and confirmed by finite differences.
- ``holds-locally``: not the total derivative, but exactly the contribution of one time
  step or one path; the detail says what the total adds.
- ``ambiguous`` is for notation that admits several *conventional* readings that
  disagree: a bound left undefined (``n^{l+1}``: the number of neurons, or the last
  index), a sum's scope left unbracketed. The detail says which readings hold.
- ``fails``: read as printed, the formula is not the derivative. That includes a formula
  that uses a symbol against its defined meaning (a layer letter as the bound of a sum
  over units, ``M.T @ v`` for a matrix entry, a matrix where a value per neuron is
  meant): such a repair is no reading of the formula, and the detail says which repair
  holds. A formula proved wrong on every reading is ``fails``, never ``undecided``.
- ``ill-formed``: the formula cannot be read as printed: an unbalanced bracket, a free
  index.
- ``undecided`` is left only where the exact and the numeric checks disagree (a problem
  of the checks, reported as such).

Every verdict but ``holds`` comes with the corrected formula, itself verified ``holds``
(for a document: derived from its definitions and printed in its notation); where none
can be derived, the detail says so and the verdict stands.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

HOLDS = "holds"
HOLDS_LOCALLY = "holds-locally"
AMBIGUOUS = "ambiguous"
FAILS = "fails"
ILL_FORMED = "ill-formed"
UNDECIDED = "undecided"

VERDICTS = (HOLDS, HOLDS_LOCALLY, AMBIGUOUS, FAILS, ILL_FORMED)


@dataclass
class Finding:
    """The verdict on one stated derivative.

    Attributes:
        id: Stable identifier (a paper formula's id, or a claim's key).
        line: First line of the formula in its source file (1-based).
        source: The formula as printed (LaTeX for the paper, the spec text for a claim).
        verdict: One of :data:`VERDICTS`, or ``undecided`` when no decision was reached.
        corrected: The corrected formula (LaTeX), itself verified; None when it holds.
        detail: One or two sentences: what the total derivative adds, which readings
            hold, or the counterexample in words.
        checks: What was checked, each as a short sentence with its figure.
        counterexample: For ``fails``: a point and the two values that disagree.
        file: The file the formula was read from.
    """

    id: str
    line: int
    source: str
    verdict: str
    corrected: str | None = None
    detail: str = ""
    checks: list[str] = field(default_factory=list)
    counterexample: dict | None = None
    file: str = ""

    def to_json(self) -> dict:
        """The object ``derivgen verify --json`` prints."""
        return asdict(self)


def verify_table(findings: list[Finding], elapsed: float | None = None) -> str:
    """A readable table of findings, then, for each one that does not hold, why and its
    corrected form; last, the count of each verdict (and ``elapsed`` seconds, if given)."""
    rows = [("id", "line", "verdict", "note")]
    for f in findings:
        note = f.detail.split(". ")[0]
        if len(note) > 90:
            note = note[:87] + "..."
        rows.append((f.id, str(f.line), f.verdict, note))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = []
    for i, row in enumerate(rows):
        lines.append("  ".join(row[k].ljust(widths[k]) for k in range(3)) + "  " + row[3])
        if i == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 4)
    details = [f for f in findings if f.verdict != HOLDS]
    if details:
        lines.append("")
        lines.append("Corrections:")
        for f in details:
            lines.append(f"  {f.id} (line {f.line}): {f.verdict}")
            lines.append(f"    as printed: {f.source}")
            if f.detail:
                lines.append(f"    why:        {f.detail}")
            if f.corrected:
                lines.append(f"    corrected:  {f.corrected}")
    counts = Counter(f.verdict for f in findings)
    summary = ", ".join(f"{n} {v}" for v, n in sorted(counts.items()))
    timing = f" in {elapsed:.1f} s" if elapsed is not None else ""
    lines.append("")
    lines.append(f"{len(findings)} formulas decided{timing}: {summary}")
    return "\n".join(lines)
