"""The machine and software the numbers were taken on, and how busy the machine was.

Other work on the machine skews every number, so the report gives the load average before
and after the run, a warning when it was high, the CPU, the memory, the versions of the
software that was timed and the thread pools loaded in the benchmark's process.
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
from importlib import metadata
from pathlib import Path

import numpy as np

from symbolic import __version__
from symbolic.bench.competitors import versions


def _cpu_fields() -> dict[str, str]:
    """The first processor's fields in ``/proc/cpuinfo`` (empty where there is none)."""
    fields: dict[str, str] = {}
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as handle:
        for line in handle:
            if ":" in line:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
            elif fields:
                break
    return fields


def _cpu_model() -> str:
    fields = _cpu_fields()
    if not fields:
        return platform.processor() or platform.machine()
    model = fields.get("model name", "unknown CPU")
    extras = []
    if "cpu family" in fields:
        extras.append(f"family {fields['cpu family']} model {fields.get('model', '?')}")
    flags = fields.get("flags", "").split()
    simd = [f for f in ("avx512f", "avx2", "fma") if f in flags]
    if simd:
        extras.append("/".join(simd))
    if "cpu MHz" in fields:
        extras.append(f"{float(fields['cpu MHz']):.0f} MHz")
    return f"{model} ({', '.join(extras)})" if extras else model


def _memory_gib() -> float | None:
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    return None


def load() -> str:
    """The one-minute load average: other work on the machine skews every number."""
    with contextlib.suppress(OSError):
        return f"{os.getloadavg()[0]:.2f}"
    return "?"


def busy(load_before: str) -> str:
    """A warning when other work shared the machine, or "" when it was quiet."""
    with contextlib.suppress(ValueError):
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
        if float(load_before) > 0.25 * (cores or 1):
            return (
                f"the load average was {load_before} on {cores} cores when the run started: "
                "other processes shared the machine, so times are slower and more spread "
                "out than on a quiet machine (the round-robin order spreads the disturbance "
                "over every backend alike)."
            )
    return ""


#: The AVX-512 features OpenBLAS's SkylakeX kernels need.
AVX512 = ("avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl")
#: OpenBLAS's x86 kernel sets that use AVX-512 (the rest stop at AVX2 or before).
AVX512_KERNELS = ("skylakex", "cooperlake", "sapphirerapids")


def blas_kernels_warning(blas: list[dict] | None = None, flags: set[str] | None = None) -> str:
    """A warning when OpenBLAS runs kernels without AVX-512 on a CPU that has it (chosen
    by OPENBLAS_CORETYPE, or by an OpenBLAS older than the CPU), or "" otherwise.

    ``blas``: threadpoolctl's BLAS entries; ``flags``: the CPU's (both read here when None).
    """
    if flags is None:
        flags = set(_cpu_fields().get("flags", "").split())
    if not set(AVX512) <= flags:
        return ""
    if blas is None:
        from threadpoolctl import threadpool_info

        blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    slow = sorted(
        {
            str(i.get("architecture"))
            for i in blas
            if i.get("internal_api") == "openblas"
            and i.get("architecture")
            and str(i["architecture"]).lower() not in AVX512_KERNELS
        }
    )
    if not slow:
        return ""
    kernels = f"its {'/'.join(slow)} kernels, without AVX-512, on a CPU that has AVX-512"
    cost = (
        "every row's matrix products, the bounds' included, run slower than this CPU can "
        "(README.md, Benchmark)"
    )
    chosen = os.environ.get("OPENBLAS_CORETYPE")
    if chosen:
        return (
            f"OPENBLAS_CORETYPE={chosen} in the environment makes OpenBLAS run {kernels}: "
            f"{cost}. Without the variable, OpenBLAS chooses its kernels from the CPU."
        )
    return (
        f"OpenBLAS runs {kernels} (an OpenBLAS older than the CPU takes it for an older "
        f"one): {cost}. OPENBLAS_CORETYPE=SkylakeX in the environment before Python "
        "starts selects its AVX-512 kernels."
    )


def machine_lines() -> list[str]:
    """The machine and software the numbers were taken on, as Markdown bullet lines."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    memory = _memory_gib()
    lines = [
        f"- CPU: {_cpu_model()}; {os.cpu_count()} logical cores ({usable} usable)"
        + (f"; {memory:.1f} GiB memory" if memory else ""),
        f"- OS: {platform.system()} {platform.release()}; Python {platform.python_version()}",
    ]
    software = [f"derivgen {__version__}", f"numpy {np.__version__}"]
    try:
        software.append(f"numba {metadata.version('numba')}")
    except metadata.PackageNotFoundError:
        software.append("numba not installed")
    software += [f"{name} {version}" for name, version in versions().items()]
    lines.append("- Software: " + ", ".join(software))
    lines.extend(f"- {line}" for line in thread_pool_lines())
    return lines


def thread_pool_lines() -> list[str]:
    """The thread pools loaded in this process, from threadpoolctl."""
    from threadpoolctl import threadpool_info

    lines = []
    for info in threadpool_info():
        name = Path(info.get("filepath", "?")).name
        api = info.get("user_api")
        version = info.get("version") or ""
        extra = ", ".join(
            str(v)
            for v in (
                info.get("internal_api"),
                version,
                info.get("architecture"),
                info.get("threading_layer"),
            )
            if v
        )
        lines.append(
            f"{api.upper() if api == 'blas' else api}: {name} ({extra}), {info.get('num_threads')} threads"
        )
    if "numba" in sys.modules:
        import numba

        with contextlib.suppress(Exception):
            layer = numba.threading_layer()
            lines.append(f"Numba threading layer: {layer}, {numba.get_num_threads()} threads")
    return lines
