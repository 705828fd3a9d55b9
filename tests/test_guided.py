"""PRM-guided decoding with a continuing KV cache (issue 18).

A deterministic guide is followed every step; the cache path samples the same tokens as the
re-encode path; the kept cache equals a fresh encoding of the kept prefix; batched equals one by
one; K=1 equals plain sampling; on SmolLM2 the teacher-forced re-encode logits and guide scores
match the cache path's; the decode CLI runs guided decoding with a tiny PRM trained here.
"""
import importlib.util
import json
import os
import re

import jax
import numpy as np
import pytest

import mtalign_jax
from mtalign_jax.decoding import guided
from mtalign_jax.decoding.sampling import pad_prompts, prefill

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUESTIONS = ["What is 2+3?", "Name a colour.", "Count to three, please."]
# One set of shapes for the tiny runs (K=3, 6-token steps, 24 tokens): few compilations.
KW = dict(num_candidates=3, max_new_tokens=24, max_step_tokens=6, domain="math",
          batch_buckets=(4,), length_buckets=(64,))


@pytest.fixture(scope="module")
def tiny():
    model, params, tok = mtalign_jax.load_pretrained("tiny")
    prompts = [tok.encode_chat([{"role": "user", "content": q}]) for q in QUESTIONS]
    return model, params, tok, prompts


def _valid_kv(cache, row):
    """(k, v) [L, Hkv, n_valid, hd] of one cache row's valid slots, in slot order."""
    valid = np.asarray(cache.valid[row])
    k = np.swapaxes(np.asarray(cache.k[:, row]), -1, -2)  # stored [L, Hkv, hd, S]
    return k[:, :, valid], np.asarray(cache.v[:, row])[:, :, valid]


def _fresh_kv(model, params, ids):
    """Cache of one sequence encoded from scratch."""
    pid, mask = pad_prompts([ids], 0)
    _, cache = prefill(model, params, pid, mask, pid.shape[1])
    return _valid_kv(cache, 0)


def test_step_text_trims_boundary_but_keeps_token():
    from mtalign_jax.data.tokenizer import ByteTokenizer

    tok = ByteTokenizer()
    math = guided.DOMAINS["math"]
    assert guided._step_text(tok, list(b"ab\n\n\nc"), True, math) == "ab\n\n"
    assert guided._step_text(tok, list(b"ab\n\n\nc"), False, math) == "ab\n\n\nc"
    fires, ends_nl, starts_nl = guided.boundary_tables(tok, "blank_line")
    assert fires[ord("\n")] == 0 and ends_nl[ord("\n")] and starts_nl[ord("\n")]
    fires, _, _ = guided.boundary_tables(tok, "sentence")
    assert fires[ord(".")] and fires[ord("?")] and not fires[ord("a")]


def test_guide_preference_is_followed_every_step(tiny):
    model, params, tok, prompts = tiny
    plain = guided.sample_plain(model, params, tok, prompts, max_new_tokens=24,
                                rng=jax.random.PRNGKey(5), batch_buckets=(4,),
                                length_buckets=(64,))
    counts = np.bincount([t for r in plain for t in r.tokens if t < 128], minlength=128)
    known = set(np.argsort(-counts)[:8].tolist())  # the model's favourite ASCII bytes

    def count(text):
        return sum(b in known for b in text.encode("utf-8", "replace"))

    def guide(ps, steps):
        return np.array([count(s[-1]) for s in steps], np.float32)

    lines = []
    res = guided.guided_generate(model, params, tok, prompts, guide=guide,
                                 rng=jax.random.PRNGKey(1), log=lines.append, **KW)
    decided = 0
    for r in res:
        assert r.trace and r.tokens
        for s in r.trace:
            c = [count(x) for x in s.candidates]
            assert c[s.chosen] == max(c)
            assert s.scores == [float(x) for x in c]
            decided += max(c) > min(c)
        assert "".join(r.steps) == r.text
    assert decided >= 3  # the guide really had to choose
    assert len(lines) == sum(len(r.trace) for r in res)
    assert all(re.fullmatch(r"prompt \d: step \d+: scores \[[-0-9., ]+\] -> \d", x) for x in lines)


def test_cache_path_equals_reencode_path_and_cache_equals_rerun(tiny):
    model, params, tok, prompts = tiny

    def guide(ps, steps):
        return np.array([len(s[-1].encode()) % 5 for s in steps], np.float32)

    cached, cache = guided.guided_generate(model, params, tok, prompts, guide=guide,
                                           rng=jax.random.PRNGKey(2), return_cache=True, **KW)
    again = guided.guided_generate(model, params, tok, prompts, guide=guide,
                                   rng=jax.random.PRNGKey(2), prefix="reencode", **KW)
    for a, b in zip(cached, again):
        assert a.tokens == b.tokens
        assert [s.scores for s in a.trace] == [s.scores for s in b.trace]
        assert [s.chosen for s in a.trace] == [s.chosen for s in b.trace]
    assert sum(len(r.trace) for r in cached) > len(prompts)  # several steps were kept
    for p, r in enumerate(cached):  # the kept cache == the kept prefix encoded from scratch
        k, v = _valid_kv(cache, p)
        k0, v0 = _fresh_kv(model, params, prompts[p] + r.tokens)
        assert k.shape == k0.shape
        np.testing.assert_allclose(k, k0, atol=1e-5)
        np.testing.assert_allclose(v, v0, atol=1e-5)


def test_batched_equals_one_by_one(tiny):
    model, params, tok, prompts = tiny

    def guide(ps, steps):
        return np.array([s[-1].count("a") for s in steps], np.float32)

    keys = guided.prompt_keys(jax.random.PRNGKey(3), len(prompts))
    batched = guided.guided_generate(model, params, tok, prompts, guide=guide, rng=keys, **KW)
    for i, p in enumerate(prompts[:2]):
        (alone,) = guided.guided_generate(model, params, tok, [p], guide=guide,
                                          rng=keys[i:i + 1], **KW)
        assert alone.tokens == batched[i].tokens
        assert [s.scores for s in alone.trace] == [s.scores for s in batched[i].trace]


def test_k1_equals_plain_sampling(tiny):
    model, params, tok, prompts = tiny
    guide = lambda ps, steps: np.zeros(len(steps), np.float32)  # noqa: E731
    kw = dict(KW, num_candidates=1)
    k1 = guided.guided_generate(model, params, tok, prompts, guide=guide,
                                rng=jax.random.PRNGKey(4), **kw)
    plain = guided.sample_plain(model, params, tok, prompts, max_new_tokens=24,
                                rng=jax.random.PRNGKey(4), batch_buckets=(4,),
                                length_buckets=(64,))
    assert [r.tokens for r in k1] == [r.tokens for r in plain]
    assert sum(len(r.trace) for r in k1) > len(prompts)  # several steps, not one chunk
    other = guided.sample_plain(model, params, tok, prompts, max_new_tokens=24,
                                rng=jax.random.PRNGKey(40), batch_buckets=(4,),
                                length_buckets=(64,))
    assert [r.tokens for r in other] != [r.tokens for r in plain]


@pytest.mark.heavy
def test_smollm2_teacher_forced_reencode_matches_cache(smollm2):
    from mtalign_jax.eval import scoring

    model, params, tok = smollm2
    net = scoring.make_net(model.cfg, "prm")
    rm = scoring.RewardModel(net, {"trunk": params["trunk"],
                                   "score": scoring.init_head(net, jax.random.PRNGKey(0))},
                             tok, kind="prm", transform="sigmoid", max_len=128)
    guide = guided.RewardGuide(rm)
    q = "What is 12 times 7?"
    prompt = tok.encode_chat([{"role": "user", "content": q}])
    (res,), cache = guided.guided_generate(
        model, params, tok, [prompt], guide=guide, guide_prompts=[q], num_candidates=2,
        max_new_tokens=16, max_step_tokens=8, rng=jax.random.PRNGKey(0), record_logits=True,
        return_cache=True)
    assert len(res.trace) >= 2  # (16 tokens in steps of <= 8: two or more steps)
    full = np.asarray(mtalign_jax.logits(model, params, np.asarray([prompt + res.tokens])))[0]
    end = len(prompt) - 1
    for t, s in enumerate(res.trace):
        end += s.lengths[s.chosen]
        np.testing.assert_allclose(s.logits, full[end], atol=1e-3)
        assert int(np.argmax(s.logits)) == int(np.argmax(full[end]))
        again = guide([q], [res.steps[:t + 1]])
        np.testing.assert_allclose(s.scores[s.chosen], again[0], atol=1e-3)
    k, v = _valid_kv(cache, 0)
    k0, v0 = _fresh_kv(model, params, prompt + res.tokens)
    np.testing.assert_allclose(k, k0, atol=1e-3)
    np.testing.assert_allclose(v, v0, atol=1e-3)


def _train_tiny_prm(workdir):
    from mtalign_jax.training import loop, task_reward, tasks

    spec = importlib.util.spec_from_file_location("prm_math", f"{ROOT}/configs/prm_math.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = mod.get_config("tiny")
    c.total_steps = c.checkpoint_every = c.eval_every = c.log_every = 10
    orig = tasks.get_task  # reward tasks may not be registered in tasks.py yet
    tasks.get_task = lambda cfg: (task_reward.RewardTask(cfg) if cfg.task in task_reward.KINDS
                                  else orig(cfg))
    try:
        loop.run(c, str(workdir))
    finally:
        tasks.get_task = orig


def test_decode_cli_guided_with_trained_prm(tmp_path, capsys):
    from mtalign_jax import decode

    _train_tiny_prm(tmp_path / "prm")
    prm = str(tmp_path / "prm")
    capsys.readouterr()  # drop the training logs
    args = ["--model", "tiny", "--prompt", "What is 2+3?", "--max_new_tokens", "12",
            "--seed", "1"]
    text = decode.main(args + ["--prm", prm])
    out = capsys.readouterr()
    assert out.out == text + "\n"
    lines = [x for x in out.err.splitlines() if x.startswith("step ")]
    pat = r"step (\d+): scores \[([-0-9., ]+)\] -> (\d)"
    parsed = [re.fullmatch(pat, x) for x in lines]
    assert parsed and all(parsed)
    for m in parsed:
        scores = [float(x) for x in m.group(2).split(",")]
        assert len(scores) == decode.NUM_CANDIDATES and all(0 < s < 1 for s in scores)
        assert scores[int(m.group(3))] == max(scores)  # argmax of the sigmoid PRM scores
    # a weighted combination of the same PRM twice scores the same
    text2 = decode.main(args + ["--prm", f"{prm},{prm}", "--prm_weights", "0.7,0.3"])
    out2 = capsys.readouterr()
    assert text2 == text
    assert [x for x in out2.err.splitlines() if x.startswith("step ")] == lines
    # evaluation with the same PRM as the guide: outputs, summary table, resume, role check
    from mtalign_jax import evaluate

    spec = importlib.util.spec_from_file_location("eval_math", f"{ROOT}/configs/eval_math.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = mod.get_config("tiny")
    c.method, c.guide.prms, c.data.limit, c.system = "guided", prm, 2, ""
    c.decoding.num_candidates, c.decoding.max_new_tokens = 5, 12
    wd = tmp_path / "eval"
    row = evaluate.run(c, str(wd))
    recs = [json.loads(x) for x in open(wd / "outputs.jsonl")]
    assert len(recs) == 2 and row["n"] == 2 and row["method"] == "guided"
    assert row["accuracy"] == np.mean([r["correct"] for r in recs])
    assert row["tokens"] == np.mean([len(r["tokens"]) for r in recs]) > 0
    assert all(r["sampled_tokens"] >= len(r["tokens"]) for r in recs)
    assert evaluate.run(c, str(wd)) == row  # resume: nothing is decoded again
    assert len(open(wd / "outputs.jsonl").readlines()) == 2
    assert evaluate.table([str(wd)]).splitlines()[0] == (
        "| method | accuracy | tokens | sampled | seconds | n |")
    c.judges = f"accuracy:{prm}"
    with pytest.raises(ValueError, match="both guide decoding and judge it"):
        evaluate.run(c, str(tmp_path / "eval2"))
