"""Every training config under configs/ builds in its `tiny` variant and runs 2 steps."""
import glob
import importlib.util
import json
import os

import pytest

from mtalign_jax.training.loop import run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAINING_PREFIXES = ("sft", "mahdpo_", "dpo_", "rm_", "prm_", "value_", "unified_")
CONFIGS = sorted(p for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
                 if os.path.basename(p).startswith(TRAINING_PREFIXES))


def load(path, variant):
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod, mod.get_config(variant)


def test_configs_found():
    names = {os.path.basename(p) for p in CONFIGS}
    assert {"sft.py", "mahdpo_math.py", "mahdpo_hv.py", "mahdpo_tutor.py"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=[os.path.basename(p) for p in CONFIGS])
def test_tiny_variant_runs_two_steps(tmp_path, path):
    mod, c = load(path, "tiny")
    assert "python -m mtalign_jax.train --config configs/" in (mod.__doc__ or "")
    for key in ("total_steps", "checkpoint_every", "log_every", "eval_every", "seed"):
        assert key in c, key
    for variant in ("mini", "paper"):
        load(path, variant)  # every variant builds
    c.total_steps = 2
    c.checkpoint_every = 2
    c.eval_every = 2
    out = run(c, str(tmp_path))
    assert out["step"] == 2
    with open(tmp_path / "metrics.jsonl") as f:
        recs = [json.loads(l) for l in f]
    assert [r["step"] for r in recs if "loss" in r] == [1, 2]
    assert json.load(open(tmp_path / "config.json"))["task"] == c.task


DEMO_SPEC = "accuracy:demo_out/pairs_accuracy.jsonl,engagement:demo_out/pairs_engagement.jsonl"


def test_mini_math_configs_default_to_the_demo_pair_files():
    from mtalign_jax.training.config_base import resolve_pair_files

    expect = {"mahdpo_math.py": DEMO_SPEC, "dpo_mixed.py": DEMO_SPEC,
              "dpo_scalarized.py": DEMO_SPEC,
              "dpo_single.py": "accuracy:demo_out/pairs_accuracy.jsonl",
              "dpo_modpo.py": "accuracy:demo_out/pairs_accuracy.jsonl"}
    for name, spec in expect.items():
        _, c = load(os.path.join(ROOT, "configs", name), "mini")
        assert c.data.files == "", name
        assert resolve_pair_files(c.data) == (spec, True), name
        _, tiny = load(os.path.join(ROOT, "configs", name), "tiny")  # tiny: synthetic data
        assert resolve_pair_files(tiny.data) == ("", False), name
    for name in ("mahdpo_tutor.py", "mahdpo_hv.py"):  # other domains: no math demo default
        _, c = load(os.path.join(ROOT, "configs", name), "mini")
        assert resolve_pair_files(c.data) == ("", False), name
    _, c = load(os.path.join(ROOT, "configs", "dpo_single.py"), "mini")
    c.data.objectives = "engagement"  # resolved at load time: follows an objectives override
    assert resolve_pair_files(c.data) == ("engagement:demo_out/pairs_engagement.jsonl", True)
    c.data.files = "engagement:/data/eng.jsonl"  # explicit files always win
    assert resolve_pair_files(c.data) == ("engagement:/data/eng.jsonl", False)


def test_mini_math_demo_pairs_load_or_fail_clearly(tmp_path, monkeypatch):
    from mtalign_jax.training.task_preference import load_preference_data

    _, c = load(os.path.join(ROOT, "configs", "mahdpo_math.py"), "mini")
    monkeypatch.chdir(tmp_path)  # no demo_out/ here
    hint = ("run `make demo` first or pass "
            "--config.data.files=accuracy:PATH,engagement:PATH")
    with pytest.raises(FileNotFoundError) as e:
        load_preference_data(c)
    assert str(e.value).startswith("demo_out/pairs_accuracy.jsonl: no such file")
    assert hint in str(e.value)
    os.makedirs("demo_out")
    rows = {o: [{"prompt": f"What is {i}+{i}?", "chosen": f"{2 * i}", "rejected": f"{2 * i + 1}",
                 "objective": o} for i in range(10)] for o in ("accuracy", "engagement")}
    with open("demo_out/pairs_accuracy.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows["accuracy"])
    with pytest.raises(FileNotFoundError) as e:  # the engagement file is still missing
        load_preference_data(c)
    assert str(e.value).startswith("demo_out/pairs_engagement.jsonl: no such file")
    assert hint in str(e.value)
    with open("demo_out/pairs_engagement.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows["engagement"])
    data = load_preference_data(c)
    for o in ("accuracy", "engagement"):
        assert len(data["train"][o]) + len(data["eval"][o]) == 10
        assert {r["chosen"] for r in data["train"][o] + data["eval"][o]} == {
            r["chosen"] for r in rows[o]}
