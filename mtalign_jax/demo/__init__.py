"""The main job: `python -m mtalign_jax.demo [--quick] [--workdir demo_out]` (`make demo`).

The whole method at mini scale on the real SmolLM2-135M-Instruct, in cached stages
(`stages.py`): data (arithmetic accuracy prompts, chitchat engagement prefixes, disjoint
splits) -> three engagement RMs (labeller, guide, judge) on disjoint chitchat parts -> the base
model's own samples -> pairs (make_pairs: graded exactly / scored by the labeller) + an
accuracy RM -> lower-trunk activations and reference log-probs, once -> MAH-DPO and the DPO
baselines on the top layers -> held-out implicit-reward accuracy and judged generations
(head-weight sweep, guided decoding) -> results.md / results.json / tradeoff.png (`report.py`).

Files: `config.py` (sizes), `sampler.py` (split-trunk sampling with features; guided decoding
with a continuing cache), `rewards.py` (RM heads on frozen features), `dpo.py` (training on
cached activations), `stages.py`, `report.py`, `__main__.py` (the stage runner).
"""
