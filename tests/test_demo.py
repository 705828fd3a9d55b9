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


def _run(workdir):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mtalign_jax.demo", "--quick", "--workdir",
                           str(workdir)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=1800)
    assert proc.returncode == 0, proc.stderr[-4000:]
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
