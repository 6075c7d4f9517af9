"""The synthetic tokenizers are valid for llama.cpp at the real and the tiny vocabulary sizes."""

from __future__ import annotations

import pytest

from moebench.models.vocab import TOKEN_BYTE, TOKEN_CONTROL, byte_to_unicode, vocab_for

SIZES = {"llama": 128256, "qwen2": 151936, "olmoe": 50304, "gemma2": 256000}


@pytest.mark.parametrize("architecture", sorted(SIZES))
@pytest.mark.parametrize("full", [False, True])
def test_exact_size_unique_tokens_and_valid_merges(architecture, full):
    size = SIZES[architecture] if full else 2048
    vocab = vocab_for(architecture, size)
    assert len(vocab.tokens) == len(set(vocab.tokens)) == len(vocab.token_types) == size
    assert all(0 <= i < size for i in vocab.special_ids.values())
    assert vocab.token_types[vocab.special_ids["eos"]] == TOKEN_CONTROL
    if vocab.merges is not None:
        known = set(vocab.tokens)
        for merge in vocab.merges:
            left, right = merge.split(" ")
            assert left in known and right in known and left + right in known
    else:
        assert len(vocab.scores) == size
        assert vocab.tokens[vocab.token_types.index(TOKEN_BYTE)] == "<0x00>"


def test_tokenizer_families_and_specials():
    assert (vocab_for("llama", 2048).pre, vocab_for("qwen2", 2048).pre, vocab_for("olmoe", 2048).pre) == \
        ("llama-bpe", "qwen2", "olmo")
    llama = vocab_for("llama", 2048)
    assert llama.tokens[llama.special_ids["bos"]] == "<|begin_of_text|>"
    assert llama.tokens[llama.special_ids["eos"]] == "<|eot_id|>"
    gemma = vocab_for("gemma2", 2048)
    assert gemma.model == "llama" and gemma.tokens[:3] == ["<pad>", "<eos>", "<bos>"]


def test_same_call_same_vocabulary():
    assert vocab_for("qwen2", 4096) == vocab_for("qwen2", 4096)


def test_byte_map_is_gpt2s():
    mapping = byte_to_unicode()
    assert len(set(mapping.values())) == 256
    assert mapping[ord(" ")] == "Ġ" and mapping[ord("\n")] == "Ċ" and mapping[ord("A")] == "A"
