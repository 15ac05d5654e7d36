"""The exceptions of ``derivgen train``, below every other module of the package.

Every module here raises :class:`TrainError` (the registry, the options, the generated
modules, the checkpoints, the processes of a distributed run), so it lives on its own:
none of them has to import another to name it. :class:`Diverged` is raised by whatever
computes a step (the NumPy loop, the torch engine) and caught by the loop.
"""

from __future__ import annotations


class TrainError(ValueError):
    """A configuration or checkpoint problem, reported to the user as one message."""


class Diverged(Exception):
    """Raised inside the loop when a cost, a gradient or a parameter is not finite."""
