"""What machine a run measured its times on: the CPU's name, its widest vector extension, and
the practical matmul peak (FLOP/s of a plain jitted float32 [n, n] @ [n, n]).

Wall times only compare between runs on machines of the same speed: the same "2-core AMD EPYC"
VM has read 209 and 371 GFLOP/s on this peak in different sessions, and every demo stage moved
with it. The demo (`results.json` "machine") and the benchmarks record these figures beside
their times.

    python -c "from mtalign_jax import machine; print(machine.describe())"
"""
from __future__ import annotations

import os
import platform
import time


def cpu_name() -> str:
    """The first "model name" of /proc/cpuinfo (else the platform's processor or machine)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def vector_extensions() -> list[str]:
    """The x86 vector-unit flags that matter to XLA's CPU matmuls ("avx2", "avx512f",
    "avx512_bf16", "amx_bf16", ...) present on this CPU; [] elsewhere."""
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return [w for w in wanted if w in have]
    except OSError:
        pass
    return []


def matmul_peak(n: int = 2048, reps: int = 5) -> dict:
    """The best of `reps` timed calls (after two warm-ups) of a jitted float32 [n, n] @ [n, n]
    on the default device: {"n", "seconds", "all_seconds", "flops", "flops_per_second"}.
    The best, not the median: a peak is what the machine can do."""
    import jax
    import jax.numpy as jnp

    ka, kb = jax.random.split(jax.random.PRNGKey(0))
    a = jax.random.normal(ka, (n, n), jnp.float32)
    b = jax.random.normal(kb, (n, n), jnp.float32)
    f = jax.jit(jnp.matmul).lower(a, b).compile()
    for _ in range(2):
        jax.block_until_ready(f(a, b))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(f(a, b))
        times.append(time.perf_counter() - t0)
    best = min(times)
    return {"n": n, "seconds": best, "all_seconds": times, "flops": 2 * n ** 3,
            "flops_per_second": 2 * n ** 3 / best}


def describe(peak: bool = True) -> dict:
    """{"cpu", "cores", "arch", "vector_extensions", "platform"[, "matmul_gflops"]}."""
    out = {"cpu": cpu_name(), "cores": os.cpu_count(), "arch": platform.machine(),
           "vector_extensions": vector_extensions(), "platform": platform.platform()}
    if peak:
        out["matmul_gflops"] = round(matmul_peak()["flops_per_second"] / 1e9, 1)
    return out
