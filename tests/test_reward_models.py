"""Reward models, PRMs, value model, unified PRM, scoring API, judges and rollouts (issue 17).

Hand-computed loss values; planted rules learned by every model type on the tiny model; batched
per-step scores == scoring each prefix; cached-prefix rollouts == re-encoded rollouts; train ->
save -> load by workdir path -> identical scores.
"""
import importlib.util
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtalign_jax import losses
from mtalign_jax.eval import judges, scoring
from mtalign_jax.training import loop, task_reward, tasks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(name, variant="tiny", **overrides):
    path = os.path.join(ROOT, "configs", name)
    spec = importlib.util.spec_from_file_location(name[:-3], path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = mod.get_config(variant)
    for k, v in overrides.items():
        node = c
        *parents, leaf = k.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = v
    return c


def train(config, workdir):
    """The shared training loop with the reward tasks registered (tasks.py is not ours)."""
    orig = tasks.get_task
    tasks.get_task = lambda c: (task_reward.RewardTask(c) if c.task in task_reward.KINDS
                                else orig(c))
    try:
        return loop.run(config, str(workdir))
    finally:
        tasks.get_task = orig


def quick(config, steps):
    config.total_steps = steps
    config.checkpoint_every = steps
    config.eval_every = steps
    config.log_every = steps
    return config


# ---------------------------------------------------------------------------------------------
# hand-computed values


def test_bradley_terry_loss_by_hand():
    rc, rr = jnp.array([2.0, 0.5]), jnp.array([1.0, 1.5])
    l, acc = losses.bradley_terry_loss(rc, rr)
    sp = lambda x: math.log1p(math.exp(-x))  # -log sigmoid(x)  # noqa: E731
    np.testing.assert_allclose(l, [sp(1.0), sp(-1.0)], atol=1e-6)
    np.testing.assert_allclose(acc, [1.0, 0.0])
    l, _ = losses.bradley_terry_loss(rc, rr, margin=jnp.array([0.5, 0.5]), center_coef=0.1)
    np.testing.assert_allclose(l, [sp(0.5) + 0.1 * 9.0, sp(-1.5) + 0.1 * 4.0], atol=1e-6)
    # the task's head loss on [B, 2] rewards: the mean of the per-pair losses
    batch = {"margin": jnp.zeros(2)}
    loss, m = task_reward.head_loss("rm", jnp.stack([rc, rr], axis=1), batch)
    np.testing.assert_allclose(loss, (sp(1.0) + sp(-1.0)) / 2, atol=1e-6)
    assert float(m["accuracy"]) == 0.5


def test_prm_bce_by_hand_soft_labels_and_mask():
    logits = jnp.array([[0.0, 2.0]])
    labels = jnp.array([[1.0, 0.25]])
    s = 1 / (1 + math.exp(-2.0))
    soft = -(0.25 * math.log(s) + 0.75 * math.log(1 - s))
    loss, probs = losses.step_bce_loss(logits, labels, jnp.array([[1, 1]]))
    np.testing.assert_allclose(loss, (math.log(2) + soft) / 2, atol=1e-6)
    np.testing.assert_allclose(probs, [[0.5, s]], atol=1e-6)
    loss, _ = losses.step_bce_loss(logits, labels, jnp.array([[1, 0]]))
    np.testing.assert_allclose(loss, math.log(2), atol=1e-6)


def test_value_targets_worked_example():
    # n = 3 steps, M = 2 rollouts per prefix, gamma = 0.9: V_t = r_t + gamma^(n-t) mean_m z
    r = jnp.array([1.0, 1.0, 0.0])
    z = jnp.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    v = losses.hindsight_value_targets(r, z, gamma=0.9)
    np.testing.assert_allclose(v, [1 + 0.81 * 0.5, 1 + 0.9 * 1.0, 0.0], atol=1e-6)
    # padded to 4 steps: n is the real step count, the pad gets 0
    v = losses.hindsight_value_targets(jnp.array([[1.0, 1.0, 0.0, 0.0]]),
                                       jnp.concatenate([z, jnp.zeros((1, 2))])[None],
                                       gamma=0.9, step_mask=jnp.array([[1, 1, 1, 0]]))
    np.testing.assert_allclose(v, [[1.405, 1.9, 0.0, 0.0]], atol=1e-6)


def test_case_a_majority_by_hand():
    j = jnp.array([[1, 1, 0], [0, 0, 1], [1, 0, 1], [1, 1, 1]])
    np.testing.assert_array_equal(losses.case_a_majority_labels(j), [1, 0, 1, 1])
    # a tie (exactly half positive) is negative
    np.testing.assert_array_equal(losses.case_a_majority_labels(jnp.array([[1, 1, 0, 0]])), [0])


def test_metrics_by_hand():
    assert task_reward.auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
    assert task_reward.auroc([0.5, 0.5], [0, 1]) == 0.5
    assert task_reward.first_error_step(np.array([0.9, 0.7, 0.2, 0.1]), np.ones(4, bool)) == 2
    assert task_reward.first_error_step(np.array([0.9, 0.7]), np.ones(2, bool)) == -1
    np.testing.assert_allclose(judges.cohen_kappa([1, 1, 0, 0], [1, 0, 0, 0]), 0.5)
    assert judges.best_threshold(np.array([0.1, 0.2, 0.7, 0.9]),
                                 np.array([0, 0, 1, 1])) == pytest.approx(0.45)
    np.testing.assert_allclose(scoring.combine([np.array([1.0, 0.0]), np.array([0.0, 1.0])],
                                               [3, 1]), [0.75, 0.25])
    with pytest.raises(ValueError):
        scoring.combine([np.zeros(2)], [-1.0])


def test_bad_step_labels_name_file_line_field(tmp_path):
    p = tmp_path / "prm.jsonl"
    p.write_text(json.dumps({"prompt": "q", "steps": ["a\n\n", "b"], "step_labels": [1, 1]})
                 + "\n" + json.dumps({"prompt": "q", "steps": ["a"], "step_labels": [1, 0]})
                 + "\n")
    c = load_config("prm_math.py", **{"data.files": str(p)})
    with pytest.raises(ValueError) as e:
        task_reward.RewardTask(c).load_data(str(tmp_path / "w"))
    assert str(e.value).splitlines()[-1].startswith(f"{p}:2: field 'step_labels': ")



def test_source_offset_takes_a_disjoint_training_part():
    """A judge RM skips the guide's training rows (data.source_offset); eval rows stay."""
    first = task_reward.load_reward_data(load_config("rm_engagement.py",
                                                     **{"data.source_cap": 60}))
    second = task_reward.load_reward_data(load_config(
        "rm_engagement.py", **{"data.source_cap": 60, "data.source_offset": 60}))
    key = lambda ex: json.dumps(ex, sort_keys=True, default=str)  # noqa: E731
    assert len(first["train"]) == len(second["train"]) == 60
    assert not {key(x) for x in first["train"]} & {key(x) for x in second["train"]}
    assert [key(x) for x in first["eval"]] == [key(x) for x in second["eval"]]
    with pytest.raises(ValueError, match="source_offset=100000 leaves no training example"):
        task_reward.load_reward_data(load_config("rm_engagement.py",
                                                 **{"data.source_offset": 100_000}))

# ---------------------------------------------------------------------------------------------
# scoring API on the tiny model


def random_rm(kind="prm"):
    task = task_reward.RewardTask(load_config("prm_math.py") if kind == "prm"
                                  else load_config("value_math.py"))
    net, params, tok = task.load_net()
    return scoring.RewardModel(net, params, tok, kind=kind,
                               transform=scoring.KINDS[kind][2], max_len=256)


def test_batched_step_scores_equal_each_prefix():
    rm = random_rm("prm")
    prompts = ["What is 2+2?", "Name a colour.", "Count to three."]
    steps = [["Two plus two\n\n", "is four.\n\n", "\\boxed{4}"], ["Red.\n\n"],
             ["One,\n\n", "two,\n\n", "three,\n\n", "done."]]
    enc = [scoring.encode_steps(rm.tokenizer, p, s, max_len=rm.max_len)
           for p, s in zip(prompts, steps)]
    ids, mask, _ = scoring.collate(enc, rm.tokenizer.pad_id)
    step_mask = np.zeros(ids.shape, bool)
    for b, (_, ends) in enumerate(enc):
        step_mask[b, ends] = True
    per_step, final = scoring.score(rm, {"input_ids": ids, "attention_mask": mask}, step_mask)
    assert per_step.shape == (3, 4) and np.isnan(per_step[1, 1:]).all()
    for b, (p, s) in enumerate(zip(prompts, steps)):
        prefixes = ["".join(s[:t + 1]) for t in range(len(s))]
        alone = scoring.score_texts(rm, [p] * len(s), prefixes)
        np.testing.assert_allclose(per_step[b, :len(s)], alone, atol=1e-5)
        np.testing.assert_allclose(final[b], alone[-1], atol=1e-5)
    # the list-of-steps entry point gives the same numbers
    for b, got in enumerate(scoring.score_steps(rm, prompts, steps)):
        np.testing.assert_allclose(got, per_step[b, :len(steps[b])], atol=1e-5)


def test_long_inputs_keep_their_end():
    rm = random_rm("value")
    rm.max_len = 48
    long_prompt = "x" * 300
    ids, ends = scoring.encode_steps(rm.tokenizer, long_prompt, ["abc", "de"], max_len=48)
    assert len(ids) == 48 and ends == [45, 47] and rm.tokenizer.decode(ids).endswith("abcde")
    a = scoring.score_texts(rm, [long_prompt], ["the answer"])
    b = scoring.score_texts(rm, ["y" * 50 + long_prompt], ["the answer"])
    np.testing.assert_allclose(a, b, atol=1e-6)  # the dropped start does not matter


# ---------------------------------------------------------------------------------------------
# planted rules, trained through the shared loop


@pytest.fixture(scope="module")
def rm_run(tmp_path_factory):
    wd = tmp_path_factory.mktemp("rm")
    c = quick(load_config("rm_engagement.py"), 60)
    return c, wd, train(c, wd)


@pytest.fixture(scope="module")
def clf_run(tmp_path_factory):
    wd = tmp_path_factory.mktemp("clf")
    c = quick(load_config("rm_tutor_accuracy.py"), 60)
    return c, wd, train(c, wd)


def test_rm_learns_planted_rule(rm_run):
    _, wd, out = rm_run
    assert out["eval/pairwise_accuracy"] > 0.9
    recs = [json.loads(l) for l in open(wd / "metrics.jsonl")]
    assert recs[0]["step"] == 60 and recs[0]["loss"] < 0.3


def test_train_save_load_by_workdir_identical_scores(rm_run):
    c, wd, out = rm_run
    rm = scoring.load_reward_model(str(wd))
    assert rm.kind == "rm" and set(rm.params) == {"trunk", "score"}
    ev = task_reward.RewardTask(c).load_data(str(wd))["eval"]
    prompts = [r["prompt"] for r in ev]
    chosen = scoring.score_texts(rm, prompts, [r["chosen"] for r in ev])
    rejected = scoring.score_texts(rm, prompts, [r["rejected"] for r in ev])
    # the loop's eval (trained params in memory) and the loaded model agree
    np.testing.assert_allclose(np.mean(chosen - rejected), out["eval/margin"], rtol=1e-5)
    assert np.mean(chosen > rejected) == out["eval/pairwise_accuracy"]
    again = scoring.score_texts(scoring.load_reward_model(str(wd / "model")), prompts,
                                [r["chosen"] for r in ev])
    np.testing.assert_array_equal(chosen, again)


def test_classifier_learns_planted_rule(clf_run):
    _, _, out = clf_run
    assert out["eval/accuracy"] > 0.9 and out["eval/auroc"] > 0.95


def test_prm_learns_planted_rule(tmp_path):
    out = train(quick(load_config("prm_math.py"), 80), tmp_path)
    assert out["eval/step_accuracy"] > 0.9
    assert out["eval/step_auroc"] > 0.95
    assert out["eval/first_error_accuracy"] > 0.9


def test_value_model_learns_planted_rule(tmp_path):
    c = quick(load_config("value_math.py"), 60)
    out = train(c, tmp_path)
    assert out["eval/mse"] < 0.05
    assert out["eval/spearman_mc"] > 0.5  # ties and rollout noise cap it below 1
    # the rule: a prefix is clean (V_t >= 1 + ...) until its first marked step (V_t <= 0.1)
    rm = scoring.load_reward_model(str(tmp_path))
    ev = task_reward.RewardTask(c).load_data(str(tmp_path))["eval"]
    pred = np.concatenate(scoring.score_steps(rm, [r["prompt"] for r in ev],
                                              [r["steps"] for r in ev]))
    target = np.concatenate([r["labels"] for r in ev])
    assert np.mean((pred > 0.85) == (target > 0.85)) > 0.9


def test_unified_conditioned_vs_pooled(tmp_path):
    """Two objectives give one marker opposite meanings: only the conditioned model can score
    each dimension; the pooled one (the paper's) cannot."""
    cond = train(quick(load_config("unified_prm.py", **{"data.condition": True}), 50),
                 tmp_path / "cond")
    assert cond["eval/accuracy/accuracy"] > 0.9 and cond["eval/accuracy/engagement"] > 0.9
    pooled = train(quick(load_config("unified_prm.py"), 50), tmp_path / "pooled")
    assert pooled["eval/accuracy"] < 0.75
    rm = scoring.load_reward_model(str(tmp_path / "cond"))
    with pytest.raises(ValueError, match="objective"):
        scoring.score_texts(rm, ["q"], ["a"])
    bad = "cat # dog"
    acc = scoring.score_texts(rm, ["Q1."], [bad], objective="accuracy")
    eng = scoring.score_texts(rm, ["Q1."], [bad], objective="engagement")
    assert acc[0] < 0.5 < eng[0]


def test_pooled_sources_keep_every_objective_under_a_cap(tmp_path):
    """Pooled rows are mixed before data.source_cap / eval_cap cut them (the sources come one
    after another; a plain cut would keep only the first objective)."""
    rows = task_reward.synthetic_rows("unified", 200, 0)
    files = []
    for objective in ("accuracy", "engagement"):  # one file per objective, as a user pools
        path = tmp_path / f"{objective}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows
                                if r["objective"] == objective))
        files.append(f"{objective}:{path}")
    c = load_config("unified_prm.py", **{"data.files": ",".join(files), "data.synthetic": 0,
                                         "data.source_cap": 40, "data.eval_cap": 20})
    data = task_reward.load_reward_data(c)
    for split in ("train", "eval"):
        objectives = [ex["objective"] for ex in data[split]]
        assert {"accuracy", "engagement"} <= set(objectives), (split, objectives)


def test_frozen_trunk_caches_features_and_keeps_trunk(tmp_path):
    c = quick(load_config("rm_engagement.py", **{"model.freeze_trunk": True}), 3)
    train(c, tmp_path)
    assert (tmp_path / "features_train.npz").exists()
    rm = scoring.load_reward_model(str(tmp_path))
    net, params, _ = task_reward.RewardTask(c).load_net()
    for a, b in zip(jax.tree_util.tree_leaves(params["trunk"]),
                    jax.tree_util.tree_leaves(rm.params["trunk"])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # the cached features give the same rewards as re-encoding the text
    feats = np.load(tmp_path / "features_eval.npz")["feats"]  # [N, 2, D]
    ev = task_reward.RewardTask(c).load_data(str(tmp_path))["eval"]
    raw = rm.net.apply({"params": {"score": rm.params["score"]}}, jnp.asarray(feats),
                       method=scoring.RewardNet.apply_head)
    direct = scoring.score_texts(rm, [r["prompt"] for r in ev], [r["chosen"] for r in ev])
    np.testing.assert_allclose(np.asarray(raw)[:, 0], direct, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# judges


def test_judge_calibration_and_roles(clf_run):
    _, wd, _ = clf_run
    rng = np.random.default_rng(1)
    clean = [task_reward._sentence(rng, False) for _ in range(20)]
    marked = [task_reward._sentence(rng, True) for _ in range(20)]
    prompts = [f"Question {i}: x." for i in range(40)]
    ratings = [9.0] * 20 + [2.0] * 20  # held-out "human" ratings of the same responses
    j = judges.Judge(scoring.load_reward_model(str(wd)), objective="tutor_accuracy",
                     role="labeler")
    with pytest.raises(RuntimeError, match="not calibrated"):
        j.verdicts(prompts, clean + marked)
    m = judges.calibrate(j, prompts, clean + marked, ratings, human_threshold=5.0)
    assert m["accuracy"] > 0.9 and m["auroc"] > 0.95 and m["agreement"] > 0.8
    assert j.record()["role"] == "labeler" and j.record()["model"].endswith("model")
    guide = judges.Judge(j.rm, objective="tutor_accuracy", role="guide")
    with pytest.raises(ValueError, match="both guide"):
        judges.check_roles([guide, judges.Judge(j.rm, objective="tutor_accuracy")])


# ---------------------------------------------------------------------------------------------
# rollouts


def test_rollouts_from_cached_prefix_equal_reencoded():
    from mtalign_jax.hf.load import load_pretrained
    from mtalign_jax.rollouts import sample_continuations

    model, params, tok = load_pretrained("tiny")
    prefixes = [tok.encode("2 + 3 = "), tok.encode("A longer prefix, then: "),
                tok.encode("x")]
    kw = dict(max_new_tokens=12, temperature=1.0, top_k=50, pad_id=tok.pad_id,
              stop_ids=[tok.eos_id], batch_rows=4)
    rng = jax.random.PRNGKey(3)
    cached = sample_continuations(model, params, prefixes, 3, rng, reuse_cache=True, **kw)
    fresh = sample_continuations(model, params, prefixes, 3, rng, reuse_cache=False, **kw)
    assert cached == fresh
    assert len(cached) == 3 and all(len(c) == 3 for c in cached)
    assert len({tuple(s) for s in cached[0]}) > 1  # M different samples per prefix


def test_rollouts_command_writes_value_targets_and_resumes(tmp_path):
    from mtalign_jax import rollouts

    cfg = load_config("rollouts_math.py", **{"data.limit": 2, "rollouts.m": 3})
    s1 = rollouts.run(cfg, str(tmp_path))
    rows = [json.loads(l) for l in open(tmp_path / "labels.jsonl")]
    assert len(rows) == 2 and s1["sampled_now"] == s1["prefixes"]
    for r in rows:
        n = len(r["steps"])
        z = np.asarray(r["z"], np.float32)
        assert z.shape == (n, 3)
        want = losses.hindsight_value_targets(jnp.asarray(r["step_rewards"]), jnp.asarray(z),
                                              0.9)
        np.testing.assert_allclose(r["step_values"], want, atol=1e-6)
        np.testing.assert_allclose(r["mc_success"], z.mean(axis=1), atol=1e-6)
    s2 = rollouts.run(cfg, str(tmp_path))  # resumable: nothing left to sample
    assert s2["sampled_now"] == 0
    assert [json.loads(l) for l in open(tmp_path / "labels.jsonl")] == rows
    # the value task reads the rollouts' output as it is
    data = task_reward.RewardTask(load_config(
        "value_math.py", **{"data.files": str(tmp_path / "labels.jsonl"),
                            "data.eval_frac": 0.0})).load_data(str(tmp_path))
    assert len(data["train"]) == 2 and data["train"][0]["mc"] == rows[0]["mc_success"] \
        or data["train"][0]["mc"] == rows[1]["mc_success"]


def test_rollouts_cli_exits_zero(tmp_path):
    """`python -m mtalign_jax.rollouts` ends with exit status 0 (the summary goes to stdout)."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "mtalign_jax.rollouts", "--config",
         os.path.join(ROOT, "configs", "rollouts_math.py") + ":tiny", "--workdir", str(tmp_path),
         "--config.data.limit=1", "--config.rollouts.m=2"],
        capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["solutions"] == 1
