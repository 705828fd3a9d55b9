"""`python -m mtalign_jax.demo --quick`: the three outputs exist, every number in results.json is
finite, and a rerun resumes from the cached stages (much faster, nothing recomputed)."""
import json
import math
import os
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _numbers(obj, path="results"):
    if isinstance(obj, bool):
        return
    if isinstance(obj, (int, float)):
        yield path, obj
    elif obj is None:
        yield path, float("nan")  # report.py writes a non-finite float as null
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _numbers(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _numbers(v, f"{path}[{i}]")


def _run(workdir, *extra, ok=True):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mtalign_jax.demo", "--quick", "--workdir",
                           str(workdir), *extra], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=1800)
    assert (proc.returncode == 0) == ok, proc.stderr[-4000:]
    return time.perf_counter() - t, proc


@pytest.mark.heavy
def test_demo_quick_outputs_and_resume(tmp_path):
    first_s, _ = _run(tmp_path)
    for name in ("results.md", "results.json", "tradeoff.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    res = json.loads((tmp_path / "results.json").read_text())
    bad = [p for p, v in _numbers(res) if not (isinstance(v, (int, float)) and math.isfinite(v))]
    assert not bad, bad
    assert 0 < res["run_seconds"] <= first_s
    host = res["machine"]  # the speed the times were measured at
    assert host["cores"] == os.cpu_count() and host["matmul_gflops"] > 0, host
    assert f"{host['matmul_gflops']:.0f} GFLOP/s" in (tmp_path / "results.md").read_text()
    stages = ["data", "rm_engagement", "samples", "pairs", "encode", "train",
              "eval_preference", "eval_generation"]
    assert list(res["stage_seconds"]) == stages
    assert not any(res["stage_cached"].values())
    gen = res["generation"]
    assert {"Base", "DPO (accuracy only)", "DPO (engagement only)", "DPO (mixed data)",
            "MAH-DPO w=(1,0)", "MAH-DPO w=(0.5,0.5)", "MAH-DPO w=(0,1)",
            "MAH-DPO w=(0.5,0.5) + guided decoding", "MAH-DPO w=(0.5,0.5) sampled (T=0.7)",
            "MAH-DPO w=(0.5,0.5) + best-of-2"} <= set(gen)
    for m in gen.values():
        assert 0.0 <= m["accuracy"] <= 1.0 and 0.0 <= m["engagement"] <= 1.0
    assert set(res["reward_models"]) == {"labeller", "guide", "judge", "accuracy_guide"}
    md = (tmp_path / "results.md").read_text()
    assert "| MAH-DPO w=(0.5,0.5) + guided decoding |" in md and "SFT is skipped" in md
    assert (tmp_path / "tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    second_s, proc = _run(tmp_path)
    res2 = json.loads((tmp_path / "results.json").read_text())
    assert all(res2["stage_cached"].values()), res2["stage_cached"]
    assert res2["stage_seconds"] == res["stage_seconds"]  # the cached stages' own times
    assert res2["generation"] == res["generation"]
    assert second_s < 0.5 * first_s, (second_s, first_s)
    assert "stage train: cached" in proc.stdout


@pytest.mark.heavy
def test_demo_quick_bfloat16_runs_every_stage_and_keeps_its_settings(tmp_path):
    """`--dtype bfloat16`: every stage runs, every number is finite, the report says the dtype;
    the same workdir then refuses a float32 run (its cached stages hold other numbers)."""
    _run(tmp_path, "--dtype", "bfloat16")
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["config"]["dtype"] == "bfloat16"
    bad = [p for p, v in _numbers(res) if not (isinstance(v, (int, float)) and math.isfinite(v))]
    assert not bad, bad
    assert "Compute dtype bfloat16" in (tmp_path / "results.md").read_text()
    _, proc = _run(tmp_path, ok=False)
    assert "holds a run with other settings" in proc.stderr + proc.stdout


def test_sampler_keeps_the_activations_encoding_gives(tmp_path):
    """The demo trains DPO on the lower activations its sampler kept: on the tiny preset they
    equal encoding prompt + sample with the lower trunk (1e-5), and the RM features too."""
    import jax
    import numpy as np

    from mtalign_jax.data.tokenizer import ByteTokenizer
    from mtalign_jax.demo import rewards, sampler
    from mtalign_jax.models.model import CausalLM, init_params
    from mtalign_jax.models.presets import get_preset
    from mtalign_jax.models.split import split_model, split_params

    cfg = get_preset("tiny")
    params = init_params(CausalLM(cfg, 1), jax.random.PRNGKey(0))
    lower, upper = split_model(cfg, 1)
    lo_p, up_p = split_params(params["trunk"], 1)
    tok = ByteTokenizer()
    prompts = [tok.encode_chat([{"role": "user", "content": t}]) for t in ("hi", "two plus 2?")]
    pol = sampler.Policy(upper_params=up_p, head=params["heads"]["kernel"][0])
    s = sampler.generate(lower, upper, lo_p, pol, tok, prompts, max_new_tokens=6, n=2,
                         temperature=1.0, top_k=20, rng=jax.random.PRNGKey(1), batch_size=4,
                         keep_acts=True)
    assert len(s.tokens) == 4 and s.prompt_ids[2] == prompts[1]
    seqs = [(s.prompt_ids[i] + s.tokens[i], [-100] * len(s.prompt_ids[i]) + s.tokens[i])
            for i in range(4)]
    feats, acts = rewards.encode_lower(lower, lo_p, seqs, length=64, pad_id=tok.pad_id,
                                       batch_size=4, keep_activations=True)
    for i, (ids, _) in enumerate(seqs):
        kept = np.concatenate([s.prompt_x[i], s.resp_x[i]])
        np.testing.assert_allclose(kept, acts[i, :len(ids)], atol=1e-5)
        assert not acts[i, len(ids):].any()  # zeros past the end
    np.testing.assert_allclose(s.features(), feats, atol=1e-5)


def test_sequence_logps_cut_to_each_batch_changes_nothing():
    """`demo.dpo.sequence_logps` sorts rows and cuts each batch to its longest row and response;
    on the tiny preset it equals the log-probs of the whole padded set in one call (1e-4)."""
    import jax
    import numpy as np

    from mtalign_jax.demo import dpo
    from mtalign_jax.models.model import CausalLM, init_params
    from mtalign_jax.models.presets import get_preset
    from mtalign_jax.models.split import split_model, split_params

    cfg = get_preset("tiny")
    params = init_params(CausalLM(cfg, 1), jax.random.PRNGKey(0))
    _, upper = split_model(cfg, 1)
    _, up_p = split_params(params["trunk"], 1)
    head = params["heads"]["kernel"][0]
    rng = np.random.default_rng(0)
    n, t = 11, 96  # synthetic rows: prompt 3-30 tokens, response 1-60 tokens, right-padded
    labels = np.full((n, t), -100, np.int32)
    mask = np.zeros((n, t), np.int32)
    for i in range(n):
        p, r = rng.integers(3, 31), rng.integers(1, 61)
        mask[i, :p + r] = 1
        labels[i, p:p + r] = rng.integers(0, cfg.vocab_size, r)
    idx, lab = dpo.response_positions(labels)
    x = rng.normal(size=(n, t, cfg.d_model)).astype(np.float32) * mask[..., None]
    data = {"x": x, "attention_mask": mask, "resp_idx": idx, "resp_labels": lab}
    got = dpo.sequence_logps(upper, up_p, head, data, batch_size=4)
    model = CausalLM(cfg, 1)
    full = dpo._logps(model, upper, {"upper": up_p, "heads": {"kernel": head[None]}}, data)
    np.testing.assert_allclose(got, np.asarray(full), rtol=1e-5, atol=1e-4)
    assert idx.shape[1] == 64  # the set's own R: batches use less where they can


def _tiny_split():
    """The tiny preset (random weights) cut after layer 1, a byte tokenizer and 3 chat prompts."""
    import jax

    from mtalign_jax.data.tokenizer import ByteTokenizer
    from mtalign_jax.models.model import CausalLM, init_params
    from mtalign_jax.models.presets import get_preset
    from mtalign_jax.models.split import split_model, split_params

    cfg = get_preset("tiny")
    params = init_params(CausalLM(cfg, 1), jax.random.PRNGKey(0))
    lower, upper = split_model(cfg, 1)
    lo_p, up_p = split_params(params["trunk"], 1)
    tok = ByteTokenizer()
    prompts = [tok.encode_chat([{"role": "user", "content": t}])
               for t in ("hi", "two plus 2?", "tell me. a story!")]
    return lower, upper, lo_p, up_p, params["heads"]["kernel"][0], tok, prompts


def test_copy_window_replaces_rows_only_in_the_last_slots():
    """`sampler._copy_window`: rows taken from `src` in the `window` slots before the cache
    index (k: slot axis last, v: slot axis -2), everywhere for valid / pos; per-layer and
    stacked caches alike."""
    import jax.numpy as jnp
    import numpy as np

    from mtalign_jax.demo import sampler
    from mtalign_jax.models.kv_cache import KVCache, per_layer

    rng = np.random.default_rng(0)
    L, B, H, hd, S, index, w = 2, 4, 1, 3, 10, 7, 3
    c = KVCache(k=jnp.asarray(rng.normal(size=(L, B, H, hd, S)), jnp.float32),
                v=jnp.asarray(rng.normal(size=(L, B, H, S, hd)), jnp.float32),
                valid=jnp.asarray(rng.random((B, S)) > 0.5), pos=jnp.arange(B, dtype=jnp.int32),
                index=jnp.asarray(index, jnp.int32))
    src = jnp.asarray([2, 2, 2, 3])
    for cache in (c, per_layer(c)):
        out = sampler._copy_window(cache, src, w)
        k = np.stack(out.k) if isinstance(out.k, tuple) else np.asarray(out.k)
        v = np.stack(out.v) if isinstance(out.v, tuple) else np.asarray(out.v)
        want_k, want_v = np.array(c.k), np.array(c.v)
        want_k[..., index - w:index] = np.asarray(c.k)[:, src][..., index - w:index]
        want_v[..., index - w:index, :] = np.asarray(c.v)[:, src][..., index - w:index, :]
        np.testing.assert_array_equal(k, want_k)
        np.testing.assert_array_equal(v, want_v)
        np.testing.assert_array_equal(out.valid, np.asarray(c.valid)[np.asarray(src)])
        np.testing.assert_array_equal(out.pos, [2, 2, 2, 3])


def test_guided_k1_is_plain_sampling_and_guided_rows_continue_the_chosen_cache():
    """Guided decoding in one loop (`sampler._guided`), tiny preset: with k=1 it is plain
    sampling token for token (same keys; a step end only re-selects the row itself); with k=3
    and 3-token steps, the returned features equal re-encoding prompt + completion with the
    lower trunk (1e-5), and every token is in the top-2 of the teacher-forced policy logits:
    the chosen candidate's lower and upper caches were carried on, not another row's."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from mtalign_jax.demo import rewards, sampler

    lower, upper, lo_p, up_p, head, tok, prompts = _tiny_split()
    pol = sampler.Policy(upper_params=up_p, head=head)
    pause = sampler.step_delimiters(tok)
    d = lower.cfg.d_model
    common = dict(max_new_tokens=10, rng=jax.random.PRNGKey(3), temperature=1.0, top_k=2)
    plain = sampler.generate(lower, upper, lo_p, pol, tok, prompts, batch_size=3, **common)
    one, steps = sampler.guided_generate(
        lower, upper, lo_p, pol, tok, prompts, guide=rewards.LinearScore(np.ones(2 * d), 0.0),
        k=1, step_tokens=3, pause_ids=pause, batch_size=3, **common)
    assert one.tokens == plain.tokens
    np.testing.assert_allclose(one.features(), plain.features(), atol=1e-5)
    assert steps >= len(prompts) * 3  # every 3 tokens (or sooner) a step ends

    guide = rewards.LinearScore(np.random.default_rng(1).normal(size=2 * d), 0.0)
    s, steps = sampler.guided_generate(lower, upper, lo_p, pol, tok, prompts, guide=guide, k=3,
                                       step_tokens=3, pause_ids=pause, batch_size=2, **common)
    assert len(s.tokens) == 3 and steps >= 3 and all(0 < len(t) <= 10 for t in s.tokens)
    seqs = [(p + t, [-100] * len(p) + t) for p, t in zip(prompts, s.tokens)]
    feats, acts = rewards.encode_lower(lower, lo_p, seqs, length=96, pad_id=tok.pad_id,
                                       batch_size=4, keep_activations=True)
    np.testing.assert_allclose(s.features(), feats, atol=1e-5)
    mask = (acts != 0).any(-1).astype(np.int32)
    h, _ = upper.apply({"params": up_p}, jnp.asarray(acts), attention_mask=jnp.asarray(mask))
    logits = np.asarray(h @ head)
    for i, (p, t) in enumerate(zip(prompts, s.tokens)):
        for j, token in enumerate(t):
            top2 = np.argsort(-logits[i, len(p) + j - 1])[:2]
            assert token in top2, (i, j, token, top2)


def test_select_copies_the_best_candidate_within_ready_groups_only():
    """`sampler._select`: 2 groups of 3 rows; in the ready group every row becomes the row with
    the highest guide score (features = [last, sum / length]), the other group is unchanged."""
    import jax.numpy as jnp
    import numpy as np

    from mtalign_jax.demo import sampler
    from mtalign_jax.models.kv_cache import KVCache

    rng = np.random.default_rng(0)
    B, D, S = 6, 2, 5
    cache = KVCache(k=jnp.asarray(rng.normal(size=(1, B, 1, 2, S)), jnp.float32),
                    v=jnp.asarray(rng.normal(size=(1, B, 1, S, 2)), jnp.float32),
                    valid=jnp.ones((B, S), bool), pos=jnp.arange(B, dtype=jnp.int32),
                    index=jnp.asarray(S, jnp.int32))
    feat_last = jnp.asarray([[0, 0], [3, 0], [1, 0], [0, 0], [9, 0], [0, 0]], jnp.float32)
    feat_sum = jnp.asarray([[0, 8], [0, 0], [0, 3], [0, 0], [0, 0], [0, 0]], jnp.float32)
    lengths = jnp.asarray([4, 1, 1, 1, 1, 1], jnp.int32)  # row 0's mean feature: (0, 2)
    s = sampler.State(lo=cache, up=cache, last=jnp.arange(B * 3.0).reshape(B, 3),
                      done=jnp.asarray([False, False, True, False, False, False]),
                      feat_last=feat_last, feat_sum=feat_sum, lengths=lengths,
                      tokens=jnp.arange(B * 4).reshape(B, 4), xs=jnp.zeros((B, 0, D)))
    # score = last_x + 2 * mean_y: rows 0..2 -> 4, 3, 7 (row 2 best); rows 3..5 -> 0, 9, 0
    out = sampler._select(s, jnp.asarray([True, False]), w=jnp.asarray([1.0, 0, 0, 2.0]),
                          w0=jnp.asarray(0.5), k=3, window=2)
    src = np.asarray([2, 2, 2, 3, 4, 5])
    for name in ("last", "done", "feat_last", "feat_sum", "lengths", "tokens"):
        np.testing.assert_array_equal(getattr(out, name), np.asarray(getattr(s, name))[src], name)
    np.testing.assert_array_equal(out.lo.k[:, :, ..., S - 2:], np.asarray(cache.k)[:, src][..., S - 2:])
    np.testing.assert_array_equal(out.lo.k[..., :S - 2], cache.k[..., :S - 2])  # outside: kept
