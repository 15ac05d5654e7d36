"""The NumPy backend: whole-array NumPy code, no compiler (``<spec>_numpy.py``).

- :mod:`.primitives`: each primitive's NumPy code; :mod:`.printer`: expressions and
  the plan's nodes as code;
- :mod:`.nodes`: the plan's code as values (allocations, ufunc calls, views, bindings),
  each knowing the names it reads and writes;
- :mod:`.ufuncs`: expressions as ufunc calls into preallocated buffers;
- :mod:`.plan`: the code of a module's passes (hoisted projections, fused gates, the
  backward recurrence as blocks and a scan); :mod:`.layout`: the template keys.
"""

from symbolic.backends.base import Backend, templates_root
from symbolic.backends.numpy import layout
from symbolic.backends.numpy.printer import NumpyPrinter

BACKEND = Backend(
    name="numpy",
    printer=NumpyPrinter,
    cell=layout.cell,
    cost=layout.cost,
    templates=templates_root() / "numpy",
)
