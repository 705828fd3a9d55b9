"""grain pipelines: SFT and preference batches with static length buckets.

Both pipelines are `grain.MapDataset` chains over example indices: seeded shuffle (reshuffled
every epoch), repeat (infinite by default, so `total_steps` alone sets a run's length), batch,
then one map that tokenises the batch with the chat template
(`Tokenizer.encode_prompt_response` / `encode_pair`), right-pads it and keeps this process's
rows. The result is a `grain.IterDataset`; its iterator is checkpointable (`get_state()` /
`set_state()`; the state is the next batch index).

Batches are dicts of numpy arrays (docs/ARCHITECTURE.md):
- SFT: `input_ids [b, T] int32`, `labels [b, T] int32` (-100 on prompt and padding),
  `attention_mask [b, T] int32`.
- Preference: the same with `b = 2p` rows, the p chosen rows first then the p rejected rows;
  `head_ids [2p] int32` (the objective's index in `objectives`; pair i's chosen and rejected
  rows share it) and `pair_index [p] int32` (the pair's index within its objective's example
  list, e.g. to look up precomputed reference log-probs).

Length buckets: T is the smallest bucket that holds the longest row of the whole (global)
batch; `max_len` is always a bucket, larger buckets are dropped. Padding is on the right with
`tokenizer.pad_id`.

Sharding over processes: every process walks the same global batches (same seed) and keeps
its contiguous slice (examples or pairs `[shard_index * n / shard_count, ...)`), padded to the
global batch's bucket, so all processes agree on T and the union of the shards is exactly the
single-process batch. The global batch size must divide by `shard_count`.

Batches run over the repeated stream, so a dataset smaller than a batch still works; a batch
at an epoch boundary holds the end of one epoch and the start of the next.

Balanced preference batches (the paper's loader): every objective is cut to the size of the
smallest (its first rows), each objective is shuffled on its own, and each batch holds
`batch_pairs // K` pairs of every objective, interleaved objective by objective (so a
process's slice is balanced too when its pair count divides by K).
"""
from __future__ import annotations

import functools
from typing import Sequence

import grain
import numpy as np

DEFAULT_BUCKETS = (64, 128, 256, 512)
READ_OPTIONS = grain.ReadOptions(num_threads=0)  # in-memory rows: no reader threads needed


def effective_buckets(buckets: Sequence[int], max_len: int) -> tuple[int, ...]:
    """The buckets below max_len, then max_len itself."""
    return tuple(sorted({int(b) for b in buckets if 0 < int(b) < max_len})) + (int(max_len),)


def bucket_for(n: int, buckets: Sequence[int]) -> int:
    """The smallest bucket >= n."""
    for b in buckets:
        if b >= n:
            return b
    raise ValueError(f"sequence of {n} tokens is longer than the largest bucket {buckets[-1]}")


def pad_rows(rows: Sequence[tuple[list, list]], length: int, pad_id: int) -> dict:
    """[(ids, labels)] -> right-padded {input_ids, labels, attention_mask} [len(rows), length]."""
    ids = np.full((len(rows), length), pad_id, np.int32)
    labels = np.full((len(rows), length), -100, np.int32)
    mask = np.zeros((len(rows), length), np.int32)
    for i, (a, lab) in enumerate(rows):
        ids[i, :len(a)], labels[i, :len(lab)], mask[i, :len(a)] = a, lab, 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def _shard(n: int, shard_index: int, shard_count: int, what: str) -> slice:
    if not 0 <= shard_index < shard_count:
        raise ValueError(f"shard_index {shard_index} not in [0, {shard_count})")
    if n % shard_count:
        raise ValueError(f"{what} ({n}) must be divisible by the number of processes "
                         f"({shard_count})")
    k = n // shard_count
    return slice(shard_index * k, (shard_index + 1) * k)


def _seed(seed: int, salt: int = 0) -> int:
    """A 32-bit shuffle seed; salts are spread far apart because grain adds the epoch."""
    return (int(seed) + int(salt) * 1_000_003) % 2**32


# -- SFT ---------------------------------------------------------------------------------------


def _sft_batch(indices, *, examples, tokenizer, max_len, max_prompt_len, buckets, rows):
    enc = [tokenizer.encode_prompt_response(examples[int(i)]["prompt"],
                                            examples[int(i)]["response"],
                                            max_prompt_len=max_prompt_len, max_len=max_len)
           for i in indices]
    length = bucket_for(max(len(a) for a, _ in enc), buckets)
    return pad_rows(enc[rows], length, tokenizer.pad_id)


def sft_dataset(examples: Sequence[dict], tokenizer, *, max_len: int, max_prompt_len: int,
                batch_size: int, buckets: Sequence[int] = DEFAULT_BUCKETS, seed: int = 0,
                shard_index: int = 0, shard_count: int = 1,
                num_epochs: int | None = None) -> grain.IterDataset:
    """Batches of {prompt, response} rows: {input_ids, labels, attention_mask} [b, T].

    batch_size is global; each process gets b = batch_size // shard_count rows. With a finite
    num_epochs the last incomplete batch is dropped.
    """
    if not examples:
        raise ValueError("sft_dataset: no examples")
    rows = _shard(batch_size, shard_index, shard_count, "batch_size")
    ds = (grain.MapDataset.range(len(examples)).shuffle(seed=_seed(seed))
          .repeat(num_epochs).batch(batch_size, drop_remainder=True))
    fn = functools.partial(_sft_batch, examples=list(examples), tokenizer=tokenizer,
                           max_len=max_len, max_prompt_len=max_prompt_len,
                           buckets=effective_buckets(buckets, max_len), rows=rows)
    return ds.map(fn).to_iter_dataset(READ_OPTIONS)


# -- preferences -------------------------------------------------------------------------------


def _preference_batch(items, *, examples, tokenizer, max_len, max_prompt_len, buckets, pairs):
    """items [(objective k, pair index i)] of the global batch -> this process's batch."""
    enc = [tokenizer.encode_pair(ex["prompt"], ex["chosen"], ex["rejected"],
                                 max_prompt_len=max_prompt_len, max_len=max_len)
           for ex in (examples[k][i] for k, i in items)]
    length = bucket_for(max(len(a) for c, r in enc for a, _ in (c, r)), buckets)
    mine, local = enc[pairs], items[pairs]
    batch = pad_rows([c for c, _ in mine] + [r for _, r in mine], length, tokenizer.pad_id)
    heads = np.asarray([k for k, _ in local], np.int32)
    batch["head_ids"] = np.concatenate([heads, heads])
    batch["pair_index"] = np.asarray([i for _, i in local], np.int32)
    return batch


def preference_dataset(examples_by_objective: dict, objectives: Sequence[str], tokenizer, *,
                       max_len: int, max_prompt_len: int, batch_pairs: int,
                       buckets: Sequence[int] = DEFAULT_BUCKETS, seed: int = 0,
                       shard_index: int = 0, shard_count: int = 1, balanced: bool = True,
                       num_epochs: int | None = None) -> grain.IterDataset:
    """Batches of preference pairs (module docstring); batch_pairs is global.

    balanced=True: each batch holds batch_pairs // K pairs of every objective (batch_pairs
    must divide by K); balanced=False: the pooled pairs of all objectives, shuffled together.
    """
    objectives = list(objectives)
    missing = [o for o in objectives if not examples_by_objective.get(o)]
    if missing:
        raise ValueError(f"preference_dataset: no pairs for objective(s) {', '.join(missing)}")
    k = len(objectives)
    examples = [list(examples_by_objective[o]) for o in objectives]
    pairs = _shard(batch_pairs, shard_index, shard_count, "batch_pairs")
    if balanced:
        if batch_pairs % k:
            raise ValueError(f"balanced batches need batch_pairs ({batch_pairs}) divisible by "
                             f"the number of objectives ({k}: {', '.join(objectives)})")
        n = min(len(e) for e in examples)
        per_obj = [grain.MapDataset.range(n).shuffle(seed=_seed(seed, j)).repeat()
                   for j in range(k)]
        # Position q of the stream (over all epochs) is objective q % K's (q // K)-th pair.
        items = grain.MapDataset.range(k * n).repeat(num_epochs).map_with_index(
            lambda q, _: (q % k, int(per_obj[q % k][q // k])))
    else:
        pool = [(j, i) for j, e in enumerate(examples) for i in range(len(e))]
        items = grain.MapDataset.source(pool).shuffle(seed=_seed(seed)).repeat(num_epochs)
    fn = functools.partial(_preference_batch, examples=examples, tokenizer=tokenizer,
                           max_len=max_len, max_prompt_len=max_prompt_len,
                           buckets=effective_buckets(buckets, max_len), pairs=pairs)
    ds = items.batch(batch_pairs, drop_remainder=True, batch_fn=list).map(fn)
    return ds.to_iter_dataset(READ_OPTIONS)


# -- splits ------------------------------------------------------------------------------------


def split_train_eval(examples: Sequence, eval_frac: float = 0.1, seed: int = 42,
                     eval_cap: int = 256, source_cap: int = 200_000) -> tuple[list, list]:
    """(train, eval): deterministic for a seed, original order kept within each split.

    At most `source_cap` examples are used (a seeded random subset when there are more);
    eval gets floor(eval_frac * n) of them, at most `eval_cap`; train gets the rest.
    """
    n_all = len(examples)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n_all)[:min(n_all, int(source_cap))]
    n_eval = min(int(eval_cap), int(eval_frac * len(perm)))
    eval_idx, train_idx = np.sort(perm[:n_eval]), np.sort(perm[n_eval:])
    return [examples[i] for i in train_idx], [examples[i] for i in eval_idx]
