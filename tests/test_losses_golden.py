"""MAH-DPO losses against golden values from the official PyTorch code (../shared/golden).

The golden file holds float64 values; x64 is switched on for this module's tests only (the
`x64` fixture restores the previous setting). Each example's log-probs come from its own
head's logits; the gradient is that of total_loss w.r.t. ALL heads' policy chosen logits
[K, B, T, V] (other heads' entries must be exactly 0).
"""
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtalign_jax.losses import multihead_reduce, preference_loss, sequence_logps

GOLDEN = Path(__file__).resolve().parents[1].parent / "shared" / "golden" / "mah_dpo_loss.json"
TOL = dict(rtol=0, atol=1e-6)


def _cases():
    assert GOLDEN.is_file(), f"golden file missing: {GOLDEN}"
    data = json.loads(GOLDEN.read_text())
    assert "causal-LM convention" in data["about"] and len(data["cases"]) == 2
    return data["cases"]


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def _loss_kwargs(cfg: dict) -> dict:
    assert cfg["name"] in ("dpo", "ipo"), cfg
    return dict(beta=cfg["beta"], label_smoothing=cfg.get("label_smoothing", 0.0),
                ipo=cfg["name"] == "ipo", reference_free=cfg.get("reference_free", False))


def _run(case):
    inp = {k: jnp.asarray(np.asarray(v)) for k, v in case["inputs"].items()}
    assert inp["policy_chosen_logits"].dtype == jnp.float64
    k = case["num_heads"]
    heads = jnp.asarray(case["head_of_example"], jnp.int32)
    avg = case["average_log_prob"]
    kw = _loss_kwargs(case["loss"])
    rows = jnp.arange(heads.shape[0])

    def total(pc_logits):
        pc = sequence_logps(pc_logits[heads, rows], inp["chosen_labels"], average=avg)
        pr = sequence_logps(inp["policy_rejected_logits"][heads, rows], inp["rejected_labels"],
                            average=avg)
        rc = sequence_logps(inp["reference_chosen_logits"], inp["chosen_labels"], average=avg)
        rr = sequence_logps(inp["reference_rejected_logits"], inp["rejected_labels"], average=avg)
        losses, cr, rj = preference_loss(pc, pr, rc, rr, **kw)
        tot, per_head, count = multihead_reduce(losses, heads, k)
        return tot, dict(policy_chosen_logps=pc, policy_rejected_logps=pr,
                         reference_chosen_logps=rc, reference_rejected_logps=rr, losses=losses,
                         chosen_rewards=cr, rejected_rewards=rj, per_head=per_head, count=count)

    (tot, out), grad = jax.jit(jax.value_and_grad(total, has_aux=True))(
        inp["policy_chosen_logits"])
    return tot, out, grad


@pytest.mark.parametrize("idx", [0, 1])
def test_golden_case(x64, idx):
    case = _cases()[idx]
    exp = case["expected"]
    tot, out, grad = _run(case)
    assert tot.dtype == jnp.float64 and grad.dtype == jnp.float64
    for key in ("policy_chosen_logps", "policy_rejected_logps", "reference_chosen_logps",
                "reference_rejected_logps", "losses", "chosen_rewards", "rejected_rewards"):
        np.testing.assert_allclose(out[key], exp[key], **TOL, err_msg=key)
    np.testing.assert_allclose(tot, exp["total_loss"], **TOL)

    k = case["num_heads"]
    present = {int(h) for h in exp["per_head_loss"]}
    assert present == set(case["head_of_example"])
    for h in range(k):
        n = case["head_of_example"].count(h)
        assert int(out["count"][h]) == n
        if h in present:
            np.testing.assert_allclose(out["per_head"][h], exp["per_head_loss"][str(h)], **TOL)
        else:
            assert n == 0 and float(out["per_head"][h]) == 0.0

    g_exp = np.asarray(exp["grad_policy_chosen_logits"])
    assert grad.shape == g_exp.shape
    np.testing.assert_allclose(grad, g_exp, **TOL)
    np.testing.assert_allclose(jnp.sum(jnp.abs(grad), axis=(1, 2, 3)),
                               exp["grad_policy_chosen_logits_abs_sum_per_head"], **TOL)
    # Each example only reads its own head's logits: every other head's entries are exactly 0.
    g = np.asarray(grad)
    for b, h in enumerate(case["head_of_example"]):
        others = [j for j in range(k) if j != h]
        assert np.all(g[others, b] == 0.0)
        assert np.any(g[h, b] != 0.0)


def test_x64_restored_after_golden():
    """The golden fixture must not leak x64 into other tests."""
    assert jnp.ones(1).dtype == jnp.float32
