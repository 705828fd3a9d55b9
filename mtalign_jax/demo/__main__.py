"""`python -m mtalign_jax.demo [--quick] [--workdir demo_out] [--dtype float32|bfloat16]`: the
whole method at mini scale on the real SmolLM2-135M-Instruct (see `mtalign_jax/demo/__init__.py`).
`--dtype bfloat16` computes every stage with bfloat16 matmul inputs (float32 sums, softmax,
norms and trained params): faster prefill, scoring and training on a CPU with AVX512-BF16,
other numbers (README "Demo").

Each stage shows a progress bar, logs its wall time and caches its result in
`WORKDIR/stages/NAME.pkl`; a rerun loads the cached stages (and the JAX persistent compilation
cache in `WORKDIR/jax_cache`) and only computes what is missing. The outputs:
`WORKDIR/results.md`, `WORKDIR/results.json` and `WORKDIR/tradeoff.png`.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pickle
import sys
import time

_T0 = time.perf_counter()  # the process's own start (before the heavy imports)


def _setup_jax(workdir: str) -> None:
    import jax

    jax.config.update("jax_compilation_cache_dir", os.path.join(workdir, "jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def _save(path: str, obj) -> None:
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)  # atomic: a killed run never leaves a torn stage


def run(workdir: str, quick: bool, t0: float = _T0, dtype: str = "float32") -> dict:
    from mtalign_jax.demo import config as config_lib
    from mtalign_jax.demo import report, stages

    os.makedirs(os.path.join(workdir, "stages"), exist_ok=True)
    _setup_jax(workdir)
    cfg = dataclasses.replace(config_lib.quick() if quick else config_lib.default(), dtype=dtype)
    meta_path = os.path.join(workdir, "stages", "config.json")
    cfg_json = json.dumps({k: v for k, v in vars(cfg).items()}, default=list, sort_keys=True)
    if os.path.exists(meta_path) and open(meta_path).read() != cfg_json:
        raise SystemExit(f"{workdir} holds a run with other settings ({meta_path}); "
                         f"use another --workdir or delete it")
    with open(meta_path, "w") as f:
        f.write(cfg_json)

    # The machine's speed beside the times (a "2-core" VM has measured 1.8x apart).
    from mtalign_jax import machine

    host = machine.describe()
    print(f"[demo] machine: {host['cores']} CPUs, {host['cpu']}, float32 matmul "
          f"{host['matmul_gflops']:.0f} GFLOP/s", flush=True)
    ctx = stages.Context(cfg=cfg, workdir=workdir, results={})
    timings, cached = {}, {}
    for name, fn in stages.STAGES.items():
        path = os.path.join(workdir, "stages", f"{name}.pkl")
        if os.path.exists(path):
            with open(path, "rb") as f:
                saved = pickle.load(f)
            ctx.results[name], timings[name] = saved["result"], saved["seconds"]
            cached[name] = True
            print(f"[demo] stage {name}: cached ({saved['seconds']:.1f} s when computed)",
                  flush=True)
            continue
        print(f"[demo] stage {name} ...", flush=True)
        t = time.perf_counter()
        if name == "eval_generation":
            partial_path = path + ".partial"
            prev = {}
            if os.path.exists(partial_path):
                with open(partial_path, "rb") as f:
                    prev = pickle.load(f)
            result = fn(ctx, cached=prev.get("result"),
                        save=lambda r: _save(partial_path, {"result": r}))
        else:
            result = fn(ctx)
        seconds = time.perf_counter() - t
        _save(path, {"result": result, "seconds": seconds})
        ctx.results[name], timings[name], cached[name] = result, seconds, False
        print(f"[demo] stage {name}: {seconds:.1f} s", flush=True)
    out = report.write(ctx, timings, cached, run_seconds=time.perf_counter() - t0,
                       machine=host)
    print(f"[demo] wrote {out['md']}, {out['json']}, {out['png']} "
          f"({out['run_seconds']:.1f} s)", flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mtalign_jax.demo", description=__doc__)
    ap.add_argument("--quick", action="store_true",
                    help="every stage with 1-2 steps and a handful of prompts (< 3 minutes)")
    ap.add_argument("--workdir", default="demo_out", help="outputs and cached stages")
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                    help="compute dtype of every stage (params and sums stay float32)")
    args = ap.parse_args(argv)
    run(args.workdir, args.quick, dtype=args.dtype)
    return 0


if __name__ == "__main__":
    sys.exit(main())
