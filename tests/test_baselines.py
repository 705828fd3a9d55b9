"""Baselines and head mixing on the tiny model: MODPO, scalarised DPO, DPO soups, the weight
sweep, and MAH-DPO on two conflicting SYNTHETIC objectives.

The "modpo" and "scalarized" tasks are registered here by patching tasks.get_task (the lead
adds them to the registry).
"""
import importlib.util
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mtalign_jax
from mtalign_jax.training import tasks
from mtalign_jax.training.loop import run
from mtalign_jax.training.steps import make_preference_step, preference_loss_fn, response_logps
from mtalign_jax.training.tasks import response_view

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _get_task_with_baselines(original):
    def get_task(config):
        from mtalign_jax.training import task_modpo, task_scalarized

        extra = {"modpo": task_modpo.ModpoTask, "scalarized": task_scalarized.ScalarizedTask}
        if config.task in extra:
            return extra[config.task](config)
        return original(config)
    return get_task


@pytest.fixture(scope="module")
def registry():
    mp = pytest.MonkeyPatch()
    mp.setattr(tasks, "get_task", _get_task_with_baselines(tasks.get_task))
    yield
    mp.undo()


def _config(name, variant="tiny", **over):
    path = os.path.join(ROOT, "configs", name)
    spec = importlib.util.spec_from_file_location(name[:-3], path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = mod.get_config(variant)
    c.mesh.devices = 1
    c.eval_every = 0
    c.log_every = 1
    c.data.synthetic = 16
    for key, value in over.items():
        node = c
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return c


def _losses(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(l)["loss"] for l in f if '"loss"' in l]


def _batch(pairs=4, t=24, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 256, size=(2 * pairs, t)).astype(np.int32)
    labels = ids.copy()
    labels[:, :10] = -100
    lengths = rng.integers(16, t + 1, size=2 * pairs)
    mask = (np.arange(t)[None] < lengths[:, None]).astype(np.int32)
    labels[mask == 0] = -100
    b = {"input_ids": ids, "labels": labels, "attention_mask": mask}
    b["resp_idx"], b["resp_labels"] = response_view(labels)
    b["objective_ids"] = np.zeros((2 * pairs,), np.int32)
    return b


# ---------------------------------------------------------------------------------- MODPO


def test_modpo_zero_margin_weight_equals_dpo_step():
    from mtalign_jax.training.task_modpo import make_modpo_step, modpo_loss_fn

    model, params, _ = mtalign_jax.load_pretrained("tiny", num_heads=1, head_init_noise=0.0,
                                                   seed=3)
    b = _batch()
    lp = response_logps(model, params, b)
    b["ref_chosen"], b["ref_rejected"] = lp[:4] + 0.4, lp[4:] - 0.3
    b["margins"] = np.array([[1.5, -2.0], [0.3, 0.7], [-1.0, 2.0], [4.0, 0.0]], np.float32)
    kw = dict(objectives=["accuracy"], beta=0.5, routed=False)
    dpo_loss, dpo_m = preference_loss_fn(model, params, b, **kw)
    mkw = dict(target="accuracy", beta=0.5, weight=1.0, other_weights=(0.0, 0.0))
    loss, m = modpo_loss_fn(model, params, b, **mkw)
    np.testing.assert_allclose(loss, dpo_loss, rtol=1e-6, atol=1e-7)
    for key in ("rewards/accuracy/chosen", "rewards/accuracy/margin",
                "rewards/accuracy/accuracy"):
        np.testing.assert_allclose(m[key], dpo_m[key], rtol=1e-6, atol=1e-7)
    # one optimizer step of each: identical parameters
    tx = optax.rmsprop(1e-3, decay=0.99)
    from mtalign_jax.training.state import TrainState

    st = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                    rng=jax.random.PRNGKey(0), skipped=jnp.zeros((), jnp.int32))
    s1, _ = jax.jit(make_preference_step(model, tx, **kw)[0])(st, b, None)
    s2, _ = jax.jit(make_modpo_step(model, tx, **mkw)[0])(st, b, None)
    for x, y in zip(jax.tree_util.tree_leaves(s1.params), jax.tree_util.tree_leaves(s2.params)):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
    # a non-zero margin weight changes the loss: -log sigmoid(beta d / w_k - sum w_j m_j / w_k)
    loss2, _ = modpo_loss_fn(model, params, b, **dict(mkw, weight=0.5,
                                                      other_weights=(0.5, 0.0)))
    d = (lp[:4] - lp[4:]) - (b["ref_chosen"] - b["ref_rejected"])
    expect = jnp.mean(-jax.nn.log_sigmoid(0.5 / 0.5 * d - 0.5 * b["margins"][:, 0] / 0.5))
    np.testing.assert_allclose(loss2, expect, rtol=1e-5)
    assert abs(float(loss2) - float(loss)) > 1e-3


@pytest.fixture(scope="module")
def dpo_runs(registry, tmp_path_factory):
    """Two-step runs: DPO (accuracy), MODPO with zero margin weight, DPO (engagement)."""
    base = tmp_path_factory.mktemp("baselines")
    out = {}
    for name, cfg in {
        "dpo": _config("dpo_single.py", total_steps=2, **{"data.conflict": True}),
        "modpo0": _config("dpo_modpo.py", total_steps=2,
                          **{"modpo.weights": "accuracy:1,engagement:0"}),
        "dpo_eng": _config("dpo_single.py", total_steps=2,
                           **{"data.objectives": "engagement", "data.conflict": True}),
    }.items():
        run(cfg, str(base / name))
        out[name] = str(base / name)
    return out


def test_modpo_task_with_zero_margin_weight_equals_dpo_task(dpo_runs):
    a, b = _losses(dpo_runs["dpo"]), _losses(dpo_runs["modpo0"])
    assert len(a) == 2
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7)
    _, pa, _ = mtalign_jax.load_pretrained(dpo_runs["dpo"])
    _, pb, _ = mtalign_jax.load_pretrained(dpo_runs["modpo0"])
    for x, y in zip(jax.tree_util.tree_leaves(pa), jax.tree_util.tree_leaves(pb)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)


def test_modpo_tiny_margins_from_metadata_and_from_a_dpo_model(registry, dpo_runs, tmp_path):
    """The tiny variant (rule-score margins) runs; margins from a DPO workdir are
    beta * (log-ratio of the margin model - log-ratio of the reference)."""
    from mtalign_jax.training.task_modpo import MARGIN_FILE, ModpoTask
    from mtalign_jax.training.task_preference import REFERENCE_FILE

    c = _config("dpo_modpo.py", total_steps=2)
    out = run(c, str(tmp_path / "meta"))
    assert out["step"] == 2 and np.isfinite(out["loss"])
    assert out["modpo/other_margin"] == pytest.approx(-0.5)  # w_eng * (0 - 1) on every pair

    c = _config("dpo_modpo.py", total_steps=1,
                **{"modpo.margin_models": f"engagement:{dpo_runs['dpo_eng']}"})
    wd = str(tmp_path / "model")
    run(c, wd)
    task = ModpoTask(c)
    data = task.load_data(wd)
    z, ref = np.load(os.path.join(wd, MARGIN_FILE)), np.load(os.path.join(wd, REFERENCE_FILE))
    m = task.margin_table(data, wd, None, {s: {"accuracy": ref[f"{s}/accuracy"]}
                                          for s in ("train", "eval")})  # cached: no tokenizer
    lp, r = z["train/engagement"], ref["train/accuracy"]
    expect = c.modpo.margin_beta * ((lp[:, 0] - lp[:, 1]) - (r[:, 0] - r[:, 1]))
    np.testing.assert_allclose(m["train"][:, 0], expect, rtol=1e-6)
    assert np.abs(expect).max() > 0


def test_modpo_missing_margin_names_file_and_line(registry, tmp_path):
    p = tmp_path / "acc.jsonl"
    p.write_text(json.dumps({"prompt": "q", "chosen": "a", "rejected": "b",
                             "scores": {"engagement": [1, 0]}}) + "\n"
                 + json.dumps({"prompt": "q2", "chosen": "a", "rejected": "b"}) + "\n")
    c = _config("dpo_modpo.py", **{"data.files": f"accuracy:{p}", "data.eval_frac": 0.0})
    with pytest.raises(ValueError) as e:
        run(c, str(tmp_path / "w"))
    assert str(e.value).splitlines()[-1].startswith(f"{p}:2: field 'scores': no reward margin")
    assert not (tmp_path / "w").exists()  # validation before anything is written


# ------------------------------------------------------------------------ scalarised DPO


def test_scalarize_relabels_by_weighted_scores():
    from mtalign_jax.training.task_scalarized import scalarize

    rows = [{"prompt": "p", "chosen": "A", "rejected": "B", "scores": {"x": [1, 0], "y": [0, 1]}},
            {"prompt": "p", "chosen": "C", "rejected": "D", "scores": {"x": [0, 1], "y": [1, 0]}},
            {"prompt": "p", "chosen": "E", "rejected": "F", "scores": {"x": [1, 1], "y": [0, 0]}}]
    out, swapped, dropped = scalarize(rows, {"x": 0.3, "y": 0.7})
    assert [(r["chosen"], r["rejected"]) for r in out] == [("B", "A"), ("C", "D"), ("E", "F")]
    assert (swapped, dropped) == (1, 0)
    assert out[0]["scores"] == {"x": [0, 1], "y": [1, 0]}
    assert out[0]["scalarized"] == {"chosen": pytest.approx(0.7), "rejected": pytest.approx(0.3),
                                    "swapped": True}
    out, swapped, dropped = scalarize(rows, {"x": 0.3, "y": 0.7}, ties="drop")
    assert len(out) == 2 and dropped == 1
    with pytest.raises(KeyError):
        scalarize(rows, {"z": 1.0})


def test_scalarized_tiny_relabels_conflicting_pairs_and_trains(registry, tmp_path):
    from mtalign_jax.training.task_scalarized import ScalarizedTask

    c = _config("dpo_scalarized.py", total_steps=2)
    data = ScalarizedTask(c).load_data(str(tmp_path))
    for o in ("accuracy", "engagement"):  # 0.7 accuracy: the correct flat answer wins
        assert all(r["chosen"].endswith(".") and "!" not in r["chosen"]
                   for r in data["train"][o])
    assert all(r["scalarized"]["swapped"] for r in data["train"]["engagement"])
    out = run(c, str(tmp_path / "w"))
    assert out["step"] == 2 and np.isfinite(out["loss"])


# ----------------------------------------------------------------------------------- soups


def test_soup_with_weights_one_zero_is_the_first_model(dpo_runs, tmp_path):
    from mtalign_jax.checkpoint import load_params, save_params
    from mtalign_jax.soup import main as soup_main

    w1, w2 = dpo_runs["dpo"], dpo_runs["dpo_eng"]
    assert soup_main(["--models", f"{w1},{w2}", "--weights", "1,0", "--out",
                      str(tmp_path / "s10")]) == 0
    p1, _ = load_params(os.path.join(w1, "model"))
    ps, meta = load_params(str(tmp_path / "s10" / "model"))
    l1, ls = jax.tree_util.tree_leaves(p1), jax.tree_util.tree_leaves(ps)
    assert len(l1) == len(ls)
    for x, y in zip(l1, ls):
        assert x.dtype == y.dtype and np.array_equal(x.view(np.uint8), y.view(np.uint8))
    assert meta["soup"]["weights"] == [1.0, 0.0]
    model, params, tok = mtalign_jax.load_pretrained(str(tmp_path / "s10"))
    m1, q1, _ = mtalign_jax.load_pretrained(w1)
    ids = np.asarray([tok.encode("What is 2+3?")], np.int32)
    np.testing.assert_array_equal(mtalign_jax.logits(model, params, ids),
                                  mtalign_jax.logits(m1, q1, ids))

    # (0.25, 0.75) is the weighted mean; a different architecture is a clear error
    soup_main(["--models", f"{w1},{w2}", "--weights", "1,3", "--out", str(tmp_path / "s13")])
    p2, _ = load_params(os.path.join(w2, "model"))
    pm, _ = load_params(str(tmp_path / "s13" / "model"))
    np.testing.assert_allclose(pm["heads"]["kernel"],
                               0.25 * p1["heads"]["kernel"] + 0.75 * p2["heads"]["kernel"],
                               rtol=1e-6, atol=1e-7)
    bad = tmp_path / "bad" / "model"
    p_bad = jax.tree_util.tree_map(lambda x: x, p1)
    p_bad["heads"]["kernel"] = np.zeros((2,) + p1["heads"]["kernel"].shape[1:], np.float32)
    _, meta1 = load_params(os.path.join(w1, "model"))
    save_params(str(bad), p_bad, meta1)
    with pytest.raises(ValueError, match=r"heads/kernel has shape \(2,"):
        soup_main(["--models", f"{w1},{tmp_path / 'bad'}", "--weights", "0.5,0.5", "--out",
                   str(tmp_path / "s_bad")])


# ----------------------------------------------------- MAH-DPO on conflicting objectives, sweep


@pytest.fixture(scope="module")
def mahdpo_conflict(tmp_path_factory):
    """50 steps of MAH-DPO on two conflicting SYNTHETIC objectives (same prompts, opposite
    preferences: accuracy prefers the flat correct sum, engagement the wrong enthusiastic one)."""
    wd = str(tmp_path_factory.mktemp("mahdpo") / "w")
    c = _config("mahdpo_math.py", total_steps=50, checkpoint_every=50,
                **{"data.conflict": True, "data.synthetic": 32, "loss.reference": "live",
                   "loss.beta": 0.5, "optim.lr": 1e-3})
    run(c, wd)
    return wd, c


def test_mahdpo_heads_learn_conflicting_objectives(mahdpo_conflict):
    from mtalign_jax.data.synthetic import synthetic_preferences
    from mtalign_jax.sweep import preference_scores, score_pairs

    wd, c = mahdpo_conflict
    model, params, tok = mtalign_jax.load_pretrained(wd)
    ref_model, ref_params, _ = mtalign_jax.load_pretrained("tiny", num_heads=1,
                                                           seed=c.model.head_seed)
    held_out = synthetic_preferences(["accuracy", "engagement"], 24, seed=777, conflict=True)
    kw = dict(max_len=c.data.max_len, max_prompt_len=c.data.max_prompt_len)
    acc_pairs = [r for r in held_out if r["objective"] == "accuracy"]
    eng_pairs = [r for r in held_out if r["objective"] == "engagement"]
    heads = [[1.0, 0.0], [0.0, 1.0]]
    lp_a = score_pairs(model, params, tok, acc_pairs, heads, **kw)
    lp_e = score_pairs(model, params, tok, eng_pairs, heads, **kw)
    ref_a = score_pairs(ref_model, ref_params, tok, acc_pairs, [[1.0]], **kw)[0]
    ref_e = score_pairs(ref_model, ref_params, tok, eng_pairs, [[1.0]], **kw)[0]
    acc_on_a, _ = preference_scores(lp_a, ref_a, c.loss.beta)
    acc_on_e, _ = preference_scores(lp_e, ref_e, c.loss.beta)
    assert acc_on_a[0] > 0.8, acc_on_a  # head 0 (accuracy) on accuracy pairs: above chance
    assert acc_on_e[1] > 0.8, acc_on_e  # head 1 (engagement) on engagement pairs
    # the conflicting pairs: the two heads prefer different responses of the same pair
    d = (lp_a[..., 0] - ref_a[None, :, 0]) - (lp_a[..., 1] - ref_a[None, :, 1])  # [2, N]
    disagree = np.mean((d[0] > 0) & (d[1] < 0))
    assert disagree > 0.8, d


def test_sweep_at_one_zero_equals_head0_and_writes_outputs(mahdpo_conflict, dpo_runs, tmp_path):
    from mtalign_jax.decoding.sampling import single_head
    from mtalign_jax.sweep import main as sweep_main, score_pairs, weight_grid

    assert weight_grid(2, 11).shape == (11, 2)
    np.testing.assert_allclose(weight_grid(2, 11)[[0, 3, 10]], [[1, 0], [0.7, 0.3], [0, 1]])
    g3 = weight_grid(3, 11)
    assert g3.shape == (66, 3) and np.allclose(g3.sum(1), 1) and len(np.unique(g3, axis=0)) == 66

    wd, c = mahdpo_conflict
    model, params, tok = mtalign_jax.load_pretrained(wd)
    from mtalign_jax.training.task_preference import load_preference_data

    rows = load_preference_data(c)["eval"]["accuracy"]
    kw = dict(max_len=c.data.max_len, max_prompt_len=c.data.max_prompt_len)
    swept = score_pairs(model, params, tok, rows, [[1.0, 0.0]], **kw)[0]
    m0, p0 = single_head(model, params, None)  # head 0 alone, as a one-head model
    assert m0.num_heads == 1
    alone = score_pairs(m0, p0, tok, rows, [[1.0]], **kw)[0]
    np.testing.assert_allclose(swept, alone, rtol=1e-6, atol=1e-5)
    other = score_pairs(model, params, tok, rows, [[0.0, 1.0]], **kw)[0]
    assert np.abs(other - alone).max() > 1e-2  # the heads really differ

    out = tmp_path / "sweep"
    assert sweep_main(["--model", wd, "--out", str(out), "--grid", "3", "--generate", "1",
                       "--max_new_tokens", "4", "--baselines", f"dpo:{dpo_runs['dpo']}"]) == 0
    res = json.load(open(out / "sweep.json"))
    assert [r["weights"] for r in res["grid"]] == [[1, 0], [0.5, 0.5], [0, 1]]
    assert res["heads"] == ["accuracy", "engagement"]
    ref = score_pairs(*mtalign_jax.load_pretrained("tiny", num_heads=1,
                                                   seed=c.model.head_seed)[:2], tok, rows,
                      [[1.0]], **kw)[0]
    expect = np.mean((alone[:, 0] - ref[:, 0]) > (alone[:, 1] - ref[:, 1]))
    assert res["grid"][0]["scores"]["accuracy"] == pytest.approx(expect)
    assert set(res["baselines"]["dpo"]["scores"]) == {"accuracy", "engagement"}
    lines = open(out / "sweep.csv").read().splitlines()
    assert lines[0].split(",")[:4] == ["w_accuracy", "w_engagement", "accuracy", "engagement"]
    assert len(lines) == 4
    assert open(out / "pareto.png", "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    gens = [json.loads(l) for l in open(out / "generations.jsonl")]
    assert len(gens) == 3 and [g["weights"] for g in gens] == [[1, 0], [0.5, 0.5], [0, 1]]
