"""Hand-computed checks of the loss functions (float32, tiny shapes)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtalign_jax.losses import (bradley_terry_loss, case_a_majority_labels, classifier_loss,
                                hindsight_value_targets, modpo_loss, multihead_reduce,
                                positive_score, preference_loss, sequence_logps,
                                sequence_logps_from_hidden, sft_loss, step_bce_loss, token_logps,
                                value_mse_loss)

PC = jnp.array([-3.0, -5.0, -2.0])
PR = jnp.array([-4.0, -4.5, -6.0])
RC = jnp.array([-3.5, -5.0, -2.5])
RR = jnp.array([-3.8, -4.0, -5.0])


def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


# ----------------------------------------------------------------------------- log-probs

def test_sequence_logps_causal_shift_by_hand():
    logits = jnp.array([[[0.0, 1.0, 2.0], [2.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])  # [1, 3, 3]
    labels = jnp.array([[1, 0, -100]])
    # labels[0,1]=0 scored by logits[0,0]; labels[0,2] ignored; labels[0,0] never scored.
    expected = 0.0 - math.log(1 + math.e + math.e ** 2)
    np.testing.assert_allclose(sequence_logps(logits, labels), [expected], rtol=1e-6)
    labels2 = jnp.array([[1, 0, 1]])
    e2 = expected + (0.0 - math.log(math.e ** 2 + 2))
    np.testing.assert_allclose(sequence_logps(logits, labels2), [e2], rtol=1e-6)
    np.testing.assert_allclose(sequence_logps(logits, labels2, average=True), [e2 / 2], rtol=1e-6)
    tok, mask = token_logps(logits, labels)
    assert tok.shape == (1, 2) and mask.tolist() == [[True, False]]


def test_logps_precision_not_downcast():
    logits = jnp.zeros((1, 3, 5), jnp.bfloat16)
    out = sequence_logps(logits, jnp.array([[0, 1, 2]]))
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, [-2 * math.log(5)], rtol=1e-6)


def test_sft_loss_sum_and_token_mean():
    logits = jnp.zeros((2, 3, 4))
    labels = jnp.array([[-100, 1, 2], [-100, -100, 3]])
    l4 = math.log(4)
    np.testing.assert_allclose(sft_loss(logits, labels), (2 * l4 + l4) / 2, rtol=1e-6)
    np.testing.assert_allclose(sft_loss(logits, labels, token_mean=True), l4, rtol=1e-6)


def test_chunked_vocab_equals_plain():
    vocab, chunk = 37, 8  # 5 chunks, the last one padded
    rng = np.random.default_rng(0)  # numpy data: no eager jax.random compiles
    h = jnp.asarray(rng.normal(size=(3, 6, 8)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(8, vocab)), jnp.float32)
    labels = rng.integers(0, vocab, (3, 6))
    labels[:, :2] = -100
    labels = jnp.asarray(labels)
    scale = jnp.array([1.0, 2.0, 3.0])

    @jax.jit
    def both(w):
        plain = lambda w: jnp.sum(sequence_logps(h @ w, labels) * scale)  # noqa: E731
        chunked = lambda w: jnp.sum(  # noqa: E731
            sequence_logps_from_hidden(h, w, labels, chunk=chunk) * scale)
        return (sequence_logps(h @ w, labels),
                sequence_logps_from_hidden(h, w, labels, chunk=chunk),
                jax.grad(plain)(w), jax.grad(chunked)(w))

    lp_plain, lp_chunk, g_plain, g_chunk = both(w)
    np.testing.assert_allclose(lp_chunk, lp_plain, rtol=1e-5, atol=1e-5)
    # gradients agree too (the chunk loop is rematerialised in the backward pass)
    np.testing.assert_allclose(g_chunk, g_plain, rtol=1e-5, atol=1e-5)


def test_chunked_vocab_multi_head():
    rng = np.random.default_rng(1)
    h = jnp.asarray(rng.normal(size=(4, 5, 8)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 8, 21)), jnp.float32)
    heads = jnp.array([2, 0, 1, 2])
    labels = rng.integers(0, 21, (4, 5))
    labels[1, 3] = -100
    labels = jnp.asarray(labels)

    @jax.jit
    def both(h, w):
        plain = sequence_logps(jnp.einsum("btd,bdv->btv", h, w[heads]), labels, average=True)
        return plain, sequence_logps_from_hidden(h, w, labels, head_ids=heads, chunk=5,
                                                 average=True)

    plain, chunked = both(h, w)
    np.testing.assert_allclose(chunked, plain, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="head_ids"):
        sequence_logps_from_hidden(h, w, labels, chunk=5)


# ----------------------------------------------------------------------------- DPO family

def test_dpo_equals_log2_when_policy_is_reference():
    losses, cr, rr = preference_loss(PC, PR, PC, PR, beta=0.1)
    np.testing.assert_allclose(losses, [math.log(2)] * 3, rtol=1e-6)
    np.testing.assert_allclose(cr, 0.0, atol=0)
    np.testing.assert_allclose(rr, 0.0, atol=0)


def test_dpo_ipo_label_smoothing_by_hand():
    beta = 0.5
    d = [(-3 + 4) - (-3.5 + 3.8), (-5 + 4.5) - (-5 + 4), (-2 + 6) - (-2.5 + 5)]  # 0.7, 0.5, 1.5
    losses, cr, rr = preference_loss(PC, PR, RC, RR, beta=beta)
    np.testing.assert_allclose(losses, [-math.log(_sigmoid(beta * x)) for x in d], rtol=1e-6)
    np.testing.assert_allclose(cr, [beta * 0.5, 0.0, beta * 0.5], rtol=1e-6)
    np.testing.assert_allclose(rr, [beta * -0.2, beta * -0.5, beta * -1.0], rtol=1e-6)

    ls = 0.2
    losses, _, _ = preference_loss(PC, PR, RC, RR, beta=beta, label_smoothing=ls)
    want = [-(1 - ls) * math.log(_sigmoid(beta * x)) - ls * math.log(_sigmoid(-beta * x))
            for x in d]
    np.testing.assert_allclose(losses, want, rtol=1e-6)

    losses, _, _ = preference_loss(PC, PR, RC, RR, beta=beta, ipo=True)
    np.testing.assert_allclose(losses, [(x - 1 / (2 * beta)) ** 2 for x in d], rtol=1e-5, atol=1e-6)


def test_reference_free_drops_reference_only_from_margin():
    beta = 0.1
    losses, cr, rr = preference_loss(PC, PR, RC, RR, beta=beta, reference_free=True)
    d = [1.0, -0.5, 4.0]  # policy margins only
    np.testing.assert_allclose(losses, [-math.log(_sigmoid(beta * x)) for x in d], rtol=1e-6)
    np.testing.assert_allclose(cr, beta * (PC - RC), rtol=1e-6)
    np.testing.assert_allclose(rr, beta * (PR - RR), rtol=1e-6)


def test_bad_hyperparameters_raise():
    with pytest.raises(ValueError, match="label_smoothing"):
        preference_loss(PC, PR, RC, RR, beta=0.1, label_smoothing=0.7)
    with pytest.raises(ValueError, match="beta"):
        preference_loss(PC, PR, RC, RR, beta=0.0)


def test_multihead_reduce_absent_objective():
    losses = jnp.array([1.0, 3.0, 5.0, 10.0])
    heads = jnp.array([0, 0, 2, 2])
    total, per, count = jax.jit(multihead_reduce, static_argnums=2)(losses, heads, 3)
    np.testing.assert_allclose(per, [2.0, 0.0, 7.5])
    assert count.tolist() == [2, 0, 2]
    np.testing.assert_allclose(total, (2.0 + 7.5) / 2)


def test_multihead_reduce_head_weights_renormalised_over_present():
    losses = jnp.array([1.0, 3.0, 5.0, 10.0])
    heads = jnp.array([0, 0, 2, 2])
    w = jnp.array([0.2, 0.5, 0.3])  # head 1 absent: weights renormalise to 0.4, 0.6
    total, per, count = multihead_reduce(losses, heads, 3, w)
    np.testing.assert_allclose(total, 0.4 * 2.0 + 0.6 * 7.5, rtol=1e-6)
    with pytest.raises(ValueError, match="head_weights"):
        multihead_reduce(losses, heads, 3, jnp.ones(2))
    with pytest.raises(ValueError, match="head_ids"):
        multihead_reduce(losses, jnp.array([0, 0, 3, 3]), 3)


def test_multihead_reduce_gradient():
    losses = jnp.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    heads = jnp.array([0, 0, 0, 2, 2, 3])  # 3 present of 4: counts 3, 0, 2, 1
    g = jax.grad(lambda x: multihead_reduce(x, heads, 4)[0])(losses)
    np.testing.assert_allclose(g, [1 / 9, 1 / 9, 1 / 9, 1 / 6, 1 / 6, 1 / 3], rtol=1e-6)


def test_modpo_zero_other_weights_is_dpo():
    margins = jnp.array([[0.3, -1.0], [2.0, 0.5], [-0.4, 0.1]])
    dpo, cr, rr = preference_loss(PC, PR, RC, RR, beta=0.3)
    mo, mcr, mrr = modpo_loss(PC, PR, RC, RR, margins, beta=0.3, weight=1.0,
                              other_weights=jnp.zeros(2))
    np.testing.assert_allclose(mo, dpo, rtol=1e-6)
    np.testing.assert_allclose(mcr, cr)
    np.testing.assert_allclose(mrr, rr)
    # non-zero weights, by hand for example 0: d = 0.7
    mo, _, _ = modpo_loss(PC, PR, RC, RR, margins, beta=0.3, weight=0.5,
                          other_weights=jnp.array([0.3, 0.2]))
    x = (0.3 / 0.5) * 0.7 - (0.3 * 0.3 + 0.2 * -1.0) / 0.5
    np.testing.assert_allclose(mo[0], -math.log(_sigmoid(x)), rtol=1e-6)


# ----------------------------------------------------------------------------- reward models

def test_bradley_terry_by_hand():
    rc, rj = jnp.array([1.0, -0.5]), jnp.array([0.0, 0.5])
    losses, acc = bradley_terry_loss(rc, rj)
    np.testing.assert_allclose(losses, [-math.log(_sigmoid(1.0)), -math.log(_sigmoid(-1.0))],
                               rtol=1e-6)
    assert acc.tolist() == [1.0, 0.0]
    losses, _ = bradley_terry_loss(rc, rj, margin=jnp.array([0.5, 0.0]), center_coef=0.1)
    np.testing.assert_allclose(losses, [-math.log(_sigmoid(0.5)) + 0.1 * 1.0,
                                        -math.log(_sigmoid(-1.0)) + 0.0], rtol=1e-6)


def test_classifier_loss_and_score():
    logits = jnp.array([[0.0, 2.0], [1.0, -1.0]])
    losses, acc = classifier_loss(logits, jnp.array([1, 1]))
    np.testing.assert_allclose(losses, [math.log(1 + math.exp(-2)), math.log(1 + math.exp(2))],
                               rtol=1e-6)
    assert acc.tolist() == [1.0, 0.0]
    np.testing.assert_allclose(positive_score(logits), [_sigmoid(2.0), _sigmoid(-2.0)], rtol=1e-6)


# ----------------------------------------------------------------------------- PRMs

def test_step_bce_soft_labels_and_mask():
    logits = jnp.array([[0.0, 2.0, 9.0], [-1.0, 0.0, 0.0]])
    labels = jnp.array([[1.0, 0.25, 0.0], [0.0, 0.0, 0.0]])
    mask = jnp.array([[1, 1, 0], [1, 0, 0]])
    loss, probs = step_bce_loss(logits, labels, mask)
    s2, sm1 = _sigmoid(2.0), _sigmoid(-1.0)
    want = (math.log(2) - (0.25 * math.log(s2) + 0.75 * math.log(1 - s2)) - math.log(1 - sm1)) / 3
    np.testing.assert_allclose(loss, want, rtol=1e-6)
    np.testing.assert_allclose(probs[0, 1], s2, rtol=1e-6)


def test_value_mse_by_hand():
    pred = jnp.array([[1.0, 2.0], [0.0, 5.0]])
    target = jnp.array([[0.0, 2.5], [1.0, -7.0]])
    mask = jnp.array([[1, 1], [1, 0]])
    np.testing.assert_allclose(value_mse_loss(pred, target, mask), (1 + 0.25 + 1) / 3, rtol=1e-6)


def test_hindsight_value_targets_by_hand():
    r = jnp.array([0.5, 0.2, 0.9])                       # n = 3 steps
    z = jnp.array([[1, 0, 1, 1], [0, 0, 1, 0], [1, 1, 1, 1]])  # [n, M=4]
    v = hindsight_value_targets(r, z, gamma=0.9)
    np.testing.assert_allclose(v, [0.5 + 0.81 * 0.75, 0.2 + 0.9 * 0.25, 0.9 + 1.0], rtol=1e-6)
    # shared outcomes [M] and right-padded batch rows with a step mask
    v2 = hindsight_value_targets(jnp.array([[0.0, 0.0, 0.0], [1.0, 1.0, 7.0]]),
                                 jnp.array([[1, 1], [1, 0]]), gamma=0.5,
                                 step_mask=jnp.array([[1, 1, 1], [1, 1, 0]]))
    np.testing.assert_allclose(v2, [[0.25, 0.5, 1.0], [1 + 0.25, 1 + 0.5, 0.0]], rtol=1e-6)


def test_case_a_majority():
    j = jnp.array([[1, 1, 0], [1, 0, 0], [1, 1, 0], [1, 0, 1]], bool)
    assert case_a_majority_labels(j).tolist() == [1, 0, 1, 1]
    tie = jnp.array([[1, 0], [1, 1]], bool)
    assert case_a_majority_labels(tie).tolist() == [0, 1]
