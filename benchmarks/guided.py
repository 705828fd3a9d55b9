"""Guided decoding: the continuing KV cache against re-encoding the prefix at every step.

One chat-templated math prompt, K candidates per step, N steps of exactly `step_tokens` tokens
(no step boundary, no EOS, no answer marker: every mode does the same number of steps and
tokens), temperature 1 / top-k 50, a deterministic guide that costs nothing (it prefers the
longest candidate text), so the time is the policy's alone. Modes of
`mtalign_jax.decoding.guided.guided_generate(prefix=...)`, each run on the same keys:

- `cache` (ours): prefill once; per step repeat the cache K times, sample, gather the winner.
- `reencode`: every step re-encodes the whole prefix (prompt + kept tokens) once per prompt,
  then repeats it K times.
- `reencode_each`: every step re-encodes the prefix once per candidate (K rows), as the paper's
  code does with `generate(num_return_sequences=K)`: the baseline of the paper's 4.2-4.9x.

`same_tokens`: the modes kept identical tokens (they should, up to float rounding).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from benchmarks import peak_rss_mb, reset_peak_rss, timed

QUESTION = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many "
            "clips in May. How many clips did Natalia sell altogether in April and May? Solve it "
            "step by step, one step per paragraph, and put the final answer in \\boxed{}.")


# Prefixes are padded to a multiple of 32 tokens (not the library's powers of two), so the
# re-encoding baselines pay for their real length, not up to twice it.
LENGTH_BUCKETS = tuple(range(32, 8193, 32))


def _longest(prompts, steps) -> np.ndarray:
    return np.asarray([len(s[-1]) for s in steps], np.float32)


def case(spec: dict) -> dict:
    """spec: model, seed, k, steps, step_tokens, prompt_repeat, mode, warmup, reps."""
    import jax

    from benchmarks.mahdpo_step import load_reference
    from mtalign_jax.decoding.guided import Domain, guided_generate
    from mtalign_jax.hf.load import tokenizer_for

    model, params = load_reference(spec["model"], spec["seed"])
    tok = tokenizer_for(spec["model"])
    text = " ".join([QUESTION] * spec.get("prompt_repeat", 1))
    prompt = tok.encode_chat([{"role": "user", "content": text}])
    n = spec["steps"]
    dom = Domain("bench", "none", spec["step_tokens"], n, spec["step_tokens"] * n)
    # the cache mode's shapes do not change from step to step, so one step compiles them all;
    # the re-encoding modes see a longer prefix each step and warm up on the whole run
    warm = dataclasses.replace(dom, max_steps=1) if spec["mode"] == "cache" else dom
    holder = {}

    def one(domain=dom):
        holder["out"] = guided_generate(
            model, params, tok, [prompt], guide=_longest, num_candidates=spec["k"],
            domain=domain, temperature=1.0, top_k=50, rng=jax.random.PRNGKey(spec["seed"]),
            prefix=spec["mode"], eos_ids=(-1,), length_buckets=LENGTH_BUCKETS)

    reset_peak_rss()
    for _ in range(spec["warmup"]):
        one(warm)
    seconds, all_s = timed(one, spec["reps"])
    r = holder["out"][0]
    return {"seconds": seconds, "all_seconds": all_s, "peak_rss_mb": peak_rss_mb(),
            "prompt_tokens": len(prompt), "tokens": r.tokens, "steps_done": len(r.steps),
            "sampled_tokens": r.sampled_tokens}
