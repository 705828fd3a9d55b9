"""The benchmark harness end to end on the tiny preset (`--quick --smoke`).

Speed is never asserted here (DESIGN.md section 7); this checks that every case produces a
result with the issue's schema, that the PyTorch baseline does the same work as ours (its
first-step loss on the same weights and batch equals ours to 1e-4), and that the committed
benchmarks/results.json is left alone.
"""
import json
import math
import os
import pathlib
import subprocess
import sys

import pytest

from mtalign_jax.models.presets import get_preset

ROOT = pathlib.Path(__file__).resolve().parents[1]

FIELDS = ("bench", "model", "heads", "pairs", "seq_len", "dtype", "variant", "seconds",
          "baseline_seconds", "ratio", "peak_rss_mb")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    committed = ROOT / "benchmarks" / "results.json"
    before = committed.read_bytes() if committed.exists() else None
    out = tmp_path_factory.mktemp("bench") / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--smoke", "--out", str(out)],
        cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-4000:]
    after = committed.read_bytes() if committed.exists() else None
    return json.loads(out.read_text()), proc.stdout, before, after


@pytest.mark.slow
def test_schema_and_machine(smoke):
    data, stdout, _, _ = smoke
    m = data["machine"]
    assert m["cores"] == os.cpu_count()
    assert m["command"] == "python -m benchmarks.run --quick --smoke"
    for key in ("cpu", "jax", "torch", "date"):
        assert m[key], key
    assert isinstance(m["vector_extensions"], list)
    benches = {r["bench"] for r in data["results"]}
    assert benches == {"matmul_peak", "mahdpo_step", "mahdpo_memory", "inference_mixed_heads",
                       "param_memory", "sampling_throughput", "guided_decoding"}
    for r in data["results"]:
        assert set(FIELDS) <= set(r), r
    assert "| mahdpo_step | tiny | 2 | precomputed_ref |" in stdout


@pytest.mark.slow
def test_mahdpo_step_results_and_same_loss(smoke):
    data = smoke[0]
    step = [r for r in data["results"] if r["bench"] == "mahdpo_step"]
    assert sorted(r["variant"] for r in step) == ["all_heads", "live_ref", "precomputed_ref"]
    for r in step:
        assert (r["model"], r["heads"], r["pairs"], r["seq_len"], r["dtype"]) == (
            "tiny", 2, 4, 128, "float32")
        assert r["seconds"] > 0 and r["baseline_seconds"] > 0 and r["compile_seconds"] > 0
        assert r["ratio"] == pytest.approx(r["baseline_seconds"] / r["seconds"])
        assert r["peak_rss_mb"] > 0 and r["baseline_peak_rss_mb"] > 0
        assert 0 < r["mfu"] == pytest.approx(r["flops_per_second"] / data["results"][0][
            "flops_per_second"])
        # the same work: first-step loss of the torch baseline equals ours on the same batch
        assert abs(r["loss"] - r["baseline_loss"]) <= 1e-4, r
        # heads really differ in smoke (noise 0.1), so the loss is far from log 2
        assert abs(r["loss"] - math.log(2)) > 1e-2
    live = next(r for r in step if r["variant"] == "live_ref")
    pre = next(r for r in step if r["variant"] == "precomputed_ref")
    assert live["flops"] == pytest.approx(pre["flops"] * 4 / 3)  # + one forward F of 3F


@pytest.mark.slow
def test_memory_results(smoke):
    data = smoke[0]
    by = {r["bench"]: r for r in data["results"]}
    mem = by["mahdpo_memory"]
    assert mem["heads"] == 2 and mem["peak_mb"] > 0 and mem["baseline_peak_mb"] > 0
    inf = by["inference_mixed_heads"]
    assert inf["compiled_peak_mb"] > 0 and inf["baseline_compiled_peak_mb"] > 0
    pm = by["param_memory"]
    # every big leaf sharded 8 ways (only tiny bias/norm leaves may replicate)
    assert pm["param_mb"] / 8 <= pm["per_device_param_mb"] <= pm["param_mb"] / 8 * 1.01
    assert pm["per_device_opt_mb"] == pytest.approx(pm["per_device_param_mb"], rel=1e-6)
    assert pm["params"] == get_preset("qwen2.5-7b-instruct").num_params(num_heads=2)
    samp = by["sampling_throughput"]
    assert samp["tokens_per_second"] > 0 and samp["baseline_tokens_per_second"] > 0


@pytest.mark.slow
def test_guided_results(smoke):
    guided = [r for r in smoke[0]["results"] if r["bench"] == "guided_decoding"]
    assert [(r["variant"], r["steps"], r["k"]) for r in guided] == [
        ("cache_vs_reencode_each", 2, 5)]
    for r in guided:
        assert r["steps_done"] == r["steps"]
        assert r["same_tokens"], r  # the cache path keeps the tokens the baseline keeps
        assert r["seconds"] > 0 and r["ratio"] == pytest.approx(
            r["baseline_seconds"] / r["seconds"])


@pytest.mark.slow
def test_committed_results_untouched(smoke):
    _, _, before, after = smoke
    assert before == after


def test_only_replaces_its_benches_and_keeps_the_rest(tmp_path):
    """`--only mahdpo` (benchmarks.run.merge_partial): the step/memory/peak entries of the
    existing file are replaced, the others and their machine block kept, the run recorded."""
    from benchmarks import run

    out = tmp_path / "results.json"
    with pytest.raises(SystemExit, match="existing"):
        run.merge_partial(out, [], {}, run.ONLY["mahdpo"])
    old = {"machine": {"command": "python -m benchmarks.run", "date": "d0"},
           "results": [{"bench": "mahdpo_step", "seconds": 9.0},
                       {"bench": "guided_decoding", "seconds": 3.0},
                       {"bench": "matmul_peak", "seconds": 1.0}]}
    out.write_text(json.dumps(old))
    new = [{"bench": "matmul_peak", "seconds": 2.0}, {"bench": "mahdpo_step", "seconds": 7.0}]
    machine = {"command": "python -m benchmarks.run --only mahdpo", "date": "d1",
               "run_seconds": 5.0, "cpu": "x", "glibc_tunables": "glibc.malloc.hugetlb=1"}
    results, merged = run.merge_partial(out, new, machine, run.ONLY["mahdpo"])
    assert results == new + [{"bench": "guided_decoding", "seconds": 3.0}]
    assert merged["command"] == "python -m benchmarks.run" and merged["date"] == "d0"
    assert merged["partial_runs"] == [{"command": "python -m benchmarks.run --only mahdpo",
                                       "date": "d1", "run_seconds": 5.0,
                                       "glibc_tunables": "glibc.malloc.hugetlb=1"}]


def test_bf16_dot_measures_every_way_and_dot_f32_matches_a_float32_sum():
    """benchmarks/bf16_dot.py on one small shape (timings only produced, never asserted), and
    `dot_f32` equals the float32 product of the same bfloat16 operands, rounded once."""
    import jax.numpy as jnp
    import numpy as np

    from benchmarks import bf16_dot
    from mtalign_jax.models.layers import dot_f32

    rows = bf16_dot.measure(rows=(8,), reps=1, shapes={"small": (32, 16)})
    assert len(rows) == 1 and all(rows[0][w] > 0 for w in bf16_dot.WAYS)
    assert "| small [32, 16] | 8 |" in bf16_dot.table(rows)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 64)), jnp.bfloat16)
    w = jnp.asarray(np.random.default_rng(1).normal(size=(64, 8)), jnp.bfloat16)
    got = dot_f32(x, w, (((1,), (0,)), ((), ())))
    assert got.dtype == jnp.bfloat16
    want = (np.asarray(x, np.float32) @ np.asarray(w, np.float32)).astype(jnp.bfloat16)
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32),
                               rtol=1e-2)
    x32 = x.astype(jnp.float32)
    assert dot_f32(x32, w.astype(jnp.float32), (((1,), (0,)), ((), ()))).dtype == jnp.float32
