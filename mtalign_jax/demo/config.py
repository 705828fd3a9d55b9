"""Sizes of the demo run: `default()` (the issue's mini scale, trimmed where the 2-core CPU
budget forces it; `TRIMS` says where) and `quick()` (every stage with 1-2 steps, a handful of
prompts)."""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    seed: int = 0
    head_seed: int = 42
    head_init_noise: float = 1e-3
    n_top: int = 2  # top layers that train (shared by both objectives); the rest is frozen
    dtype: str = "float32"  # compute dtype of every stage (--dtype): matmul inputs in it;
    # float32 sums (layers.dot_f32), softmax, norms, log-softmax and trained params regardless
    # data
    arith_operands: int = 2
    arith_max_value: int = 10  # base SmolLM2: ~36% greedy (30-60% wanted; 30 gave 16%)
    train_prompts: int = 96  # per objective (the floor: 128 does not fit the budget)
    samples_per_prompt: int = 4
    sample_temperature: float = 0.7  # the base's own samples (top-k 50)
    max_new_tokens: int = 48
    acc_heldout_prompts: int = 80  # sampled 4x each: held-out accuracy pairs
    heldout_pairs_min: int = 200  # filled with (exact answer, wrong sample) pairs if short
    max_heldout_pairs_per_prompt: int = 4
    eng_heldout_pairs: int = 200  # held-out human engagement pairs
    rm_pairs: int = 128  # training pairs per engagement RM (labeller, guide, judge)
    eval_prompts: int = 48  # generations per objective and method (the floor)
    turn_chars: int = 160  # conversation-prefix turns are cut to this many characters
    # encoding
    max_len: int = 128
    max_prompt_len: int = 80
    sample_batch: int = 64
    encode_batch: int = 16
    # training
    steps: int = 16
    pairs_per_step: int = 8
    lr: float = 2e-5
    beta: float = 0.1
    # guided decoding
    guide_k: int = 4
    guide_temperature: float = 0.7  # guided, plain-sampled and best-of-N (top-k 50); T=1 let
    # the weak mini guides steer into noise (guided engagement 0.21 at T=1, 0.40 at 0.7)
    step_tokens: int = 16
    guide_batch: int = 16  # prompts per guided batch (x guide_k rows)
    head_weights: tuple = ((1.0, 0.0), (0.75, 0.25), (0.5, 0.5), (0.25, 0.75), (0.0, 1.0))
    quick: bool = False


TRIMS = ("training prompts: 96 per objective (the issue's floor; its default is 128)",
         "training steps: 16 steps of 8 pairs per method (the budget; the issue sets no step "
         "count)", "evaluation generations: 48 prompts per objective (the issue's floor)",
         "guided decoding: K=4 candidates per step (the paper uses 5)",
         "sequences for RMs and DPO are cut to 128 tokens (prompt <= 80)")


def default() -> DemoConfig:
    return DemoConfig()


def quick() -> DemoConfig:
    return DemoConfig(train_prompts=4, samples_per_prompt=2, max_new_tokens=8,
                      acc_heldout_prompts=4, heldout_pairs_min=4, eng_heldout_pairs=8,
                      rm_pairs=12, eval_prompts=4,
                      sample_batch=8, encode_batch=8, steps=2, pairs_per_step=2, guide_k=2,
                      step_tokens=4, guide_batch=4, max_len=96, max_prompt_len=64,
                      quick=True)
