"""The PyTorch baseline: one eager MAH-DPO step the way the official code does it.

Written here for the benchmark (no code is taken from the official repository); it reproduces the
official step's *work*, which is what the comparison is about:

- the policy is a Llama trunk (`transformers.LlamaModel`) plus K separate `nn.Linear(D, V)`
  heads, and **every head is applied to every example**: logits [K, B, T, V];
- log-probs are taken over the whole sequence (`logits[:, :-1]` scores `labels[:, 1:]`, -100
  masked) for every head, then each example keeps its own objective's head;
- chosen and rejected are **two separate forwards**;
- a frozen float32 reference (same trunk, one unperturbed head) runs **live every step**, again
  chosen and rejected separately, under `torch.no_grad()`;
- DPO loss per pair, mean within each objective, mean over the objectives present;
- `clip_grad_norm_(10)` then `torch.optim.RMSprop(lr=1e-6, alpha=0.99, eps=1e-8)`.

Both models are built from OUR parameter trees (HF weight = our kernel.T, via
`mtalign_jax.hf.mappings.trunk_to_hf`), so the baseline and our step see identical weights and
data and their first-step losses agree to float32 rounding.

    policy = TorchMultiHeadLM.from_ours(cfg, params)          # K heads
    reference = TorchMultiHeadLM.from_ours(cfg, ref_params)   # 1 head
    opt = make_optimizer(policy)
    loss = official_step(policy, reference, opt, batch, beta=0.1)

`batch` is the numpy preference batch of `benchmarks.mahdpo_step.make_batch` (chosen rows first,
then rejected rows; `objective_ids` [2P]).
"""
from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mtalign_jax.hf.mappings import trunk_to_hf
from mtalign_jax.models.presets import ModelConfig


def use_all_cores() -> int:
    """torch intra-op threads = every core this process may run on (os.cpu_count() unless
    restricted with taskset); JAX's CPU backend uses them all too."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    torch.set_num_threads(n)
    return n


def llama_config(cfg: ModelConfig):
    """A `transformers.LlamaConfig` with the preset's shape (Llama arch, no qkv bias)."""
    from transformers import LlamaConfig

    if cfg.arch != "llama" or cfg.qkv_bias:
        raise ValueError(f"torch baseline: preset {cfg.name!r} is not a plain Llama shape")
    return LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.d_ff,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_kv_heads, head_dim=cfg.head_dim, rms_norm_eps=cfg.rms_eps,
        rope_theta=cfg.rope_theta, max_position_embeddings=cfg.max_seq_len,
        tie_word_embeddings=False, attention_bias=False, mlp_bias=False,
        hidden_act="silu", torch_dtype="float32")


class TorchMultiHeadLM(nn.Module):
    """Llama trunk + K linear heads. forward(ids [B,T], mask [B,T]) -> logits [K, B, T, V]."""

    def __init__(self, cfg: ModelConfig, num_heads: int):
        super().__init__()
        from transformers import LlamaModel

        self.trunk = LlamaModel(llama_config(cfg))
        self.heads = nn.ModuleList(
            [nn.Linear(cfg.d_model, cfg.vocab_size, bias=False) for _ in range(num_heads)])

    @classmethod
    def from_ours(cls, cfg: ModelConfig, params) -> "TorchMultiHeadLM":
        """Copy our parameter tree (`{"trunk": ..., "heads": {"kernel": [K, D, V]}}`) in.

        The trunk state dict is loaded strictly: a missing or unexpected key is an error.
        """
        kernel = np.asarray(params["heads"]["kernel"], np.float32)  # [K, D, V]
        model = cls(cfg, kernel.shape[0])
        hf = trunk_to_hf(cfg, params["trunk"])
        state = {k[len("model."):]: torch.from_numpy(np.array(v, np.float32))
                 for k, v in hf.items()}
        model.trunk.load_state_dict(state, strict=True)
        with torch.no_grad():
            for k, head in enumerate(model.heads):
                head.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel[k].T)))
        return model.float()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.trunk(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return torch.stack([head(h) for head in self.heads])  # [K, B, T, V]


def batch_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed log-probs [B] of labels [B, T] under logits [B, T, V] (causal shift, -100 ignored)."""
    logits = logits[:, :-1, :]
    labels = labels[:, 1:]
    mask = labels != -100
    safe = torch.where(mask, labels, torch.zeros_like(labels))
    tok = torch.gather(logits.log_softmax(-1), 2, safe.unsqueeze(2)).squeeze(2)
    return (tok * mask).sum(-1)


def dpo_losses(pc, pr, rc, rr, beta: float) -> torch.Tensor:
    """Sigmoid DPO loss per pair [P] from summed log-probs [P]."""
    return -F.logsigmoid(beta * ((pc - pr) - (rc - rr)))


def per_objective_mean(losses: torch.Tensor, objective: torch.Tensor) -> torch.Tensor:
    """Mean within each objective present, then mean over those objectives (a scalar)."""
    means = [losses[objective == k].mean() for k in torch.unique(objective).tolist()]
    return torch.stack(means).mean()


def to_torch(batch: dict) -> dict:
    """Split our [2P, T] preference batch into the official layout (chosen / rejected)."""
    ids = torch.from_numpy(np.asarray(batch["input_ids"], np.int64))
    labels = torch.from_numpy(np.asarray(batch["labels"], np.int64))
    mask = torch.from_numpy(np.asarray(batch["attention_mask"], np.int64))
    obj = torch.from_numpy(np.asarray(batch["objective_ids"], np.int64))
    p = ids.shape[0] // 2
    return {"chosen_ids": ids[:p], "rejected_ids": ids[p:], "chosen_labels": labels[:p],
            "rejected_labels": labels[p:], "chosen_mask": mask[:p], "rejected_mask": mask[p:],
            "objective": obj[:p]}


def make_optimizer(policy: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.RMSprop(policy.parameters(), lr=1e-6, alpha=0.99, eps=1e-8)


def policy_logps(policy: nn.Module, ids, mask, labels, objective) -> torch.Tensor:
    """All K heads on every example, then each example's own head: [B]."""
    logits = policy(ids, mask)  # [K, B, T, V]
    per_head = torch.stack([batch_logps(logits[k], labels) for k in range(logits.shape[0])])
    return per_head.gather(0, objective.unsqueeze(0)).squeeze(0)


def official_step(policy, reference, opt, tb: dict, *, beta: float, max_grad_norm=10.0) -> float:
    """One optimizer step; returns the loss (before the update) as a Python float."""
    obj = tb["objective"]
    pc = policy_logps(policy, tb["chosen_ids"], tb["chosen_mask"], tb["chosen_labels"], obj)
    pr = policy_logps(policy, tb["rejected_ids"], tb["rejected_mask"], tb["rejected_labels"], obj)
    with torch.no_grad():
        rc = batch_logps(reference(tb["chosen_ids"], tb["chosen_mask"])[0], tb["chosen_labels"])
        rr = batch_logps(reference(tb["rejected_ids"], tb["rejected_mask"])[0],
                         tb["rejected_labels"])
    loss = per_objective_mean(dpo_losses(pc, pr, rc, rr, beta), obj)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(policy.parameters(), max_grad_norm)
    opt.step()
    return float(loss.detach())
