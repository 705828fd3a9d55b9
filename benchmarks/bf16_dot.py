"""bfloat16 matmuls on this machine: why every Dense runs `models.layers.dot_f32`.

    python -m benchmarks.bf16_dot                       # SmolLM2-135M's projection shapes
    python -m benchmarks.bf16_dot --rows 64 --reps 5    # one row count, fewer repetitions

For each weight shape of SmolLM2-135M (q/o [576, 576], gate/up [576, 1536], down [1536, 576],
LM head [576, 49152]) and each row count (64: a decode step of a batch; 512: encoding), the
median seconds of x [rows, in] @ w [in, out] three ways, each jitted:

- `float32`: both operands and the result float32 (the baseline of the ratios);
- `bf16_out_bf16`: bfloat16 operands and a bfloat16 result (a plain `jnp.dot` of bfloat16
  arrays: what a Flax Dense with dtype=bfloat16 does by default);
- `bf16_out_f32`: bfloat16 operands, float32 result then cast to bfloat16 (`dot_f32`).

On XLA CPU with AVX512-BF16 the third runs near twice the float32 rate and the second below it
(measured: README "bfloat16 compute"). Prints a table; `--out` also writes the rows as JSON.
"""
from __future__ import annotations

import argparse
import json
import sys

from benchmarks import timed

SHAPES = {"q/o": (576, 576), "gate/up": (576, 1536), "down": (1536, 576),
          "lm_head": (576, 49152)}
WAYS = ("float32", "bf16_out_bf16", "bf16_out_f32")


def _median_seconds(fn, reps: int) -> float:
    fn()  # compile + warm up
    return timed(fn, reps)[0]


def measure(rows=(64, 512), reps: int = 20, shapes=None) -> list[dict]:
    """[{shape, rows, in, out, <way>: median seconds, ratio_<way>: float32 s / way s}]."""
    import jax
    import jax.numpy as jnp

    from mtalign_jax.models.layers import dot_f32

    dims = (((1,), (0,)), ((), ()))
    fns = {"float32": jax.jit(lambda x, w: x @ w),
           "bf16_out_bf16": jax.jit(lambda x, w: x @ w),
           "bf16_out_f32": jax.jit(lambda x, w: dot_f32(x, w, dims))}
    out = []
    for name, (d_in, d_out) in (shapes or SHAPES).items():
        kx, kw = jax.random.split(jax.random.PRNGKey(0))
        w32 = jax.random.normal(kw, (d_in, d_out), jnp.float32)
        for n in rows:
            x32 = jax.random.normal(kx, (n, d_in), jnp.float32)
            row = {"shape": name, "rows": n, "in": d_in, "out": d_out}
            for way in WAYS:
                dt = jnp.float32 if way == "float32" else jnp.bfloat16
                x, w = x32.astype(dt), w32.astype(dt)
                row[way] = _median_seconds(lambda: jax.block_until_ready(fns[way](x, w)), reps)
            for way in WAYS[1:]:
                row[f"ratio_{way}"] = row["float32"] / row[way]
            out.append(row)
    return out


def table(rows: list[dict]) -> str:
    lines = ["| shape | rows | float32 ms | bf16 -> bf16 ms (x) | bf16 -> f32 ms (x) |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['shape']} [{r['in']}, {r['out']}] | {r['rows']} | "
                     f"{r['float32'] * 1e3:.2f} | {r['bf16_out_bf16'] * 1e3:.2f} "
                     f"({r['ratio_bf16_out_bf16']:.2f}x) | {r['bf16_out_f32'] * 1e3:.2f} "
                     f"({r['ratio_bf16_out_f32']:.2f}x) |")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", default="64,512", help="row counts, comma-separated")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--out", default="", help="also write the rows as JSON here")
    args = ap.parse_args(argv)
    rows = measure(tuple(int(r) for r in args.rows.split(",")), args.reps)
    print(table(rows), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
