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
