"""Verdicts: what `derivgen verify` reports for each formula or claim.

DESIGN.md fixes the vocabulary. A :class:`Finding` is one row of the report and one
object of ``derivgen verify --json``.
"""

from __future__ import annotations

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
