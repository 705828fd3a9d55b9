"""What machine a run measured its times on: the CPU's name, its vector extensions, and the
practical matmul peak (FLOP/s of a plain jitted float32 [n, n] @ [n, n]).

Wall times only compare between runs on machines of the same speed: the same "2-core AMD EPYC"
VM has read ~209 and 442-477 GFLOP/s on this peak in different sessions, and every demo stage
moved with it. The demo (`results.json` "machine") and the benchmarks record these figures
beside their times.

    python -c "from mtalign_jax import machine; print(machine.describe())"
"""
from __future__ import annotations

import os
import platform
import timeit


def _cpuinfo(key: str) -> str | None:
    """The value of the first `key` line of /proc/cpuinfo (None where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.split(":", 1)[0].strip() == key:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_name() -> str:
    """The first "model name" of /proc/cpuinfo (else the platform's processor or machine)."""
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def vector_extensions() -> list[str]:
    """The x86 vector-unit flags that matter to XLA's CPU matmuls ("avx2", "avx512f",
    "avx512_bf16", "amx_bf16", ...) present on this CPU; [] elsewhere."""
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")
    have = set((_cpuinfo("flags") or "").split())
    return [w for w in wanted if w in have]


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
    one = lambda: jax.block_until_ready(f(a, b))  # noqa: E731
    one()
    one()
    times = timeit.repeat(one, number=1, repeat=reps)
    best = min(times)
    return {"n": n, "seconds": best, "all_seconds": times, "flops": 2 * n ** 3,
            "flops_per_second": 2 * n ** 3 / best}


def describe() -> dict:
    """{"cpu", "cores", "arch", "vector_extensions", "platform", "matmul_gflops"}."""
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "arch": platform.machine(),
            "vector_extensions": vector_extensions(), "platform": platform.platform(),
            "matmul_gflops": round(matmul_peak()["flops_per_second"] / 1e9, 1)}
