"""Synthetic tokenizers of an exact size, for replica GGUFs.

A replica has random weights, so its tokenizer only has to be valid for llama.cpp: every token
unique, every BPE merge made of tokens that exist, byte fallback present, and the special tokens
the real model declares (BOS/EOS/EOT) at the places llama.cpp looks for them. The pieces are
strings over a fixed alphabet in rough English frequency order, enumerated level by level (all
2-character strings, then 3-character strings, ...), commonest combinations first, so a tiny
vocabulary of 2048 still tokenizes English into multi-character tokens and a full one reaches the
real size (up to 256000) without any training corpus. Everything here is a pure function of its
arguments: the same call gives the same vocabulary on any machine.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from functools import lru_cache

# llama.cpp's token types (llama.h, LLAMA_TOKEN_TYPE_*); gguf-py has the same values.
TOKEN_NORMAL = 1
TOKEN_UNKNOWN = 2
TOKEN_CONTROL = 3
TOKEN_BYTE = 6

ALPHABET_TEXT = " etaoinshrdlcumwfgypbvkjxqz,.ETAOINSHRDLCUMWFGYPBVKJXQZ0123456789'-!?:;\"()\n"


@dataclass(frozen=True)
class Vocab:
    """What a GGUF's `tokenizer.ggml.*` keys hold."""

    model: str                      # "gpt2" (byte-level BPE) or "llama" (SentencePiece)
    pre: str | None                 # pre-tokenizer name (BPE only)
    tokens: list[str]
    token_types: list[int]
    scores: list[float] | None = None
    merges: list[str] | None = None
    special_ids: dict[str, int] = field(default_factory=dict)   # bos/eos/unk/pad/... -> id
    add_bos: bool | None = None
    add_space_prefix: bool | None = None


@lru_cache(maxsize=1)
def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (what byte-level BPE vocabularies store)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def _strings(alphabet: list[str], length: int, count: int) -> list[str]:
    """The first `count` strings of `length` symbols, commonest first (lowest sum of ranks)."""
    if count <= 0:
        return []
    ranks = range(len(alphabet))
    # Bucketing by sum of ranks enumerates in order without sorting len(alphabet)**length tuples.
    out: list[str] = []
    for total in range(length * (len(alphabet) - 1) + 1):
        for combo in itertools.product(ranks, repeat=length - 1):
            last = total - sum(combo)
            if 0 <= last < len(alphabet):
                out.append("".join(alphabet[i] for i in combo) + alphabet[last])
                if len(out) == count:
                    return out
    return out


def _pieces(alphabet: list[str], count: int, min_length: int) -> list[str]:
    """`count` distinct strings over `alphabet`, level by level from `min_length` symbols up."""
    out: list[str] = []
    length = min_length
    while len(out) < count:
        out += _strings(alphabet, length, count - len(out))
        length += 1
    return out


def bpe_vocab(vocab_size: int, specials: list[str], pre: str, *, bos: str, eos: str,
              pad: str | None = None, add_bos: bool) -> Vocab:
    """Byte-level BPE: 256 byte tokens, merged pieces, then the special tokens at the end."""
    to_char = byte_to_unicode()
    alphabet = [to_char[b] for b in ALPHABET_TEXT.encode()]
    n_merged = vocab_size - 256 - len(specials)
    if n_merged < 0:
        raise ValueError(f"vocab_size {vocab_size} is smaller than 256 bytes + {len(specials)} special tokens")
    merged = _pieces(alphabet, n_merged, min_length=2)
    # Each piece is (its prefix, already a token) + (its last symbol, a byte token).
    merges = [f"{piece[:-1]} {piece[-1]}" for piece in merged]
    tokens = [to_char[b] for b in range(256)] + merged + specials
    types = [TOKEN_NORMAL] * (256 + n_merged) + [TOKEN_CONTROL] * len(specials)
    ids = {"bos": tokens.index(bos), "eos": tokens.index(eos)}
    if pad is not None:
        ids["padding"] = tokens.index(pad)
    return Vocab("gpt2", pre, tokens, types, merges=merges, special_ids=ids, add_bos=add_bos)


def spm_vocab(vocab_size: int) -> Vocab:
    """SentencePiece (Gemma layout): control tokens, <0x00>..<0xFF> byte fallback, scored pieces."""
    control = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>"]
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    alphabet = ["▁" if ch == " " else ch for ch in ALPHABET_TEXT]
    n_pieces = vocab_size - len(control) - len(byte_tokens)
    if n_pieces < len(alphabet):
        raise ValueError(f"vocab_size {vocab_size} leaves no room for the {len(alphabet)} single-symbol pieces")
    pieces = _pieces(alphabet, n_pieces, min_length=1)
    tokens = control + byte_tokens + pieces
    types = [TOKEN_CONTROL] * len(control) + [TOKEN_BYTE] * 256 + [TOKEN_NORMAL] * n_pieces
    types[control.index("<unk>")] = TOKEN_UNKNOWN
    # SentencePiece merges the adjacent pair whose concatenation has the highest score: commonest first.
    scores = [0.0] * (len(control) + 256) + [-float(i) for i in range(n_pieces)]
    ids = {"padding": 0, "eos": 1, "bos": 2, "unk": 3}
    return Vocab("llama", None, tokens, types, scores=scores, special_ids=ids, add_bos=True, add_space_prefix=False)


LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                   "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|reserved_special_token_2|>",
                   "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>"]
QWEN2_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
OLMO_SPECIALS = ["<|padding|>", "<|endoftext|>"]


def vocab_for(architecture: str, vocab_size: int) -> Vocab:
    """The tokenizer family each model really uses, with its real special tokens, at `vocab_size`."""
    if architecture == "llama":
        return bpe_vocab(vocab_size, LLAMA3_SPECIALS, "llama-bpe", bos="<|begin_of_text|>", eos="<|eot_id|>",
                         add_bos=True)
    if architecture == "qwen2":
        return bpe_vocab(vocab_size, QWEN2_SPECIALS, "qwen2", bos="<|endoftext|>", eos="<|im_end|>",
                         pad="<|endoftext|>", add_bos=False)
    if architecture == "olmoe":
        return bpe_vocab(vocab_size, OLMO_SPECIALS, "olmo", bos="<|endoftext|>", eos="<|endoftext|>",
                         pad="<|padding|>", add_bos=False)
    if architecture == "gemma2":
        return spm_vocab(vocab_size)
    raise ValueError(f"no synthetic tokenizer for architecture {architecture!r}")
