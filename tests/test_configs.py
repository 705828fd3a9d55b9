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
TUTOR_ENGAGEMENT = "workdirs/pairs_tutor_engagement/pairs_engagement.jsonl"
TUTOR_SPEC = f"accuracy:source:socratic_mind,engagement:{TUTOR_ENGAGEMENT}"


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
    _, c = load(os.path.join(ROOT, "configs", "mahdpo_hv.py"), "mini")  # no math demo default
    assert resolve_pair_files(c.data) == ("", False)
    _, c = load(os.path.join(ROOT, "configs", "mahdpo_tutor.py"), "mini")  # its own defaults
    assert resolve_pair_files(c.data) == (TUTOR_SPEC, True)
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


def test_mini_tutor_real_accuracy_pairs_plus_made_engagement_pairs(tmp_path, monkeypatch):
    from mtalign_jax.data.sources import read_source
    from mtalign_jax.training.config_base import resolve_pair_files
    from mtalign_jax.training.task_preference import load_preference_data

    _, c = load(os.path.join(ROOT, "configs", "mahdpo_tutor.py"), "mini")
    assert c.data.files == "" and c.data.objectives == "accuracy,engagement"
    monkeypatch.chdir(tmp_path)  # no workdirs/ here: the engagement pairs are not made yet
    with pytest.raises(FileNotFoundError) as e:
        load_preference_data(c)
    msg = str(e.value)
    assert msg.startswith(f"{TUTOR_ENGAGEMENT}: no such file")
    assert "python -m mtalign_jax.train --config configs/rm_engagement.py:mini" in msg
    assert ("python -m mtalign_jax.make_pairs --config configs/make_pairs_tutor_engagement.py:"
            "mini --workdir workdirs/pairs_tutor_engagement") in msg
    os.makedirs(os.path.dirname(TUTOR_ENGAGEMENT))
    eng = [{"prompt": f"Assistant: hi {i}\n\nStudent: what is a loop?\n\nAssistant:",
            "chosen": f"Great question {i}! What do you think repeats?", "rejected": "A loop.",
            "objective": "engagement"} for i in range(20)]
    with open(TUTOR_ENGAGEMENT, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in eng)
    data = load_preference_data(c)
    assert data["objectives"] == ["accuracy", "engagement"]
    acc = data["train"]["accuracy"] + data["eval"]["accuracy"]
    real = read_source("socratic_mind")  # the 1,000 real pairs (../shared/data)
    assert len(real) == 1000 and len(acc) == 1000 and len(data["eval"]["accuracy"]) == 100
    assert {r["chosen"] for r in acc} == {r["chosen"] for r in real}
    assert all(r["objective"] == "accuracy" for r in acc)
    got = data["train"]["engagement"] + data["eval"]["engagement"]
    assert sorted(r["chosen"] for r in got) == sorted(r["chosen"] for r in eng)
    # Restricting the objectives keeps only that objective's default (no engagement file read).
    c.data.objectives = "accuracy"
    assert resolve_pair_files(c.data) == ("accuracy:source:socratic_mind", True)
    # The same `source:` entries work in an explicit --config.data.files.
    c.data.objectives = "accuracy,engagement"
    c.data.files = f"engagement:{TUTOR_ENGAGEMENT},accuracy:source:socratic_mind"
    again = load_preference_data(c)
    assert len(again["train"]["accuracy"]) == len(data["train"]["accuracy"])
    c.data.files = "accuracy:source:socratic_mind,engagement:source:socratic_mind"
    with pytest.raises(ValueError, match="source 'socratic_mind' has no pairs for objective "
                                         "'engagement'"):
        load_preference_data(c)


def test_mini_hv_reads_the_synthetic_ultrafeedback_fixture(tmp_path):
    from mtalign_jax.data.fixtures import ULTRAFEEDBACK, make_ultrafeedback_fixture
    from mtalign_jax.data.sources import read_source
    from mtalign_jax.training.task_preference import load_preference_data

    # The committed fixture is exactly the generator's output, and says it is synthetic.
    with open(ULTRAFEEDBACK) as f:
        lines = [json.loads(line) for line in f]
    assert lines == json.loads(json.dumps(make_ultrafeedback_fixture.make_rows()))
    assert len(lines) == 60 and all(r["synthetic"] is True for r in lines)
    _, c = load(os.path.join(ROOT, "configs", "mahdpo_hv.py"), "mini")
    assert (c.data.files, c.data.source, c.data.source_path) == ("", "ultrafeedback",
                                                                 ULTRAFEEDBACK)
    objectives = ["helpfulness", "honesty", "truthfulness"]
    data = load_preference_data(c)
    assert data["objectives"] == objectives == c.data.objectives.split(",")
    pairs = read_source("ultrafeedback", path=ULTRAFEEDBACK)
    for o in objectives:
        got = data["train"][o] + data["eval"][o]
        want = [p for p in pairs if p["objective"] == o]
        assert len(got) == len(want) >= 50, o
        assert all(p["objective"] == o and p["source"] == "synthetic" for p in got)
        assert all(p["chosen_rating"] > p["rejected_rating"] for p in got)
    assert 3 <= len(data["eval"]["helpfulness"]) <= 6  # the 90/10 split of 59 pairs
    assert any(p["conflict"] for p in pairs)  # the dimensions disagree somewhere
    # Users point it at the real file; a wrong path names the file.
    c.data.source_path = str(tmp_path / "ultrafeedback.jsonl")
    with pytest.raises(ValueError, match="ultrafeedback.jsonl:1: file does not exist"):
        load_preference_data(c)
