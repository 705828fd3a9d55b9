"""The headline benchmark: one MAH-DPO training step, ours (jitted) vs the PyTorch baseline.

Workload (the issue's): P preference pairs of T tokens, the first `prompt_len` tokens are prompt
(labels -100), the rest response; pair i belongs to objective i % K; DPO beta 0.1;
clip-by-global-norm 10 then RMSprop (lr 1e-6, decay/alpha 0.99, eps 1e-8 outside the sqrt, as
torch). Token ids are random (seeded): speed does not depend on the text.

Our variants (each one jitted, train state donated):
- `precomputed_ref`: reference log-probs are inputs (computed once, outside the timed step);
- `live_ref`: the frozen float32 reference forward runs inside the jitted step;
- `all_heads` (ablation of routing): like `precomputed_ref` but every response position goes
  through all K heads ([K, B, R, V]) and each example then keeps its own head's log-probs.
All variants score only the response positions (R per row) and run chosen + rejected as one
[2P, T] forward; the baseline (`benchmarks.torch_baseline`) does the official code's work.

FLOPs per step (`step_flops`), counting multiply-adds as 2 FLOPs, with
N = matmul parameters of the trunk (q, k, v, o, gate, up, down of every layer; the embedding is a
gather and costs none), B = 2P rows, R = response positions per row, A = 4 T^2 H_q d_head L
(attention scores and values per row, full T x T as both implementations compute it):
    forward(trunk + routed head) F = 2 N B T + A B + 2 D V B R
    trained path = 3 F (forward + backward), live reference adds F (forward only).
This is the work MAH-DPO needs (one head per example); the same count is used for every variant,
so `mfu` compares implementations of the same step. The optimizer's elementwise work is ignored.
"""
from __future__ import annotations

import functools
import time
from typing import Optional

import numpy as np

from benchmarks import peak_rss_mb, reset_peak_rss, rss_mb, timed

BETA = 0.1
LR, DECAY, EPS, CLIP = 1e-6, 0.99, 1e-8, 10.0


# ----------------------------------------------------------------------------------- data


def make_batch(vocab_size: int, *, pairs: int, seq_len: int, prompt_len: int, num_heads: int,
               seed: int = 0) -> dict:
    """A numpy preference batch: P chosen rows then P rejected rows.

    Returns input_ids / labels / attention_mask [2P, T] int32 (labels -100 on the prompt) and
    objective_ids [2P] int32 (pair i -> objective i % K, the same for its chosen and rejected
    rows). A pair's chosen and rejected rows share the prompt.
    """
    if not 0 < prompt_len < seq_len:
        raise ValueError(f"prompt_len must be in (0, seq_len={seq_len}), got {prompt_len}")
    rng = np.random.default_rng(seed)
    prompt = rng.integers(0, vocab_size, (pairs, prompt_len))
    resp = rng.integers(0, vocab_size, (2, pairs, seq_len - prompt_len))
    ids = np.concatenate([np.concatenate([prompt, resp[0]], 1),
                          np.concatenate([prompt, resp[1]], 1)]).astype(np.int32)
    labels = ids.copy()
    labels[:, :prompt_len] = -100
    obj = np.tile(np.arange(pairs) % num_heads, 2).astype(np.int32)
    return {"input_ids": ids, "labels": labels, "attention_mask": np.ones_like(ids),
            "objective_ids": obj}


def device_batch(batch: dict) -> dict:
    """The arrays our step reads (adds resp_idx / resp_labels [2P, R])."""
    import jax.numpy as jnp

    from mtalign_jax.training.tasks import response_view

    idx, lab = response_view(batch["labels"])
    out = {k: batch[k] for k in ("input_ids", "attention_mask", "objective_ids")}
    out.update(resp_idx=idx, resp_labels=lab)
    return {k: jnp.asarray(v) for k, v in out.items()}


def balanced_group_size(objective_ids: np.ndarray, num_heads: int) -> Optional[int]:
    """Rows per head when every head owns the same number of rows (then routing is one batched
    einsum), else None (ragged routing)."""
    counts = np.bincount(objective_ids, minlength=num_heads)
    return int(counts[0]) if np.all(counts == counts[0]) else None


# ----------------------------------------------------------------------------------- FLOPs


def matmul_params(cfg) -> int:
    """Trunk parameters that are matmul weights (biases and norms excluded)."""
    d, hd = cfg.d_model, cfg.head_dim
    per_layer = (d * cfg.n_heads * hd + 2 * d * cfg.n_kv_heads * hd + cfg.n_heads * hd * d
                 + 3 * d * cfg.d_ff)
    return cfg.n_layers * per_layer


def forward_flops(cfg, *, rows: int, seq_len: int, resp_len: int) -> int:
    """Forward FLOPs of the trunk on [rows, seq_len] plus one head on rows * resp_len positions."""
    attn = 4 * seq_len * seq_len * cfg.n_heads * cfg.head_dim * cfg.n_layers
    return (2 * matmul_params(cfg) * rows * seq_len + attn * rows
            + 2 * cfg.d_model * cfg.vocab_size * rows * resp_len)


def step_flops(cfg, *, pairs: int, seq_len: int, resp_len: int, live_ref: bool) -> int:
    """FLOPs of one MAH-DPO step (module docstring): 3 F trained, + F for a live reference."""
    f = forward_flops(cfg, rows=2 * pairs, seq_len=seq_len, resp_len=resp_len)
    return 3 * f + (f if live_ref else 0)


# ----------------------------------------------------------------------------------- models


@functools.lru_cache(maxsize=2)
def load_reference(model_name: str, seed: int):
    """(model, params) of the 1-head model `load_pretrained(name, num_heads=1, seed=)`; cached,
    so cases run in one process (--smoke) read the weights once. Never donated."""
    import mtalign_jax

    model, params, _ = mtalign_jax.load_pretrained(model_name, num_heads=1, seed=seed)
    return model, params


def release_reference() -> None:
    """Drop the cached weights (a subprocess case must not count them in its peak RSS); kept
    when every case shares one process (`benchmarks.SHARED_PROCESS`, --smoke)."""
    import benchmarks

    if not benchmarks.SHARED_PROCESS:
        load_reference.cache_clear()


def load_models(model_name: str, num_heads: int, *, head_init_noise: float, seed: int):
    """(cfg, model, params, ref_model, ref_params): the K-head policy exactly as
    `load_pretrained(name, num_heads=K, head_init_noise=, seed=)` builds it, and the frozen
    reference (one unperturbed head). The weights are read once; the policy owns its own
    buffers (its state is donated)."""
    import jax
    import jax.numpy as jnp

    from mtalign_jax.models.heads import perturbed_heads
    from mtalign_jax.models.model import CausalLM

    ref_model, ref_params = load_reference(model_name, seed)
    cfg = ref_model.cfg
    heads = perturbed_heads(ref_params["heads"]["kernel"][0], num_heads, head_init_noise, seed)
    params = {"trunk": jax.tree_util.tree_map(lambda x: jnp.array(x, copy=True),
                                              ref_params["trunk"]),
              "heads": {"kernel": heads}}
    return cfg, CausalLM(cfg, num_heads), params, ref_model, ref_params


def optimizer():
    import optax

    return optax.chain(optax.clip_by_global_norm(CLIP),
                       optax.rmsprop(LR, decay=DECAY, eps=EPS, eps_in_sqrt=False))


# ----------------------------------------------------------------------------------- our step


def all_heads_loss_fn(model, params, batch, *, num_heads: int, beta: float):
    """The routing ablation: every response position through all K heads [K, B, R, V], then
    each row keeps its objective's head. Same loss as the routed step."""
    import jax
    import jax.numpy as jnp

    from mtalign_jax.losses import multihead_reduce, preference_loss
    from mtalign_jax.models.model import CausalLM
    from mtalign_jax.training.steps import gathered_logps

    h, _ = model.apply({"params": params}, batch["input_ids"],
                       attention_mask=batch["attention_mask"], method=CausalLM.hidden)
    hr = jnp.take_along_axis(h, batch["resp_idx"][..., None], axis=1)  # [B, R, D]
    logits = jnp.einsum("brd,kdv->kbrv", hr, params["heads"]["kernel"],
                        preferred_element_type=jnp.float32)  # [K, B, R, V]
    lp_all = jax.vmap(lambda z: gathered_logps(z, batch["resp_labels"]))(logits)  # [K, B]
    obj = batch["objective_ids"]
    lp = lp_all[obj, jnp.arange(obj.shape[0])]
    p = obj.shape[0] // 2
    losses, _, _ = preference_loss(lp[:p], lp[p:], batch["ref_chosen"], batch["ref_rejected"],
                                   beta=beta)
    total, _, _ = multihead_reduce(losses, obj[:p], num_heads)
    return total, {"loss": total}


def make_step(model, tx, *, variant: str, num_heads: int, beta: float, group_size, ref_model):
    """step(state, batch, ref_params) -> (state, metrics) for one of our variants."""
    import jax

    from mtalign_jax.training.steps import apply_gradients, make_preference_step

    objectives = [f"obj{i}" for i in range(num_heads)]
    if variant == "all_heads":
        def step(state, batch, ref_params):
            del ref_params
            (loss, metrics), grads = jax.value_and_grad(
                lambda p: all_heads_loss_fn(model, p, batch, num_heads=num_heads, beta=beta),
                has_aux=True)(state.params)
            return apply_gradients(state, tx, loss, grads, metrics)
        return step
    if variant not in ("precomputed_ref", "live_ref"):
        raise ValueError(f"unknown mahdpo_step variant {variant!r}")

    def step(state, batch, ref_params):
        kw = {"ref_model": ref_model, "ref_params": ref_params} if variant == "live_ref" else {}
        fn, _ = make_preference_step(model, tx, objectives=objectives, beta=beta, routed=True,
                                     group_size=group_size, **kw)
        return fn(state, batch, None)
    return step


def compiled_memory_mb(compiled) -> dict:
    """XLA's deterministic memory estimate of a compiled step, in MiB: arguments + outputs -
    aliased (donated) + temporaries."""
    m = compiled.memory_analysis()
    if m is None:
        return {}
    mb = 1024.0 ** 2
    peak = (m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
            + m.temp_size_in_bytes)
    return {"compiled_peak_mb": peak / mb, "compiled_temp_mb": m.temp_size_in_bytes / mb,
            "compiled_args_mb": m.argument_size_in_bytes / mb}


def build_ours(spec: dict):
    """(compiled step, state, batch, ref_params, info) for a spec; compile time in info."""
    import jax
    import jax.numpy as jnp

    from mtalign_jax.training.state import TrainState
    from mtalign_jax.training.steps import response_logps

    k = spec["heads"]
    cfg, model, params, ref_model, ref_params = load_models(
        spec["model"], k, head_init_noise=spec["head_init_noise"], seed=spec["seed"])
    raw = make_batch(cfg.vocab_size, pairs=spec["pairs"], seq_len=spec["seq_len"],
                     prompt_len=spec["prompt_len"], num_heads=k, seed=spec["seed"])
    batch = device_batch(raw)
    variant = spec["variant"]
    if variant == "live_ref":
        ref_arg = ref_params
    else:
        ref_lp = jax.jit(lambda p, b: response_logps(ref_model, p, b))(ref_params, batch)
        p = spec["pairs"]
        batch = dict(batch, ref_chosen=ref_lp[:p], ref_rejected=ref_lp[p:])
        ref_arg, ref_params = None, None
        release_reference()
    tx = optimizer()
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                       rng=jax.random.PRNGKey(spec["seed"]), skipped=jnp.zeros((), jnp.int32))
    step = make_step(model, tx, variant=variant, num_heads=k, beta=spec["beta"],
                     group_size=balanced_group_size(raw["objective_ids"], k),
                     ref_model=ref_model)
    t0 = time.perf_counter()
    compiled = jax.jit(step, donate_argnums=0).lower(state, batch, ref_arg).compile()
    info = {"compile_seconds": time.perf_counter() - t0, **compiled_memory_mb(compiled)}
    resp_len = int(batch["resp_idx"].shape[1])
    info["flops"] = step_flops(cfg, pairs=spec["pairs"], seq_len=spec["seq_len"],
                               resp_len=resp_len, live_ref=variant == "live_ref")
    return compiled, state, batch, ref_arg, info


def run_ours(spec: dict) -> dict:
    """Measure one of our variants; returns the result fields it owns."""
    import jax

    compiled, state, batch, ref_arg, info = build_ours(spec)
    reset_peak_rss()
    rss0 = rss_mb()
    holder = {"state": state}

    def one():
        holder["state"], m = compiled(holder["state"], batch, ref_arg)
        jax.block_until_ready((holder["state"], m))
        return m

    first = one()  # warm-up 1; its loss is at the initial parameters
    loss = float(first["loss"])
    for _ in range(spec["warmup"] - 1):
        one()
    seconds, all_s = timed(one, spec["reps"])
    return dict(info, seconds=seconds, all_seconds=all_s, loss=loss,
                peak_rss_mb=peak_rss_mb(), rss_before_mb=rss0,
                flops_per_second=info["flops"] / seconds)


def memory_only(spec: dict) -> dict:
    """Compile a variant (no run) and return XLA's memory estimate and compile time."""
    _, _, _, _, info = build_ours(spec)
    return info


# ----------------------------------------------------------------------------------- baseline


def run_baseline(spec: dict) -> dict:
    """Measure the PyTorch eager baseline on the same weights and batch."""
    import gc

    import jax

    from benchmarks import torch_baseline as tb

    threads = tb.use_all_cores()
    cfg, _, params, _, ref_params = load_models(
        spec["model"], spec["heads"], head_init_noise=spec["head_init_noise"], seed=spec["seed"])
    policy = tb.TorchMultiHeadLM.from_ours(cfg, jax.device_get(params))
    reference = tb.TorchMultiHeadLM.from_ours(cfg, jax.device_get(ref_params)).eval()
    for prm in reference.parameters():
        prm.requires_grad_(False)
    del params, ref_params
    release_reference()
    gc.collect()
    opt = tb.make_optimizer(policy)
    raw = make_batch(cfg.vocab_size, pairs=spec["pairs"], seq_len=spec["seq_len"],
                     prompt_len=spec["prompt_len"], num_heads=spec["heads"], seed=spec["seed"])
    batch = tb.to_torch(raw)
    reset_peak_rss()
    rss0 = rss_mb()
    one = lambda: tb.official_step(policy, reference, opt, batch, beta=spec["beta"])  # noqa
    loss = one()  # warm-up 1, at the initial parameters
    for _ in range(spec["warmup"] - 1):
        one()
    seconds, all_s = timed(one, spec["reps"])
    return {"seconds": seconds, "all_seconds": all_s, "loss": loss, "peak_rss_mb": peak_rss_mb(),
            "rss_before_mb": rss0, "threads": threads}


# ----------------------------------------------------------------------------------- peak


def matmul_peak(spec: dict) -> dict:
    """The machine's practical peak (`mtalign_jax.machine.matmul_peak`: a plain jitted float32
    [n, n] @ [n, n], the BEST of `reps` calls after two warm-ups; the median of 5 short calls
    once read below the training step's own rate)."""
    from mtalign_jax import machine

    return machine.matmul_peak(spec["n"], spec["reps"])
