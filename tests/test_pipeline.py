"""grain pipelines: static buckets, label masks, balanced batches, chosen/rejected order,
iterator-state restore, process shards, epochs, train/eval split, synthetic data."""
import numpy as np
import pytest

from mtalign_jax.data import pipeline, synthetic
from mtalign_jax.data.tokenizer import ByteTokenizer
from mtalign_jax.data.validate import load_preference_file

TOK = ByteTokenizer()
OBJ = ["accuracy", "engagement"]
KW = dict(max_len=96, max_prompt_len=48, buckets=(32, 64, 128, 256))


def pref_data(n_acc=10, n_eng=6):
    rows = synthetic.synthetic_preferences(OBJ, max(n_acc, n_eng), seed=3)
    by = {o: [r for r in rows if r["objective"] == o] for o in OBJ}
    by["accuracy"], by["engagement"] = by["accuracy"][:n_acc], by["engagement"][:n_eng]
    return by


def take(ds_or_it, n):
    it = iter(ds_or_it)
    return [next(it) for _ in range(n)]


def unpad(batch, r):
    return list(batch["input_ids"][r][batch["attention_mask"][r] == 1])


def test_effective_buckets():
    assert pipeline.effective_buckets((64, 128, 256, 512), 200) == (64, 128, 200)
    assert pipeline.bucket_for(65, (64, 128, 200)) == 128
    with pytest.raises(ValueError):
        pipeline.bucket_for(201, (64, 128, 200))


def test_sft_batches_static_buckets_and_masks():
    rows = synthetic.synthetic_sft(20, seed=0) + [
        {"prompt": "Explain " + "very " * 12 + "slowly.", "response": "ok " * 15}]
    expect = {tuple(TOK.encode_prompt_response(r["prompt"], r["response"], max_prompt_len=48,
                                               max_len=96)[0]): r for r in rows}
    lengths = set()
    for b in take(pipeline.sft_dataset(rows, TOK, batch_size=4, seed=1, **KW), 15):
        t = b["input_ids"].shape[1]
        lengths.add(t)
        assert b["input_ids"].shape == b["labels"].shape == b["attention_mask"].shape == (4, t)
        assert b["input_ids"].dtype == b["labels"].dtype == np.int32
        pad = b["attention_mask"] == 0
        assert np.all(b["input_ids"][pad] == TOK.pad_id) and np.all(b["labels"][pad] == -100)
        for r in range(4):
            ids = unpad(b, r)
            assert tuple(ids) in expect  # each row is one example, tokenised with the template
            ex = expect[tuple(ids)]
            ref_ids, ref_labels = TOK.encode_prompt_response(ex["prompt"], ex["response"],
                                                             max_prompt_len=48, max_len=96)
            assert list(b["labels"][r][: len(ref_labels)]) == ref_labels
            assert int(b["attention_mask"][r].sum()) == len(ref_ids)
    assert lengths <= {32, 64, 96} and len(lengths) >= 2  # the long example needs 96


def test_balanced_preference_batches():
    by = pref_data(10, 6)
    p = 4
    batches = take(pipeline.preference_dataset(by, OBJ, TOK, batch_pairs=p, seed=0, **KW), 6)
    seen = {0: [], 1: []}
    for b in batches:
        t = b["input_ids"].shape[1]
        assert b["input_ids"].shape == (2 * p, t) and t in (32, 64, 96)
        heads, pidx = b["head_ids"], b["pair_index"]
        assert heads.shape == (2 * p,) and pidx.shape == (p,)
        assert np.array_equal(heads[:p], heads[p:])  # chosen and rejected of a pair share it
        assert np.bincount(heads[:p], minlength=2).tolist() == [2, 2]  # batch_pairs // K each
        for i in range(p):
            k, j = int(heads[i]), int(pidx[i])
            ex = by[OBJ[k]][j]
            (c, cl), (r, rl) = TOK.encode_pair(ex["prompt"], ex["chosen"], ex["rejected"],
                                               max_prompt_len=48, max_len=96)
            assert unpad(b, i) == c and unpad(b, p + i) == r  # chosen rows first
            assert list(b["labels"][p + i][: len(rl)]) == rl
            seen[k].append(j)
    # Every objective cut to the smallest (6 pairs); one epoch = 3 batches holds each pair once.
    for k in (0, 1):
        assert sorted(seen[k][:6]) == list(range(6)) and sorted(seen[k][6:]) == list(range(6))
    assert seen[0][:6] != seen[0][6:]  # reshuffled every epoch
    with pytest.raises(ValueError, match="divisible by the number of objectives"):
        pipeline.preference_dataset(by, OBJ, TOK, batch_pairs=3, seed=0, **KW)


def test_unbalanced_pool_covers_every_pair_once_per_epoch():
    by = pref_data(10, 6)
    ds = pipeline.preference_dataset(by, OBJ, TOK, batch_pairs=4, seed=0, balanced=False, **KW)
    items = [(int(k), int(i)) for b in take(ds, 4)
             for k, i in zip(b["head_ids"][:4], b["pair_index"])]
    assert sorted(items) == [(0, i) for i in range(10)] + [(1, i) for i in range(6)]


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), k


@pytest.mark.parametrize("kind", ["sft", "preference"])
def test_iterator_state_restore_continues_identically(kind):
    def make():
        if kind == "sft":
            return pipeline.sft_dataset(synthetic.synthetic_sft(9, 0), TOK, batch_size=4,
                                        seed=5, **KW)
        return pipeline.preference_dataset(pref_data(), OBJ, TOK, batch_pairs=4, seed=5, **KW)

    it = iter(make())
    take(it, 3)
    state = it.get_state()
    expected = take(it, 5)
    fresh = iter(make())
    fresh.set_state(state)
    for a, b in zip(expected, take(fresh, 5)):
        assert_same(a, b)
    assert not np.array_equal(expected[0]["input_ids"][:2], expected[1]["input_ids"][:2])


def test_two_shards_are_disjoint_and_cover_the_batch():
    by = pref_data(12, 12)  # 3 batches of 4 pairs per objective in an epoch
    full = take(pipeline.preference_dataset(by, OBJ, TOK, batch_pairs=8, seed=2, **KW), 5)
    shards = [take(pipeline.preference_dataset(by, OBJ, TOK, batch_pairs=8, seed=2,
                                               shard_index=s, shard_count=2, **KW), 5)
              for s in (0, 1)]
    for g, a, b in zip(full, *shards):
        assert a["input_ids"].shape == b["input_ids"].shape == (8, g["input_ids"].shape[1])
        pa = set(zip(a["head_ids"][:4].tolist(), a["pair_index"].tolist()))
        pb = set(zip(b["head_ids"][:4].tolist(), b["pair_index"].tolist()))
        pg = set(zip(g["head_ids"][:8].tolist(), g["pair_index"].tolist()))
        assert len(pa) == len(pb) == 4 and not pa & pb and pa | pb == pg
        for s in (a, b):  # each shard is balanced (4 pairs, K=2) and chosen-first
            assert np.bincount(s["head_ids"][:4], minlength=2).tolist() == [2, 2]
        # Chosen rows of shard 0 then shard 1 are the global chosen rows, in order.
        assert np.array_equal(np.concatenate([a["input_ids"][:4], b["input_ids"][:4]]),
                              g["input_ids"][:8])
        assert np.array_equal(np.concatenate([a["input_ids"][4:], b["input_ids"][4:]]),
                              g["input_ids"][8:])
    epoch = [(int(k), int(i)) for g in full[:3] for k, i in zip(g["head_ids"][:8],
                                                                   g["pair_index"])]
    assert sorted(epoch) == [(k, i) for k in (0, 1) for i in range(12)]
    rows = synthetic.synthetic_sft(12, 0)
    sft = [take(pipeline.sft_dataset(rows, TOK, batch_size=4, seed=1, shard_index=s,
                                     shard_count=2, num_epochs=1, **KW), 3) for s in (0, 1)]
    texts = [TOK.decode(unpad(b, r)) for shard in sft for b in shard for r in range(2)]
    assert len(texts) == 12 and len(set(texts)) == 12  # disjoint, and together every example
    with pytest.raises(ValueError, match="divisible by the number of processes"):
        pipeline.sft_dataset(rows, TOK, batch_size=5, shard_index=0, shard_count=2, **KW)


def test_finite_epochs_stop_and_repeat_each_example():
    rows = synthetic.synthetic_sft(10, 0)
    batches = list(pipeline.sft_dataset(rows, TOK, batch_size=4, seed=0, num_epochs=2, **KW))
    assert len(batches) == 5
    texts = [TOK.decode(unpad(b, r)) for b in batches for r in range(4)]
    counts = {t: texts.count(t) for t in texts}
    assert len(counts) == 10 and set(counts.values()) == {2}


def test_split_train_eval():
    rows = [{"i": i} for i in range(100)]
    train, ev = pipeline.split_train_eval(rows, eval_frac=0.1, seed=42)
    assert (len(train), len(ev)) == (90, 10)
    assert sorted(r["i"] for r in train + ev) == list(range(100))
    assert (train, ev) == pipeline.split_train_eval(rows, eval_frac=0.1, seed=42)
    assert ev != pipeline.split_train_eval(rows, eval_frac=0.1, seed=0)[1]
    assert [r["i"] for r in ev] == sorted(r["i"] for r in ev)
    assert len(pipeline.split_train_eval(rows, eval_frac=0.5, eval_cap=7)[1]) == 7
    train, ev = pipeline.split_train_eval(rows, eval_frac=0.1, source_cap=40)
    assert (len(train), len(ev)) == (36, 4)


def test_synthetic_rules(tmp_path):
    rows = synthetic.synthetic_preferences(OBJ, 8, seed=1)
    for r in rows:
        a, b = (int(x) for x in r["prompt"][len("What is "):-1].split("+"))
        assert r["synthetic"] is True
        if r["objective"] == "accuracy":
            assert r["chosen"] == f"{a}+{b}={a + b}." and r["rejected"] != r["chosen"]
            assert r["rejected"].startswith(f"{a}+{b}=")
        else:
            assert r["chosen"].startswith(f"{a}+{b}={a + b}. ") and r["chosen"].endswith("!")
            assert r["rejected"] == f"{a}+{b}={a + b}."
    conflict = synthetic.synthetic_preferences(OBJ, 8, seed=1, conflict=True)
    acc, eng = conflict[:8], conflict[8:]
    for x, y in zip(acc, eng):
        assert x["prompt"] == y["prompt"]
        assert (x["chosen"], x["rejected"]) == (y["rejected"], y["chosen"])
    for r in synthetic.synthetic_sft(3, seed=0):
        a, b = (int(x) for x in r["prompt"][len("What is "):-1].split("+"))
        assert r["response"] == f"{a}+{b}={a + b}." and r["synthetic"] is True
    path = synthetic.write_jsonl(rows[:8], str(tmp_path / "d" / "acc.jsonl"))
    loaded = load_preference_file(path, "accuracy")
    assert loaded == rows[:8]
    assert synthetic.synthetic_sft(5, 7) == synthetic.synthetic_sft(5, 7)  # seeded
    assert synthetic.synthetic_sft(5, 7) != synthetic.synthetic_sft(5, 8)
