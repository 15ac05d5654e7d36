"""Names: no spec name reaches a name the generated code uses for itself.

Generated locals that come from the generator live in a namespace no spec can reach
(they start with ``_``, which a spec name may not); the API's own names are reserved.
Each probe below puts one name in every role a spec has (a vector parameter, a matrix,
an equation, a state, a cost's prediction and target, an input and an output). Each
spec is either refused with an error naming the file, the line and the name, or
generated and validated (NumPy in full; Numba in full for the names the soundness issue
found, statically for the others: it compiles, and every name it reads is bound).
"""

from __future__ import annotations

import pytest
from test_fuzz_pipeline import unbound_names

from symbolic import parse, validate
from symbolic.generate import render_model as render

#: Names generated code uses, or used, for itself; and a few short names a template
#: might also pick.
PROBES = [
    "need_dx",
    "state",
    "dstate0",
    "state0",
    "dstate",
    "x",
    "y",
    "a",
    "da",
    "dx",
    "params",
    "cache",
    "grads",
    "p_Bu",
    "g_Bu",
    "Bu_buf",
    "W_x",
    "W_x_seq",
    "dW_x",
    "h0",
    "A",
    "T",
    "b",
    "out",
    "re",
    "sys",
    "step",
    "t0",
    "k0",
    "dG_per_da",
    "x2",
]

CELL = """\
name = "probe"
kind = "recurrent"
input = "{input}"
output = "{output}"
state = {{ {state} = "{output}" }}
[params]
{matrix} = "matrix"
{vector} = "vector"
[equations]
{equation} = "{matrix}@{input}"
{output} = "tanh({equation} + {vector}*{state})"
"""
COST = """\
name = "probe_cost"
kind = "cost"
prediction = "{prediction}"
target = "{target}"
per_unit = "({prediction} - 2*{target})**2"
"""
ROLES = {
    "vector": dict(input="u", output="o", state="h", matrix="W", vector="{}", equation="z"),
    "matrix": dict(input="u", output="o", state="h", matrix="{}", vector="v", equation="z"),
    "equation": dict(input="u", output="o", state="h", matrix="W", vector="v", equation="{}"),
    "state": dict(input="u", output="o", state="{}", matrix="W", vector="v", equation="z"),
    "input": dict(input="{}", output="o", state="h", matrix="W", vector="v", equation="z"),
    "output": dict(input="u", output="{}", state="h", matrix="W", vector="v", equation="z"),
}


def _spec(name: str, role: str) -> str:
    if role in ("prediction", "target"):
        other = "q2" if name != "q2" else "q3"
        names = {"prediction": name, "target": other} if role == "prediction" else {
            "prediction": other, "target": name}  # fmt: skip
        return COST.format(**names)
    return CELL.format(**{k: v.format(name) for k, v in ROLES[role].items()})


CASES = [(n, r) for n in PROBES for r in [*ROLES, "prediction", "target"]]


def _generate_and_validate(text: str, tmp_path, backends) -> list[str]:
    try:
        model = parse.loads(text, "probe.toml")
    except parse.SpecError as exc:
        message = str(exc)
        assert message.startswith("probe.toml:") and "'" in message, message
        return ["refused"]
    found = []
    for backend in backends:
        module = render(model, backend)
        path = validate.stage(module.text, module.filename, tmp_path)
        job = validate.Job("probe.toml", model.text, [("numpy", str(path))])
        if backend == "numba":
            compile(module.text, module.filename, "exec")
            assert not unbound_names(module.text)
            job.modules = [
                ("numpy", str(validate.stage(render(model, "numpy").text, "p_numpy.py", tmp_path))),
                ("numba", str(path)),
            ]
        found += [v.status + (": " + v.message if v.message else "") for v in
                  validate.validate_job(job)]  # fmt: skip
    return found


@pytest.mark.parametrize(("name", "role"), CASES, ids=[f"{n}-{r}" for n, r in CASES])
def test_probe_name_is_refused_or_validated(name, role, tmp_path):
    found = _generate_and_validate(_spec(name, role), tmp_path, ["numpy"])
    assert all(v in ("ok", "refused") for v in found), found


ISSUE_NAMES = """\
name = "issue_names"
kind = "recurrent"
input = "x"
output = "a"
state = { h = "a" }
[params]
W = "matrix"
Bu = "vector"
p_Bu = "vector"
g_Bu = "vector"
[equations]
Bu_buf = "W@x + Bu"
a = "tanh(Bu_buf + p_Bu*h + g_Bu)"
"""


def test_issue_names_in_numba_modules(tmp_path):
    """p_<param>, g_<param> and <symbol>_buf beside the parameter and symbol they were
    made from (the Numba kernels once used exactly these names for their own arrays)."""
    found = _generate_and_validate(ISSUE_NAMES, tmp_path, ["numba"])
    assert found == ["ok", "ok"], found


def test_numba_modules_of_every_probe_compile_and_bind_every_name():
    for name, role in CASES:
        try:
            model = parse.loads(_spec(name, role), "probe.toml")
        except parse.SpecError:
            continue
        text = render(model, "numba").text
        compile(text, "probe_numba.py", "exec")
        assert not unbound_names(text), (name, role)
