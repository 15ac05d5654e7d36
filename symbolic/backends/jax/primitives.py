"""The JAX backend's code of every primitive (``jax.numpy`` on whole arrays): one entry
per primitive.

A primitive added to :data:`symbolic.primitives.PRIMITIVES` needs one entry here (a test
walks every backend's table). Each form is what JAX's own autodiff differentiates too
(the plain forward is the oracle the derived backward is tested against), so a kink
takes the derivative the primitives table states: relu'(0) = 0, not JAX's 1/2 of
``maximum``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Form:
    """A primitive in ``jax.numpy`` code.

    Attributes:
        call: The call on arrays, ``{0}`` the printed argument.
        helper: Source of a function the code calls, emitted once into each module that
            uses the primitive.
    """

    call: str
    helper: str = ""


FORMS: dict[str, Form] = {
    # lax.logistic: accurate to an ulp in relative terms for every z (no cancellation)
    "sigmoid": Form(call="_jax.nn.sigmoid({0})"),
    "tanh": Form(call="_jnp.tanh({0})"),
    "exp": Form(call="_jnp.exp({0})"),
    "log": Form(call="_jnp.log({0})"),
    # max(z, 0) + log1p(exp(-|z|)): accurate to the last bits, no threshold
    "softplus": Form(call="_jnp.logaddexp({0}, 0.0)"),
    "step": Form(
        call="_step({0})",
        # in the argument's dtype; NaN stays NaN (as np.heaviside)
        helper='''
def _step(z):
    """1 where z > 0, 0 where z <= 0, NaN where z is NaN."""
    return _jnp.where(z > 0, 1.0, _jnp.where(z <= 0, 0.0, z))
''',
    ),
    "relu": Form(
        call="_relu({0})",
        # not maximum(z, 0): JAX differentiates that as 1/2 at 0
        helper='''
def _relu(z):
    """max(z, 0), NaN where z is NaN; its JAX derivative at 0 is 0."""
    return _jnp.where(z > 0, z, _jnp.where(z <= 0, 0.0, z))
''',
    ),
    # sign(0) = 0, sign(NaN) = NaN (as np.sign); JAX differentiates it as 0
    "sign": Form(call="_jnp.sign({0})"),
    # not jnp.abs: JAX differentiates that as 1 at 0; z*sign(z) has derivative sign(z)
    "abs": Form(
        call="_abs({0})",
        helper='''
def _abs(z):
    """|z|, NaN where z is NaN; its JAX derivative at 0 is 0."""
    return z * _jnp.sign(z)
''',
    ),
    "sqrt": Form(call="_jnp.sqrt({0})"),
    # lax.erf: imported with jax itself (jax.scipy is not)
    "erf": Form(call="_jax.lax.erf({0})"),
}


#: The functions of :mod:`symbolic.reductions` (``{0}``, ``{1}`` their arguments): a
#: reduction over the units (the last axis) broadcast back to the units. JAX
#: differentiates jnp.max and jnp.maximum as the table states: tied maxima share the
#: gradient equally.
REDUCTIONS: dict[str, Form] = {
    "unit_sum": Form(
        call="_unit_sum({0})",
        helper='''
def _unit_sum(z):
    """The sum over the units (the last axis), broadcast back to every unit."""
    if _jnp.shape(z)[-1] == 0:  # a layer of no units
        return z
    return _jnp.broadcast_to(_jnp.sum(z, axis=-1, keepdims=True), _jnp.shape(z))
''',
    ),
    "unit_mean": Form(
        call="_unit_mean({0})",
        helper='''
def _unit_mean(z):
    """The mean over the units (the last axis), broadcast back to every unit."""
    if _jnp.ndim(z) == 0 or _jnp.shape(z)[-1] == 0:
        return z  # a constant (the same at every unit), or a layer of no units
        return z
    return _jnp.broadcast_to(_jnp.mean(z, axis=-1, keepdims=True), _jnp.shape(z))
''',
    ),
    "unit_max": Form(
        call="_unit_max({0})",
        helper='''
def _unit_max(z):
    """The largest value over the units (the last axis), broadcast back."""
    if _jnp.ndim(z) == 0 or _jnp.shape(z)[-1] == 0:
        return z  # a constant (the same at every unit), or a layer of no units
        return z
    return _jnp.broadcast_to(_jnp.max(z, axis=-1, keepdims=True), _jnp.shape(z))
''',
    ),
    "max_share": Form(
        call="_max_share({0})",
        helper='''
def _max_share(z):
    """1/k at the k units where z reaches its maximum, 0 elsewhere (NaN rows: NaN)."""
    if _jnp.shape(z)[-1] == 0:  # a layer of no units
        return z
    peak = _jnp.max(z, axis=-1, keepdims=True)
    top = (z == peak).astype(z.dtype)
    # NaN said outright: under jit, XLA turns top / k into a select that gives 0 where a
    # NaN row's k is 0, not 0/0
    return _jnp.where(_jnp.isnan(peak), _jnp.nan, top / _jnp.sum(top, axis=-1, keepdims=True))
''',
    ),
    "unit_count": Form(
        call="_unit_count({0})",
        helper='''
def _unit_count(z):
    """The number of units (the last axis) at every unit."""
    return _jnp.full_like(z, _jnp.shape(z)[-1])
''',
    ),
    "maximum": Form(call="_jnp.maximum({0}, {1})"),
    "minimum": Form(call="_jnp.minimum({0}, {1})"),
}


def form(name: str) -> Form:
    """The JAX code of a primitive or of a function of :mod:`symbolic.reductions`."""
    return FORMS[name] if name in FORMS else REDUCTIONS[name]


def helpers(names) -> list[str]:
    """The helper sources the JAX code of ``names`` needs."""
    return [form(n).helper.strip() for n in sorted(names) if form(n).helper]


def namespace() -> dict:
    """What printed JAX code needs to run outside a generated module (tests): JAX,
    ``jax.numpy`` and every primitive's helper."""
    import jax
    import jax.numpy as jnp

    out: dict = {"_jax": jax, "_jnp": jnp}
    for entry in [*FORMS.values(), *REDUCTIONS.values()]:
        if entry.helper:
            exec(entry.helper, out)  # noqa: S102 - our own table, not spec text
    return out
