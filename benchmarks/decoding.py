"""Decoding speed: plain batched sampling, ours vs transformers `generate`.

Same model weights (a 1-head model, HF `lm_head` = our head 0), the same B random prompts of
`prompt_len` tokens (no padding), greedy, exactly `new_tokens` new tokens each (no EOS), so
both sides do the same work. Ours: `mtalign_jax.decoding.sampling.generate` (jitted prefill +
on-device decode loop with a donated KV cache); baseline: `LlamaForCausalLM.generate` with its
dynamic KV cache, all cores. Also reports the fraction of rows whose tokens are identical
(greedy near-ties may differ by float rounding). Guided decoding is `benchmarks/guided.py`.
"""
from __future__ import annotations

import numpy as np

from benchmarks import peak_rss_mb, reset_peak_rss, timed


def _prompts(vocab_size: int, batch: int, prompt_len: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab_size, (batch, prompt_len)).astype(
        np.int32)


def ours_case(spec: dict) -> dict:
    import jax

    from benchmarks.mahdpo_step import load_reference
    from mtalign_jax.decoding.sampling import generate

    model, params = load_reference(spec["model"], spec["seed"])
    prompts = _prompts(model.cfg.vocab_size, spec["batch"], spec["prompt_len"], spec["seed"])
    n = spec["new_tokens"]
    holder = {}

    def one():
        holder["out"] = generate(model, params, prompts.tolist(), max_new_tokens=n,
                                 temperature=0.0, eos_ids=(), rng=jax.random.PRNGKey(0))

    reset_peak_rss()
    for _ in range(spec["warmup"]):  # the first call compiles
        one()
    seconds, all_s = timed(one, spec["reps"])
    tokens = [r.tokens for r in holder["out"]]
    return {"seconds": seconds, "all_seconds": all_s, "peak_rss_mb": peak_rss_mb(),
            "tokens_per_second": spec["batch"] * n / seconds, "tokens": tokens}


def baseline_case(spec: dict) -> dict:
    import jax
    import torch
    from transformers import LlamaForCausalLM

    from benchmarks.mahdpo_step import load_reference, release_reference
    from benchmarks.torch_baseline import llama_config, use_all_cores
    from mtalign_jax.hf.mappings import trunk_to_hf

    threads = use_all_cores()
    model, params = load_reference(spec["model"], spec["seed"])
    cfg = model.cfg
    params = jax.device_get(params)
    hf = LlamaForCausalLM(llama_config(cfg)).float().eval()
    state = {k: torch.from_numpy(np.array(v, np.float32))
             for k, v in trunk_to_hf(cfg, params["trunk"]).items()}
    state["lm_head.weight"] = torch.from_numpy(
        np.ascontiguousarray(np.asarray(params["heads"]["kernel"][0], np.float32).T))
    hf.load_state_dict(state, strict=True)
    del params, model
    release_reference()
    prompts = torch.from_numpy(
        _prompts(cfg.vocab_size, spec["batch"], spec["prompt_len"], spec["seed"]).astype(np.int64))
    n = spec["new_tokens"]
    holder = {}

    def one():
        with torch.no_grad():
            out = hf.generate(input_ids=prompts, attention_mask=torch.ones_like(prompts),
                              max_new_tokens=n, min_new_tokens=n, do_sample=False,
                              pad_token_id=0, eos_token_id=None)
        holder["out"] = out[:, prompts.shape[1]:].tolist()

    reset_peak_rss()
    for _ in range(spec["warmup"]):
        one()
    seconds, all_s = timed(one, spec["reps"])
    return {"seconds": seconds, "all_seconds": all_s, "peak_rss_mb": peak_rss_mb(),
            "tokens_per_second": spec["batch"] * n / seconds, "tokens": holder["out"],
            "threads": threads}
