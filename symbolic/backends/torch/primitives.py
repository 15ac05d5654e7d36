"""The torch backend's code of every primitive (whole-tensor torch operations): one entry
per primitive.

A primitive added to :data:`symbolic.primitives.PRIMITIVES` needs one entry here (a test
walks every backend's table). Each call takes a tensor (a constant argument is printed as
its value, never passed to a call) and keeps the NumPy module's values: NaN stays NaN,
softplus is exact where a thresholded form would round.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Form:
    """A primitive in torch code.

    Attributes:
        call: The call on a tensor, ``{0}`` the printed argument.
        helper: Source of a function the call needs, emitted once into each module that
            uses the primitive.
    """

    call: str
    helper: str = ""


FORMS: dict[str, Form] = {
    "sigmoid": Form(call="torch.sigmoid({0})"),
    "tanh": Form(call="torch.tanh({0})"),
    "exp": Form(call="torch.exp({0})"),
    "log": Form(call="torch.log({0})"),
    # log(1 + e^z) for every z: no threshold (F.softplus returns z above 20, off by
    # e^-20 relative), no overflow
    "softplus": Form(
        call="_softplus({0})",
        helper="""
def _softplus(z):
    \"\"\"log(1 + e^z) for every z, as np.logaddexp(0, z).\"\"\"
    return torch.logaddexp(z, torch.zeros_like(z))
""",
    ),
    # step(0) = 0 and step(NaN) = NaN, as np.heaviside(z, 0)
    "step": Form(
        call="_step({0})",
        helper="""
def _step(z):
    \"\"\"1 where z > 0, 0 where z <= 0, NaN where z is NaN (np.heaviside(z, 0)).\"\"\"
    # torch.heaviside(NaN) is 0: NaN is kept by hand
    return torch.where(torch.isnan(z), z, torch.heaviside(z, torch.zeros_like(z)))
""",
    ),
    "relu": Form(call="torch.relu({0})"),
    # sign(0) = 0 and sign(NaN) = NaN, as np.sign (torch.sign(NaN) is 0)
    "sign": Form(
        call="_sign({0})",
        helper="""
def _sign(z):
    \"\"\"-1, 0 or 1 by the sign of z; NaN where z is NaN (np.sign).\"\"\"
    return torch.where(torch.isnan(z), z, torch.sign(z))
""",
    ),
    "abs": Form(call="torch.abs({0})"),
    "sqrt": Form(call="torch.sqrt({0})"),
    "erf": Form(call="torch.erf({0})"),
}


#: The functions of :mod:`symbolic.reductions` (``{0}``, ``{1}`` their arguments): a
#: reduction over the units (the last dimension) broadcast back to the units.
REDUCTIONS: dict[str, Form] = {
    "unit_sum": Form(
        call="_unit_sum({0})",
        helper="""
def _unit_sum(z):
    \"\"\"The sum over the units (the last dimension), broadcast back to every unit.\"\"\"
    if z.shape[-1] == 0:  # a layer of no units
        return z
    return torch.sum(z, dim=-1, keepdim=True).expand(z.shape)
""",
    ),
    "unit_mean": Form(
        call="_unit_mean({0})",
        helper="""
def _unit_mean(z):
    \"\"\"The mean over the units (the last dimension), broadcast back to every unit.\"\"\"
    if not torch.is_tensor(z) or z.dim() == 0 or z.shape[-1] == 0:
        return z  # a constant (the same at every unit), or a layer of no units
        return z
    return torch.mean(z, dim=-1, keepdim=True).expand(z.shape)
""",
    ),
    # amax propagates NaN, and its autograd shares the gradient among tied maxima
    "unit_max": Form(
        call="_unit_max({0})",
        helper="""
def _unit_max(z):
    \"\"\"The largest value over the units (the last dimension), broadcast back.\"\"\"
    if not torch.is_tensor(z) or z.dim() == 0 or z.shape[-1] == 0:
        return z  # a constant (the same at every unit), or a layer of no units
        return z
    return torch.amax(z, dim=-1, keepdim=True).expand(z.shape)
""",
    ),
    "max_share": Form(
        call="_max_share({0})",
        helper="""
def _max_share(z):
    \"\"\"1/k at the k units where z reaches its maximum, 0 elsewhere (NaN rows: NaN).\"\"\"
    if z.shape[-1] == 0:  # a layer of no units
        return z
    peak = torch.amax(z, dim=-1, keepdim=True)
    top = (z == peak).to(z.dtype)
    # NaN said outright, not left to 0/0 (which a compiler may rewrite as a select)
    return torch.where(torch.isnan(peak), torch.nan, top / torch.sum(top, dim=-1, keepdim=True))
""",
    ),
    "unit_count": Form(
        call="_unit_count({0})",
        helper="""
def _unit_count(z):
    \"\"\"The number of units (the last dimension) at every unit.\"\"\"
    return torch.full_like(z, z.shape[-1])
""",
    ),
    "maximum": Form(
        call="_maximum({0}, {1})",
        helper="""
def _maximum(a, b):
    \"\"\"torch.maximum of two tensors, or of a tensor and a number.\"\"\"
    a, b = _as_tensors(a, b)
    return torch.maximum(a, b)


def _as_tensors(a, b):
    \"\"\"Both arguments as tensors (a number takes the other's dtype and device).\"\"\"
    if not isinstance(a, torch.Tensor):
        a = torch.as_tensor(a, dtype=b.dtype, device=b.device)
    if not isinstance(b, torch.Tensor):
        b = torch.as_tensor(b, dtype=a.dtype, device=a.device)
    return a, b
""",
    ),
    "minimum": Form(
        call="_minimum({0}, {1})",
        helper="""
def _minimum(a, b):
    \"\"\"torch.minimum of two tensors, or of a tensor and a number.\"\"\"
    if not isinstance(a, torch.Tensor):
        a = torch.as_tensor(a, dtype=b.dtype, device=b.device)
    if not isinstance(b, torch.Tensor):
        b = torch.as_tensor(b, dtype=a.dtype, device=a.device)
    return torch.minimum(a, b)
""",
    ),
}


def form(name: str) -> Form:
    """The torch code of a primitive or of a function of :mod:`symbolic.reductions`."""
    return FORMS[name] if name in FORMS else REDUCTIONS[name]


def helpers(names) -> list[str]:
    """The helper sources the torch code of ``names`` needs."""
    return [form(n).helper.strip() for n in sorted(names) if form(n).helper]


def namespace() -> dict:
    """What printed torch code needs to run outside a generated module (tests): torch and
    every primitive's helper (torch imported here, on use)."""
    import torch

    out: dict = {"torch": torch}
    for entry in [*FORMS.values(), *REDUCTIONS.values()]:
        if entry.helper:
            exec(entry.helper, out)  # noqa: S102 - our own table, not spec text
    return out
