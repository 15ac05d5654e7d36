"""Verification (``derivgen verify``): stated derivatives decided symbolically and numerically.

- :mod:`~symbolic.verify.verdict`: the verdict vocabulary, :class:`Finding` and the table
  of findings;
- :mod:`~symbolic.verify.claims`: the ``[claims]`` of a spec, single-step gradients;
- :mod:`~symbolic.verify.cost_claims`: the ``[claims]`` of a cost spec, on unrolled rows;
- :mod:`~symbolic.verify.latex_claims`: a spec's ``[latex_claims]``, read as claims;
- :mod:`~symbolic.verify.engine`: the formula-checking engine, for any paper;
- :mod:`~symbolic.verify.unrolled`: concrete unrolled models, the engine's oracle;
- :mod:`~symbolic.verify.specmodel`: unrolled models built from a spec (``spec:<name>``);
- :mod:`~symbolic.verify.latex`: the grammar of derivation papers' LaTeX and its AST;
- :mod:`~symbolic.verify.notation`: a document's notation file (what its names mean);
- :mod:`~symbolic.verify.mapping`: parsed formulas read through a notation, as readings;
- :mod:`~symbolic.verify.extract`: the formulas found in a document's displays;
- :mod:`~symbolic.verify.adjoints`: the true derivative derived in a document's notation;
- :mod:`~symbolic.verify.celldefs`: a spec's cell written as a section's definitions;
- :mod:`~symbolic.verify.printer`: formulas printed in a document's notation;
- :mod:`~symbolic.verify.corrections`: each formula's corrections, derived and printed;
- :mod:`~symbolic.verify.document`: a document as a paper the engine decides
  (``derivgen verify``, ``--paper``);
- :mod:`~symbolic.verify.moraes2020`: the formulas of "Neural Networks Derivatives"
  (W. Moraes, 2020), transcribed by hand: the golden reference of the extraction.

The vocabulary is imported here; the rest (SymPy and NumPy behind it) only when one of
its names is first used, so that importing the vocabulary stays cheap.
"""

from __future__ import annotations

import importlib

from symbolic.verify.verdict import (
    AMBIGUOUS,
    FAILS,
    HOLDS,
    HOLDS_LOCALLY,
    ILL_FORMED,
    UNDECIDED,
    VERDICTS,
    Finding,
    verify_table,
)

# name -> the module of this package that defines it, imported on first use
_LAZY = {
    "SingleStep": "claims",
    "verify_claim": "claims",
    "verify_specs": "claims",
    "verify_paper": "moraes2020",
    "verify_document": "document",
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value
    return value


__all__ = [
    "AMBIGUOUS",
    "FAILS",
    "HOLDS",
    "HOLDS_LOCALLY",
    "ILL_FORMED",
    "UNDECIDED",
    "VERDICTS",
    "Finding",
    "SingleStep",
    "verify_claim",
    "verify_document",
    "verify_paper",
    "verify_specs",
    "verify_table",
]
