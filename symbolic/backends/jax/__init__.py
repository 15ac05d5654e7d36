"""The JAX backend: ``jax.numpy`` code, jit-compiled, recurrences in ``lax.scan``
(``<spec>_jax.py``), the derived backward attached to ``apply`` with ``jax.custom_vjp``.

- :mod:`.primitives`: each primitive's ``jax.numpy`` code; :mod:`.printer`: expressions
  as code; :mod:`.layout`: the template keys;
- :mod:`.adapter`: a module seen with the NumPy contract, as validation runs it.
"""

from symbolic.backends.base import Backend, templates_root
from symbolic.backends.jax import adapter, layout
from symbolic.backends.jax.printer import JaxPrinter

BACKEND = Backend(
    name="jax",
    printer=JaxPrinter,
    cell=layout.cell,
    cost=layout.cost,
    templates=templates_root() / "jax",
    needs=("jax",),
    adapt=adapter.adapt,
)
