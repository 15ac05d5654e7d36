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
}


def helpers(names) -> list[str]:
    """The helper sources the torch code of ``names`` needs."""
    return [FORMS[n].helper.strip() for n in sorted(names) if FORMS[n].helper]


def namespace() -> dict:
    """What printed torch code needs to run outside a generated module (tests): torch and
    every primitive's helper (torch imported here, on use)."""
    import torch

    out: dict = {"torch": torch}
    for form in FORMS.values():
        if form.helper:
            exec(form.helper, out)  # noqa: S102 - our own table, not spec text
    return out
