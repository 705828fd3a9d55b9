"""Tokenizers and chat templates: the byte-level `tiny` tokenizer and HF `tokenizers` wrappers.

Every tokenizer follows one contract (docs/ARCHITECTURE.md): `vocab_size, eos_id, pad_id,
im_start_id, im_end_id, chat_format`, `encode`, `decode`, `apply_chat`, `encode_chat` and
`encode_prompt_response`.

Chat formats (hand-written, tested against the jinja templates they reproduce):
- "chatml" (SmolLM2, Qwen2.5): `<|im_start|>{role}\\n{content}<|im_end|>\\n` per message, the
  generation prompt `<|im_start|>assistant\\n`. When the model's template injects a default
  system message before a conversation that has none (SmolLM2: "You are a helpful AI assistant
  named SmolLM, trained by Hugging Face"; Qwen2.5: "You are Qwen, ..."), `default_system` holds
  it and `apply_chat` adds it the same way.
- "llama3": `<|begin_of_text|>` then `<|start_header_id|>{role}<|end_header_id|>\\n\\n{content
  stripped}<|eot_id|>` per message; generation prompt `<|start_header_id|>assistant
  <|end_header_id|>\\n\\n` (the Llama-3 template; Llama-3.1's optional "Cutting Knowledge Date"
  system header is not added).
- "plain": `{role}: {content}\\n\\n` per message, generation prompt `assistant: ` (tokenizers
  without a chat template).

`im_end_id` is the format's end-of-turn token (`<|im_end|>`, `<|eot_id|>`, or EOS for "plain").

Prompt/response tokenisation for SFT and DPO (`encode_prompt_response`, `encode_pair`):
prompt ids = the chat template of the prompt with the generation prompt; response ids = the
response text then the end-of-turn token (no trailing "\\n": decoding stops at end-of-turn, so
the template's newline after it is never generated and is not trained). Labels are -100 on the
prompt. Truncation (the DPO reference code's rule, with the response budget max_len - prompt):
if prompt + longest response > max_len, the prompt keeps its last `max_prompt_len` tokens; if
still too long, every response keeps its first `max_len - len(prompt)` tokens. For a pair the
longer of chosen/rejected decides, so both responses share one prompt.
"""
from __future__ import annotations

import functools
import json
import os
import re
from typing import Optional, Sequence, Union

Messages = list  # list of {"role": str, "content": str}
Prompt = Union[str, Messages]

CHAT_FORMATS = ("chatml", "llama3", "plain")


def as_messages(prompt: Prompt) -> Messages:
    """A user-turn string or a list of {role, content} -> a list of messages."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return list(prompt)


def truncate(prompt_ids: list[int], responses: Sequence[list[int]], *, max_prompt_len: int,
             max_len: int) -> tuple[list[int], list[list[int]]]:
    """The truncation rule of the module docstring: (prompt_ids, [response_ids...])."""
    if not 0 < max_prompt_len < max_len:
        raise ValueError(f"need 0 < max_prompt_len ({max_prompt_len}) < max_len ({max_len})")
    longest = max(len(r) for r in responses)
    if len(prompt_ids) + longest > max_len and len(prompt_ids) > max_prompt_len:
        prompt_ids = prompt_ids[-max_prompt_len:]
    budget = max_len - len(prompt_ids)
    return prompt_ids, [r[:budget] for r in responses]


class Tokenizer:
    """Base contract. Subclasses set the ids and implement `encode`/`decode`."""

    vocab_size: int
    eos_id: int
    pad_id: int
    im_start_id: Optional[int]
    im_end_id: int  # the end-of-turn token of `chat_format`
    bos_id: Optional[int] = None
    chat_format: str = "chatml"
    default_system: Optional[str] = None

    def encode(self, text: str) -> list[int]:
        """Text -> ids; special-token strings in the text become their special ids."""
        raise NotImplementedError

    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
        raise NotImplementedError

    # -- chat -------------------------------------------------------------------------------

    def apply_chat(self, messages: Messages, add_generation_prompt: bool = True) -> str:
        """Messages [{role, content}] -> the chat-format string (see the module docstring)."""
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str) \
                    or not isinstance(m.get("content"), str):
                raise ValueError(f"message {i} must be {{'role': str, 'content': str}}, got {m!r}")
        if self.chat_format == "chatml":
            out = []
            if self.default_system is not None and (not messages
                                                    or messages[0]["role"] != "system"):
                out.append(f"<|im_start|>system\n{self.default_system}<|im_end|>\n")
            out += [f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages]
            if add_generation_prompt:
                out.append("<|im_start|>assistant\n")
            return "".join(out)
        if self.chat_format == "llama3":
            out = ["<|begin_of_text|>"]
            out += [f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n"
                    f"{m['content'].strip()}<|eot_id|>" for m in messages]
            if add_generation_prompt:
                out.append("<|start_header_id|>assistant<|end_header_id|>\n\n")
            return "".join(out)
        if self.chat_format == "plain":
            out = [f"{m['role']}: {m['content']}\n\n" for m in messages]
            if add_generation_prompt:
                out.append("assistant: ")
            return "".join(out)
        raise ValueError(f"unknown chat_format {self.chat_format!r} (one of {CHAT_FORMATS})")

    def encode_chat(self, messages: Messages, add_generation_prompt: bool = True) -> list[int]:
        return self.encode(self.apply_chat(messages, add_generation_prompt))

    def encode_response(self, response: str) -> list[int]:
        """Response text -> ids ending with the end-of-turn token."""
        return self.encode(response) + [self.im_end_id]

    def encode_prompt_response(self, prompt: Prompt, response: str, *, max_prompt_len: int,
                               max_len: int) -> tuple[list[int], list[int]]:
        """(ids, labels), both of length <= max_len; labels -100 on the prompt tokens."""
        p = self.encode_chat(as_messages(prompt), add_generation_prompt=True)
        p, (r,) = truncate(p, [self.encode_response(response)], max_prompt_len=max_prompt_len,
                           max_len=max_len)
        return p + r, [-100] * len(p) + r

    def encode_pair(self, prompt: Prompt, chosen: str, rejected: str, *, max_prompt_len: int,
                    max_len: int) -> tuple[tuple[list, list], tuple[list, list]]:
        """((chosen ids, labels), (rejected ids, labels)) sharing one truncated prompt."""
        p = self.encode_chat(as_messages(prompt), add_generation_prompt=True)
        p, (c, r) = truncate(p, [self.encode_response(chosen), self.encode_response(rejected)],
                             max_prompt_len=max_prompt_len, max_len=max_len)
        mask = [-100] * len(p)
        return (p + c, mask + c), (p + r, mask + r)


# ------------------------------------------------------------------------------------------------


class ByteTokenizer(Tokenizer):
    """The `tiny` preset's tokenizer: ids 0-255 are the UTF-8 bytes, then four specials."""

    SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>")

    def __init__(self):
        self.special_ids = {s: 256 + i for i, s in enumerate(self.SPECIALS)}
        self.vocab_size = 256 + len(self.SPECIALS)  # 260
        self.eos_id = self.special_ids["<|endoftext|>"]  # 256
        self.im_start_id = self.special_ids["<|im_start|>"]  # 257
        self.im_end_id = self.special_ids["<|im_end|>"]  # 258
        self.pad_id = self.special_ids["<|pad|>"]  # 259
        self.chat_format = "chatml"
        self.default_system = None
        self._split = re.compile("(" + "|".join(re.escape(s) for s in self.SPECIALS) + ")")

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for piece in self._split.split(text):
            if piece in self.special_ids:
                ids.append(self.special_ids[piece])
            elif piece:
                ids.extend(piece.encode("utf-8"))
        return ids

    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
        out, buf = [], bytearray()
        for i in (int(x) for x in ids):
            if 0 <= i < 256:
                buf.append(i)
                continue
            out.append(buf.decode("utf-8", errors="replace"))
            buf = bytearray()
            if not skip_special and 256 <= i < self.vocab_size:
                out.append(self.SPECIALS[i - 256])
        out.append(buf.decode("utf-8", errors="replace"))
        return "".join(out)


# ------------------------------------------------------------------------------------------------


class HFTokenizer(Tokenizer):
    """A HF `tokenizers.Tokenizer` with the ids and chat format of its model."""

    def __init__(self, tok, *, eos_token: str, pad_token: Optional[str] = None,
                 bos_token: Optional[str] = None, chat_format: str = "chatml",
                 default_system: Optional[str] = None, chat_template: Optional[str] = None):
        if chat_format not in CHAT_FORMATS:
            raise ValueError(f"unknown chat_format {chat_format!r} (one of {CHAT_FORMATS})")
        self.tok = tok
        self.chat_format = chat_format
        self.default_system = default_system
        self.chat_template = chat_template  # the model's jinja source, kept for reference
        self.vocab_size = tok.get_vocab_size(with_added_tokens=True)
        self.eos_id = self._id(eos_token)
        self.pad_id = self._id(pad_token) if pad_token else self.eos_id
        self.bos_id = self._id(bos_token) if bos_token else None
        if chat_format == "chatml":
            self.im_start_id, self.im_end_id = self._id("<|im_start|>"), self._id("<|im_end|>")
        elif chat_format == "llama3":
            self.im_start_id = self._id("<|start_header_id|>")
            self.im_end_id = self._id("<|eot_id|>")
        else:
            self.im_start_id, self.im_end_id = None, self.eos_id

    def _id(self, token: str) -> int:
        i = self.tok.token_to_id(token)
        if i is None:
            raise ValueError(f"token {token!r} is not in the vocabulary")
        return i

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=skip_special)


def chat_format_of(template: Optional[str], vocab: dict) -> str:
    """"chatml" / "llama3" / "plain" from a jinja chat template (or, without one, the vocab)."""
    for marker, fmt in (("<|im_start|>", "chatml"), ("<|start_header_id|>", "llama3")):
        if (template and marker in template) or (not template and marker in vocab):
            return fmt
    return "plain"


_DEFAULT_SYSTEM = re.compile(r"<\|im_start\|>system(?:\n|\\n)(.*?)<\|im_end\|>", re.S)


def default_system_of(template: Optional[str]) -> Optional[str]:
    """The system message a ChatML template adds when a conversation has none, else None.

    The template's literal `<|im_start|>system\\n...<|im_end|>` string (only present in
    templates that inject a default) holds it; jinja string escapes are undone.
    """
    m = _DEFAULT_SYSTEM.search(template or "")
    if not m or "{" in m.group(1) or "+" in m.group(1):
        return None
    return m.group(1).replace("\\n", "\n").replace("\\'", "'")


# ------------------------------------------------------------------------------------------------


def _gguf_field(reader, key, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def byte_level_bpe(vocab: dict, merges: list, pre: Optional[str]):
    """A byte-level BPE `tokenizers.Tokenizer` (GPT-2 style) for llama.cpp's `pre` type."""
    from tokenizers import Tokenizer as HFTok, decoders, models, pre_tokenizers

    tok = HFTok(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre == "smollm":  # llama.cpp: "\p{N}" (every digit alone), then the GPT-2 regex
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), byte_level])
    elif pre in (None, "", "default", "gpt2"):
        tok.pre_tokenizer = byte_level
    else:
        raise ValueError(f"GGUF tokenizer.ggml.pre={pre!r} is not supported (smollm, gpt2, "
                         f"default); load the model's HF directory (tokenizer.json) instead")
    tok.decoder = decoders.ByteLevel()
    return tok


@functools.lru_cache(maxsize=8)
def _tokenizer_from_gguf_cached(path: str, mtime: float) -> HFTokenizer:
    import gguf

    return tokenizer_from_gguf_reader(gguf.GGUFReader(path), path)


def tokenizer_from_gguf(path_or_reader) -> HFTokenizer:
    """The tokenizer and chat format stored in a GGUF file's metadata.

    Takes a path (parsed with `gguf.GGUFReader`, cached per path and mtime: parsing the
    metadata of a 49k-token vocabulary takes seconds) or an open `gguf.GGUFReader`.
    """
    if not isinstance(path_or_reader, (str, os.PathLike)):
        return tokenizer_from_gguf_reader(path_or_reader, str(getattr(path_or_reader, "path", "")))
    path = os.fspath(path_or_reader)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: GGUF file not found")
    return _tokenizer_from_gguf_cached(os.path.abspath(path), os.path.getmtime(path))


def tokenizer_from_gguf_reader(reader, where: str = "") -> HFTokenizer:
    from tokenizers import AddedToken

    g = functools.partial(_gguf_field, reader)
    model = g("tokenizer.ggml.model")
    if model != "gpt2":
        raise ValueError(f"{where}: GGUF tokenizer.ggml.model={model!r} is not supported "
                         f"(byte-level BPE 'gpt2' only)")
    tokens = list(g("tokenizer.ggml.tokens"))
    types = list(g("tokenizer.ggml.token_type", [1] * len(tokens)))
    merges = [tuple(m.split(" ", 1)) for m in g("tokenizer.ggml.merges", [])]
    tok = byte_level_bpe({t: i for i, t in enumerate(tokens)}, merges, g("tokenizer.ggml.pre"))
    # llama.cpp token types: 3 = control (special), 4 = user-defined (added, not special).
    tok.add_tokens([AddedToken(t, special=False, normalized=False)
                    for t, ty in zip(tokens, types) if ty == 4])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, ty in zip(tokens, types) if ty == 3])
    name = lambda key: tokens[int(g(key))] if g(key) is not None else None  # noqa: E731
    template = g("tokenizer.chat_template")
    fmt = chat_format_of(template, {t: i for i, t in enumerate(tokens)})
    eos = name("tokenizer.ggml.eos_token_id") or tokens[0]
    return HFTokenizer(tok, eos_token=eos, pad_token=name("tokenizer.ggml.padding_token_id"),
                       bos_token=name("tokenizer.ggml.bos_token_id"), chat_format=fmt,
                       default_system=default_system_of(template) if fmt == "chatml" else None,
                       chat_template=template)


def _token_str(x) -> Optional[str]:
    """tokenizer_config.json writes special tokens as strings or {"content": ...} dicts."""
    if isinstance(x, dict):
        return x.get("content")
    return x if isinstance(x, str) else None


def tokenizer_from_json(path: str, chat_format: Optional[str] = None) -> HFTokenizer:
    """An HF `tokenizer.json` (+ `tokenizer_config.json` beside it for specials and template).

    chat_format: "chatml" (Qwen), "llama3" (Llama-3) or "plain"; by default read from the
    config's chat template (or the vocabulary's special tokens).
    """
    from tokenizers import Tokenizer as HFTok

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: tokenizer.json not found")
    tok = HFTok.from_file(path)
    cfg_path = os.path.join(os.path.dirname(path), "tokenizer_config.json")
    cfg = {}
    if os.path.isfile(cfg_path):
        with open(cfg_path, encoding="utf-8") as f:
            cfg = json.load(f)
    template = cfg.get("chat_template")
    if isinstance(template, list):  # [{"name": "default", "template": ...}, ...]
        template = next((t.get("template") for t in template if t.get("name") == "default"), None)
    vocab = tok.get_vocab(with_added_tokens=True)
    fmt = chat_format or chat_format_of(template, vocab)
    eos = _token_str(cfg.get("eos_token"))
    if eos is None:
        eos = next((t for t in ("<|im_end|>", "<|eot_id|>", "<|endoftext|>", "</s>")
                    if t in vocab), None)
        if eos is None:
            raise ValueError(f"{path}: no eos_token in {cfg_path} and no known EOS token")
    return HFTokenizer(tok, eos_token=eos, pad_token=_token_str(cfg.get("pad_token")),
                       bos_token=_token_str(cfg.get("bos_token")), chat_format=fmt,
                       default_system=default_system_of(template) if fmt == "chatml" else None,
                       chat_template=template)
