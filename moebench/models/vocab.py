"""Replica tokenizers: each study model's own vocabulary, taken from a hash-verified input.

The tokenizer decides the work a prompt is (how many tokens: prefill time, time to first token,
KV-cache size, whether it fits the context), so a replica carries its model's real tokenizer
wherever a real copy is at hand and says where it is not (`tokenizer` in configs/models.yaml):

- Llama-3.2-1B: the Llama 3 BPE of the pinned llama.cpp tree, `models/ggml-vocab-llama-bpe.gguf`
  (tokens 0..127999 and all 280,147 merges are id for id those of Llama-3.2's tokenizer.json), with
  the special-token names Llama 3.1 introduced and 3.2 keeps (`llama32_special_tokens`).
- Qwen2.5-1.5B: the Qwen2 BPE of the tree, `models/ggml-vocab-qwen2.gguf` (tokens 0..151645 and all
  151,387 merges equal Qwen2.5's), plus the 19 special tokens Qwen2.5 added (`QWEN25_ADDED`).
- OLMoE: GPT-NeoX-20B's BPE from the tree, `models/ggml-vocab-gpt-neox.gguf`, edited as AllenAI
  documents for the OLMo tokenizer (three PII tokens appended, `<|endoftext|>` moved from id 0 to
  50279, `|||IP_ADDRESS|||` at 0) and padded to the 50,304 rows of the embedding.
- Gemma-2: SentencePiece pieces from a tokenizer.json pinned by SHA-256 in lock.yaml; the scores
  llama.cpp merges by are not in that file and are rebuilt from its merge order.

Token types and the padding follow the pinned llama.cpp's convert_hf_to_gguf.py (added special
tokens CONTROL, other added tokens USER_DEFINED, `[PAD<i>]` rows UNUSED). Everything here is a pure
function of its input files: the same files give the same vocabulary on any machine.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

# llama.cpp's token types (llama.h, LLAMA_TOKEN_TYPE_*); gguf-py has the same values.
TOKEN_NORMAL = 1
TOKEN_UNKNOWN = 2
TOKEN_CONTROL = 3
TOKEN_USER_DEFINED = 4
TOKEN_UNUSED = 5
TOKEN_BYTE = 6
# convert_hf_to_gguf.py's score for every added token of a SentencePiece vocabulary.
ADDED_TOKEN_SCORE = -1000.0


@dataclass(frozen=True)
class Vocab:
    """What a GGUF's `tokenizer.ggml.*` keys hold."""

    model: str                      # "gpt2" (byte-level BPE) or "llama" (SentencePiece)
    pre: str | None                 # pre-tokenizer name (BPE only)
    tokens: list[str]
    token_types: list[int]
    scores: list[float] | None = None
    merges: list[str] | None = None
    special_ids: dict[str, int] = field(default_factory=dict)   # bos/eos/unk/padding -> id
    add_bos: bool | None = None
    add_space_prefix: bool | None = None

    def __len__(self) -> int:
        return len(self.tokens)


class VocabSourceError(ValueError):
    """A tokenizer source file is not the vocabulary its recipe expects."""


# --- reading the sources -----------------------------------------------------------------------

def read_gguf_vocab(gguf: ModuleType, path: Path) -> Vocab:
    """The tokenizer keys of a (vocabulary-only) GGUF, read with the pinned gguf-py."""
    reader = gguf.GGUFReader(path, "r")
    keys = gguf.Keys.Tokenizer

    def strings(key: str) -> list[str] | None:
        found = reader.get_field(key)
        return None if found is None else [bytes(found.parts[i]).decode("utf-8") for i in found.data]

    def numbers(key: str) -> list[Any] | None:
        found = reader.get_field(key)
        return None if found is None else [found.parts[i].tolist()[0] for i in found.data]

    def scalar(key: str) -> Any:
        found = reader.get_field(key)
        if found is None:
            return None
        if found.types[0] == gguf.GGUFValueType.STRING:
            return bytes(found.parts[-1]).decode("utf-8")
        return found.parts[-1].tolist()[0]

    tokens, types = strings(keys.LIST), numbers(keys.TOKEN_TYPE)
    if not tokens or not types:
        raise VocabSourceError(f"{path} holds no token list or token types")
    ids = {name: scalar(key) for name, key in (("bos", keys.BOS_ID), ("eos", keys.EOS_ID), ("unk", keys.UNK_ID),
                                                ("padding", keys.PAD_ID))}
    add_bos = scalar(keys.ADD_BOS)
    return Vocab(scalar(keys.MODEL), scalar(keys.PRE), tokens, [int(t) for t in types], numbers(keys.SCORES),
                 strings(keys.MERGES), {k: int(v) for k, v in ids.items() if v is not None},
                 None if add_bos is None else bool(add_bos))


def _expect(path: Path, condition: bool, what: str) -> None:
    if not condition:
        raise VocabSourceError(f"{path} is not the expected tokenizer source: {what}")


def _padded(tokens: list[str], types: list[int], vocab_size: int) -> tuple[list[str], list[int]]:
    """convert_hf_to_gguf.py's rows beyond the tokenizer: `[PAD<i>]`, UNUSED."""
    if vocab_size < len(tokens):
        raise VocabSourceError(f"vocab_size {vocab_size} is smaller than the tokenizer's {len(tokens)} tokens")
    extra = range(len(tokens), vocab_size)
    return tokens + [f"[PAD{i}]" for i in extra], types + [TOKEN_UNUSED] * len(extra)


# --- Llama 3.2 ---------------------------------------------------------------------------------

LLAMA3_FIRST_SPECIAL = 128000
LLAMA3_SPECIAL_COUNT = 256
# Llama 3.1 renamed four of Llama 3's reserved special tokens; Llama 3.2 keeps that layout.
LLAMA32_NAMED_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                          "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>",
                          "<|reserved_special_token_2|>", "<|start_header_id|>", "<|end_header_id|>",
                          "<|eom_id|>", "<|eot_id|>", "<|python_tag|>"]
LLAMA32_EOT_ID = 128009  # <|eot_id|>: what Llama-3.2-Instruct ends a turn with (its eos_token)


def llama32_special_tokens() -> list[str]:
    """The 256 control tokens 128000..128255: the named ones, then reserved_3..reserved_247."""
    named = len(LLAMA32_NAMED_SPECIALS)
    return LLAMA32_NAMED_SPECIALS + [f"<|reserved_special_token_{i - named + 3}|>"
                                     for i in range(named, LLAMA3_SPECIAL_COUNT)]


def llama32_vocab(base: Vocab, path: Path, vocab_size: int) -> Vocab:
    _expect(path, base.pre == "llama-bpe" and len(base) == LLAMA3_FIRST_SPECIAL + LLAMA3_SPECIAL_COUNT,
            "a llama-bpe vocabulary of 128,256 tokens")
    _expect(path, base.tokens[LLAMA3_FIRST_SPECIAL] == "<|begin_of_text|>", "token 128000 is <|begin_of_text|>")
    tokens = base.tokens[:LLAMA3_FIRST_SPECIAL] + llama32_special_tokens()
    types = base.token_types[:LLAMA3_FIRST_SPECIAL] + [TOKEN_CONTROL] * LLAMA3_SPECIAL_COUNT
    tokens, types = _padded(tokens, types, vocab_size)
    return dataclasses.replace(base, tokens=tokens, token_types=types, add_bos=True,
                               special_ids={"bos": LLAMA3_FIRST_SPECIAL, "eos": LLAMA32_EOT_ID})


# --- Qwen2.5 -----------------------------------------------------------------------------------

QWEN2_BASE_TOKENS = 151646   # through <|im_end|>; the tree's file pads from here
# Qwen2.5's added tokens 151646..151664 (its tokenizer.json `added_tokens`), each with the type
# convert_hf_to_gguf.py gives it: special or "<|...|>" -> CONTROL, else USER_DEFINED.
QWEN25_ADDED = ["<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>", "<|quad_start|>",
                "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>",
                "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>",
                "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"]
QWEN25_ENDOFTEXT_ID, QWEN25_IM_END_ID = 151643, 151645


def looks_special(token: str) -> bool:
    """convert_hf_to_gguf.py's does_token_look_special: added tokens it makes CONTROL though unflagged."""
    return (token in ("<pad>", "<mask>", "<2mass>", "[@BOS@]") or (token.startswith("<|") and token.endswith("|>"))
            or (token.startswith("<unused") and token.endswith(">")))


def qwen25_vocab(base: Vocab, path: Path, vocab_size: int) -> Vocab:
    _expect(path, base.pre == "qwen2" and len(base) >= QWEN2_BASE_TOKENS, "a qwen2 vocabulary")
    _expect(path, base.tokens[QWEN25_IM_END_ID] == "<|im_end|>", "token 151645 is <|im_end|>")
    tokens = base.tokens[:QWEN2_BASE_TOKENS] + QWEN25_ADDED
    types = base.token_types[:QWEN2_BASE_TOKENS] + [TOKEN_CONTROL if looks_special(t) else TOKEN_USER_DEFINED
                                                    for t in QWEN25_ADDED]
    tokens, types = _padded(tokens, types, vocab_size)
    return dataclasses.replace(base, tokens=tokens, token_types=types, add_bos=False,
                               special_ids={"bos": QWEN25_ENDOFTEXT_ID, "eos": QWEN25_IM_END_ID,
                                            "padding": QWEN25_ENDOFTEXT_ID})


# --- OLMoE -------------------------------------------------------------------------------------

GPT_NEOX_TOKENS = 50277      # GPT-NeoX-20B's tokenizer: ids 0..50276 (the file pads to 50432)
# AllenAI's OLMo tokenizer (gpt-neox-olmo-dolma-v1_5, which OLMoE uses): GPT-NeoX-20B plus three PII
# masks, with <|endoftext|> and |||IP_ADDRESS||| swapped so that the end of text is id 50279, the
# eos_token_id of OLMoE's config.json; its pad_token_id is 1, GPT-NeoX's <|padding|>.
OLMO_IP_TOKEN, OLMO_APPENDED = "|||IP_ADDRESS|||", ["|||EMAIL_ADDRESS|||", "|||PHONE_NUMBER|||", "<|endoftext|>"]
OLMO_EOS_ID, OLMO_PAD_ID = 50279, 1


def olmoe_vocab(base: Vocab, path: Path, vocab_size: int) -> Vocab:
    _expect(path, len(base) >= GPT_NEOX_TOKENS and base.tokens[0] == "<|endoftext|>"
            and base.tokens[1] == "<|padding|>", "GPT-NeoX-20B's vocabulary (<|endoftext|>, <|padding|>, ...)")
    # The PII masks are added tokens that HF encodes whole wherever they occur: USER_DEFINED in llama.cpp.
    tokens = [OLMO_IP_TOKEN] + base.tokens[1:GPT_NEOX_TOKENS] + OLMO_APPENDED
    types = ([TOKEN_USER_DEFINED] + base.token_types[1:GPT_NEOX_TOKENS]
             + [TOKEN_USER_DEFINED, TOKEN_USER_DEFINED, TOKEN_CONTROL])
    tokens, types = _padded(tokens, types, vocab_size)
    return dataclasses.replace(base, pre="olmo", tokens=tokens, token_types=types, add_bos=False,
                               special_ids={"bos": OLMO_EOS_ID, "eos": OLMO_EOS_ID, "padding": OLMO_PAD_ID})


# --- Gemma-2 -----------------------------------------------------------------------------------

_BYTE_PIECE = re.compile(r"^<0x[0-9A-F]{2}>$")


def gemma2_vocab(tokenizer_json: dict[str, Any], tokenizer_config: dict[str, Any], path: Path,
                 vocab_size: int) -> Vocab:
    """A SentencePiece vocabulary from Hugging Face's tokenizer.json and tokenizer_config.json.

    convert_hf_to_gguf.py reads tokenizer.model, which holds each piece's score; tokenizer.json holds
    the BPE merges the converter derived from those scores instead, best first. llama.cpp's
    SentencePiece tokenizer only compares scores (it merges the adjacent pair whose concatenation
    scores highest), so a piece's score is rebuilt as minus the rank of the first merge that makes
    it. Added tokens take the converter's own treatment (CONTROL or USER_DEFINED, score -1000).
    """
    model = tokenizer_json.get("model") or {}
    _expect(path, model.get("type") == "BPE" and model.get("byte_fallback") is True,
            "a BPE model with byte fallback (SentencePiece converted to tokenizer.json)")
    pieces: dict[str, int] = model["vocab"]
    _expect(path, sorted(pieces.values()) == list(range(len(pieces))), "ids 0..n-1, each once")
    tokens = [""] * len(pieces)
    for piece, token_id in pieces.items():
        tokens[token_id] = piece
    rank: dict[str, int] = {}
    for position, merge in enumerate(model["merges"]):
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        rank.setdefault(left + right, position)
    unmerged = len(model["merges"])
    scores = [-float(rank.get(piece, unmerged)) for piece in tokens]
    types = [TOKEN_BYTE if _BYTE_PIECE.match(piece) else TOKEN_NORMAL for piece in tokens]
    for key, added in tokenizer_config.get("added_tokens_decoder", {}).items():
        token_id, text = int(key), added["content"]
        if added.get("special") or looks_special(text):
            types[token_id] = TOKEN_CONTROL
        else:
            text = text.replace("\u2581", " ")  # the converter pre-normalizes user-defined spaces
            types[token_id] = TOKEN_USER_DEFINED
        scores[token_id], tokens[token_id] = ADDED_TOKEN_SCORE, text
    ids = {name: pieces[tokenizer_config[f"{name}_token"]] for name in ("bos", "eos", "unk")}
    ids["padding"] = pieces[tokenizer_config["pad_token"]]
    if vocab_size != len(tokens):
        raise VocabSourceError(f"vocab_size {vocab_size} differs from the tokenizer's {len(tokens)} pieces")
    return Vocab("llama", None, tokens, types, scores=scores, special_ids=ids,
                 add_bos=bool(tokenizer_config.get("add_bos_token", True)), add_space_prefix=False)


# --- one model ---------------------------------------------------------------------------------

BPE_RECIPES = {"llama": llama32_vocab, "qwen2": qwen25_vocab, "olmoe": olmoe_vocab}


def vocab_for(architecture: str, vocab_size: int, source: Path, gguf: ModuleType) -> Vocab:
    """The tokenizer of the study's model of `architecture`, built from its source file.

    `source` is a vocabulary GGUF of the pinned llama.cpp tree (BPE models) or a directory holding
    tokenizer.json and tokenizer_config.json (Gemma-2).
    """
    if architecture in BPE_RECIPES:
        return BPE_RECIPES[architecture](read_gguf_vocab(gguf, source), source, vocab_size)
    if architecture == "gemma2":
        tokenizer_json = json.loads((source / "tokenizer.json").read_text(encoding="utf-8"))
        tokenizer_config = json.loads((source / "tokenizer_config.json").read_text(encoding="utf-8"))
        return gemma2_vocab(tokenizer_json, tokenizer_config, source, vocab_size)
    raise VocabSourceError(f"no tokenizer recipe for architecture {architecture!r}")
