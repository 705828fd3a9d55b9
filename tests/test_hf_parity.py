"""Loader parity with transformers (float32, tolerance 1e-4; DESIGN.md section 7).

Tiny random Llama / Qwen2 / sequence-classification checkpoints are written by transformers'
`save_pretrained` (safetensors) into tmp dirs; the Qwen2.5-Math-PRM head and the official
multi-head layout are written tensor by tensor. The heavy test compares the real SmolLM2 GGUF
as read by us and by transformers.
"""
import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from mtalign_jax.hf import safetensors as st
from mtalign_jax.models.model import CausalLM

TOL = 1e-4
SMALL = dict(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 64}


def _randomize(model, seed):
    """Weights big enough that a wrong mapping moves the logits far beyond 1e-4."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            p.copy_(1.0 + 0.1 * noise if name.endswith("norm.weight") else 0.1 * noise)
    return model.eval()


def _hf_model(cls_name, cfg_kw, seed=0, **model_kw):
    import transformers

    arch = cls_name.split("For")[0]
    config = getattr(transformers, f"{arch}Config")(**SMALL, **cfg_kw)
    model = getattr(transformers, cls_name)(config, **model_kw)
    model.config._attn_implementation = "eager"
    return _randomize(model, seed)


def _ids(b=2, t=12, seed=1, low=1):
    return np.random.default_rng(seed).integers(low, SMALL["vocab_size"], (b, t)).astype(np.int32)


def _torch(x):
    import torch

    return torch.tensor(np.asarray(x), dtype=torch.long)


@pytest.mark.parametrize("cls_name,cfg_kw", [
    ("LlamaForCausalLM", {"tie_word_embeddings": False, "rope_theta": 5000.0}),
    ("LlamaForCausalLM", {"tie_word_embeddings": True}),
    ("LlamaForCausalLM", {"tie_word_embeddings": False, "rope_scaling": LLAMA3}),
    ("Qwen2ForCausalLM", {"tie_word_embeddings": False, "rms_norm_eps": 1e-6}),
    ("Qwen2ForCausalLM", {"tie_word_embeddings": True, "rope_theta": 1e6}),
], ids=["llama-untied", "llama-tied", "llama3-rope", "qwen2-untied", "qwen2-tied"])
def test_causal_lm_parity(tmp_path, cls_name, cfg_kw):
    import torch

    hf = _hf_model(cls_name, cfg_kw)
    hf.save_pretrained(tmp_path, safe_serialization=True)
    model, params, tok = st.load_dir(str(tmp_path), num_heads=1)
    assert tok is None  # no tokenizer.json in the directory
    cfg = model.cfg
    assert cfg.qkv_bias == cls_name.startswith("Qwen2")
    assert cfg.tie_embeddings == cfg_kw["tie_word_embeddings"]
    if "rope_scaling" in cfg_kw:
        assert cfg.rope_scaling["rope_type"] == "llama3" and cfg.rope_scaling["factor"] == 8.0
    ids = _ids(t=40)
    ours = np.asarray(model.apply({"params": params}, jnp.asarray(ids)))
    with torch.no_grad():
        ref = hf(_torch(ids)).logits.numpy()
    assert ours.shape == ref.shape == (2, 40, 300)
    assert ref.std() > 0.1  # the comparison below is not trivially small
    np.testing.assert_allclose(ours, ref, atol=TOL, rtol=0)

    # export (untied, one head) keeps the config: rope, eps, biases; transformers reads it back
    from transformers import AutoModelForCausalLM

    from mtalign_jax import export

    export.export(model, params, [1.0], str(tmp_path / "exp"))
    cfg2, _, extras = st.read_hf_dir(str(tmp_path / "exp"))
    keep = ("rope_theta", "rope_scaling", "rms_eps", "qkv_bias", "head_dim", "arch", "d_ff")
    assert {k: getattr(cfg2, k) for k in keep} == {k: getattr(cfg, k) for k in keep}
    assert extras["layout"] == "causal" and not cfg2.tie_embeddings
    hf2 = AutoModelForCausalLM.from_pretrained(str(tmp_path / "exp"),
                                               attn_implementation="eager").eval()
    assert type(hf2) is type(hf)
    with torch.no_grad():
        np.testing.assert_allclose(hf2(_torch(ids)).logits.numpy(), ref, atol=TOL, rtol=0)


def test_sequence_classification_parity(tmp_path):
    import torch

    hf = _hf_model("LlamaForSequenceClassification", {"num_labels": 3, "pad_token_id": 0})
    hf.save_pretrained(tmp_path, safe_serialization=True)
    model, params, head, head_params, tok, kind = st.load_reward_model(str(tmp_path))
    assert kind == "seqcls" and tok is None
    assert head_params["score"]["kernel"].shape == (64, 3)
    ids = _ids(b=3, t=10)
    ids[1, 7:] = 0  # right padding: HF pools at the last non-pad token
    with torch.no_grad():
        ref = hf(_torch(ids)).logits.numpy()  # [B, 3]
    mask = (ids != 0).astype(np.int32)
    h, _ = model.apply({"params": params}, jnp.asarray(ids), attention_mask=jnp.asarray(mask),
                       method=CausalLM.hidden)
    scores = np.asarray(head.apply({"params": head_params}, h))  # [B, T, 3]
    last = mask.shape[1] - 1 - np.argmax(mask[:, ::-1], axis=1)
    ours = scores[np.arange(3), last]
    assert ref.shape == ours.shape == (3, 3) and np.abs(ref).max() > 0.1
    np.testing.assert_allclose(ours, ref, atol=TOL, rtol=0)


def test_qwen2_prm_head_parity(tmp_path):
    """Qwen2.5-Math-PRM layout: score.0 (D->D), ReLU, score.2 (D->2), per-token logits."""
    import torch

    base = _hf_model("Qwen2ForCausalLM", {"tie_word_embeddings": True}, seed=3)
    base.save_pretrained(tmp_path / "base", safe_serialization=True)
    tensors, _ = st.read_tensors(str(tmp_path / "base"))
    rng = np.random.default_rng(4)
    d = SMALL["hidden_size"]
    head = {"score.0.weight": rng.normal(0, 0.2, (d, d)), "score.0.bias": rng.normal(0, 0.2, d),
            "score.2.weight": rng.normal(0, 0.2, (2, d)), "score.2.bias": rng.normal(0, 0.2, 2)}
    head = {k: v.astype(np.float32) for k, v in head.items()}
    with open(tmp_path / "base" / "config.json") as f:
        config = json.load(f)
    config["architectures"] = ["Qwen2ForProcessRewardModel"]
    st.write_hf_dir(str(tmp_path / "prm"), config, {**tensors, **head})

    model, params, mlp, head_params, _, kind = st.load_reward_model(str(tmp_path / "prm"))
    assert kind == "prm"
    ids = _ids(t=16)
    h, _ = model.apply({"params": params}, jnp.asarray(ids), method=CausalLM.hidden)
    ours = np.asarray(mlp.apply({"params": head_params}, h))  # [B, T, 2]
    with torch.no_grad():
        hs = base.model(_torch(ids)).last_hidden_state
        t = {k: torch.from_numpy(v) for k, v in head.items()}
        x = torch.relu(hs @ t["score.0.weight"].T + t["score.0.bias"])
        ref = (x @ t["score.2.weight"].T + t["score.2.bias"]).numpy()
    assert ours.shape == ref.shape == (2, 16, 2) and np.abs(ref).max() > 0.1
    np.testing.assert_allclose(ours, ref, atol=TOL, rtol=0)


def _write_multihead(tmp_path, k=2):
    """Official PyTorch layout: heads.{i}.weight [V, D] beside model.* and no lm_head."""
    base = _hf_model("LlamaForCausalLM", {"tie_word_embeddings": False}, seed=5)
    base.save_pretrained(tmp_path / "base", safe_serialization=True)
    tensors, _ = st.read_tensors(str(tmp_path / "base"))
    del tensors["lm_head.weight"]
    rng = np.random.default_rng(6)
    heads = [rng.normal(0, 0.1, (SMALL["vocab_size"], SMALL["hidden_size"])).astype(np.float32)
             for _ in range(k)]
    tensors.update({f"heads.{i}.weight": w for i, w in enumerate(heads)})
    with open(tmp_path / "base" / "config.json") as f:
        config = json.load(f)
    st.write_hf_dir(str(tmp_path / "mh"), config, tensors)
    return base, heads, str(tmp_path / "mh")


def test_multihead_official_layout(tmp_path):
    import torch

    base, heads, path = _write_multihead(tmp_path, k=2)
    model, params, _ = st.load_dir(path, num_heads=None)
    assert model.num_heads == 2 and params["heads"]["kernel"].shape == (2, 64, 300)
    ids = _ids(t=12)
    with torch.no_grad():
        hs = base.model(_torch(ids)).last_hidden_state.numpy()
    for i in range(2):  # one-hot head weights select head i exactly (1 * W_i + 0 * W_j)
        ours = np.asarray(model.apply({"params": params}, jnp.asarray(ids),
                                      head_weights=jnp.eye(2)[i]))
        np.testing.assert_allclose(ours, hs @ heads[i].T, atol=TOL, rtol=0)
    # asking the wrong head count is a clear error; the right one loads the same heads
    with pytest.raises(ValueError, match=r"checkpoint has 2 heads.*num_heads=3"):
        st.load_dir(path, num_heads=3)
    _, p2, _ = st.load_dir(path, num_heads=2)
    np.testing.assert_array_equal(np.asarray(p2["heads"]["kernel"][1]), heads[1].T)


def test_bfloat16_checkpoint_and_sharded_placement(tmp_path):
    """bf16 shards read via ml_dtypes; `shardings` places each leaf directly."""
    import jax
    import torch
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    hf = _hf_model("Qwen2ForCausalLM", {"tie_word_embeddings": False}, seed=7)
    hf.to(torch.bfloat16).save_pretrained(tmp_path, safe_serialization=True)
    tensors, _ = st.read_tensors(str(tmp_path))
    assert str(tensors["model.embed_tokens.weight"].dtype) == "bfloat16"
    model, params, _ = st.load_dir(str(tmp_path), dtype="float32")
    emb = np.asarray(params["trunk"]["embed"]["embedding"])
    np.testing.assert_array_equal(emb, hf.model.embed_tokens.weight.detach().float().numpy())

    mesh = Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("data", "model"))
    shardings = jax.tree_util.tree_map(lambda _: NamedSharding(mesh, P()), params)
    shardings["heads"]["kernel"] = NamedSharding(mesh, P(None, None, "model"))
    _, sp, _ = st.load_dir(str(tmp_path), shardings=shardings)
    kern = sp["heads"]["kernel"]
    assert kern.sharding == shardings["heads"]["kernel"]
    assert kern.addressable_shards[0].data.shape == (1, 64, 150)
    same = jax.tree_util.tree_map(lambda a, b: np.array_equal(np.asarray(a), np.asarray(b)),
                                  sp, params)
    assert all(jax.tree_util.tree_leaves(same))


def _transformers_from_gguf(path):
    """transformers' own GGUF conversion (its dequantisation and Q/K un-permute, independent of
    ours) into a LlamaForCausalLM; `from_pretrained(gguf_file=...)` would also need accelerate."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    config = LlamaConfig(**load_gguf_checkpoint(path)["config"])
    config._attn_implementation = "eager"
    hf = LlamaForCausalLM(config)
    tensors = load_gguf_checkpoint(path, return_tensors=True, model_to_load=hf)["tensors"]
    res = hf.load_state_dict({k: torch.as_tensor(v) for k, v in tensors.items()}, strict=False)
    assert res.missing_keys == ["lm_head.weight"] and not res.unexpected_keys  # tied
    assert torch.equal(hf.lm_head.weight, hf.model.embed_tokens.weight)
    return hf.float().eval()


@pytest.mark.heavy
def test_smollm2_matches_transformers_gguf(smollm2, tmp_path):
    """Real SmolLM2-135M-Instruct: our GGUF reader vs transformers reading the same GGUF; then
    our export of it to an HF directory loads in transformers with the same logits."""
    import torch
    from transformers import LlamaForCausalLM

    from mtalign_jax import export
    from mtalign_jax.data.tokenizer import tokenizer_from_json
    from mtalign_jax.hf.load import smollm2_gguf_path

    model, params, tok = smollm2
    hf = _transformers_from_gguf(smollm2_gguf_path())
    text = ("The capital of France is Paris. 12 + 30 = 42, and the sky over the quiet sea "
            "is blue today, said the old sailor.")
    ids = np.array([tok.encode(text)[:32]], np.int32)
    assert ids.shape == (1, 32)
    ours = np.asarray(model.apply({"params": params}, jnp.asarray(ids)))
    with torch.no_grad():
        ref = hf(_torch(ids)).logits.numpy()
    err = float(np.abs(ours - ref).max())
    print(f"\nSmolLM2 GGUF parity vs transformers: max abs logit diff {err:.3e} "
          f"(logit std {ref.std():.2f})")
    assert err < 1e-3, err  # DESIGN.md: SmolLM2 matches transformers to ~1e-4
    np.testing.assert_array_equal(ours.argmax(-1), ref.argmax(-1))

    out = str(tmp_path / "smollm2-hf")
    export.export(model, params, [1.0], out, tokenizer=tok)
    exported = LlamaForCausalLM.from_pretrained(out, attn_implementation="eager").eval()
    with torch.no_grad():
        ref2 = exported(_torch(ids)).logits.numpy()
    err2 = float(np.abs(ours - ref2).max())
    print(f"SmolLM2 exported HF dir in transformers vs ours: max abs logit diff {err2:.3e}")
    assert err2 < 1e-3, err2  # 30 float32 layers: DESIGN.md's SmolLM2 tolerance
    assert tokenizer_from_json(os.path.join(out, "tokenizer.json")).encode(text) == \
        tok.encode(text)
