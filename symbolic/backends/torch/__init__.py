"""The torch backend: torch operations on whole tensors, the derived backward registered
as a ``torch.library`` custom op (``<spec>_torch.py``).

- :mod:`.primitives`: each primitive's torch code; :mod:`.printer`: expressions as code;
- :mod:`.layout`: the template keys; :mod:`.adapter`: the NumPy view validation runs.
"""

from symbolic.backends.base import Backend, templates_root
from symbolic.backends.torch import adapter, layout, primitives
from symbolic.backends.torch.printer import TorchPrinter

BACKEND = Backend(
    name="torch",
    printer=TorchPrinter,
    cell=layout.cell,
    cost=layout.cost,
    templates=templates_root() / "torch",
    helpers=primitives.helpers,
    needs=("torch",),
    adapt=adapter.numpy_view,
)
