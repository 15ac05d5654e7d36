"""The Numba backend: compiled loops over lanes, NumPy around them (``<spec>_numba.py``).

- :mod:`.primitives`: each primitive's scalar code and compiled helpers;
- :mod:`.printer`: expressions as scalar code; :mod:`.layout`: kernels and template keys.
"""

from symbolic.backends.base import Backend, templates_root
from symbolic.backends.numba import layout, primitives
from symbolic.backends.numba.printer import NumbaPrinter

BACKEND = Backend(
    name="numba",
    printer=NumbaPrinter,
    cell=layout.cell,
    cost=layout.cost,
    templates=templates_root() / "numba",
    helpers=primitives.helpers,
    lane_buffers=True,
    grads_in_step=True,
    needs=("numba",),
)
