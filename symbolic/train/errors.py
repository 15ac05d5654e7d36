"""The one exception of ``derivgen train``, below every other module of the package.

Every module here raises it (the registry, the options, the generated modules, the
checkpoints), so it lives on its own: none of them has to import another to name it.
"""

from __future__ import annotations


class TrainError(ValueError):
    """A configuration or checkpoint problem, reported to the user as one message."""
