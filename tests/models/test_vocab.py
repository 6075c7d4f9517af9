"""The replicas' tokenizers, built from their real sources: the pinned tree's vocabulary GGUFs and
the hash-pinned Gemma-2 package (the end-to-end check through llama.cpp is in test_replica.py)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import tarfile

import pytest

from moebench.errors import IntegrityError
from moebench.models import tokenizer_source, vocab
from moebench.models.pinned import load_pinned_gguf
from moebench.models.replica import replica_vocab

pytestmark = pytest.mark.slow  # reads the pinned llama.cpp tree (fetched from PyPI once)

PIN = "offline"


@pytest.fixture(scope="module")
def gguf(module_cfg):
    return load_pinned_gguf(module_cfg, PIN)


@pytest.fixture(scope="module")
def vocabs(module_cfg, gguf) -> dict[str, vocab.Vocab]:
    return {model_id: replica_vocab(gguf, spec, tokenizer_source.tokenizer_source(module_cfg, model_id, PIN))
            for model_id, spec in module_cfg.models.models.items()}


def test_every_vocabulary_has_the_models_size_and_unique_tokens(module_cfg, vocabs):
    for model_id, spec in module_cfg.models.models.items():
        v = vocabs[model_id]
        assert len(v) == len(v.token_types) == spec.hparams.vocab_size == spec.tiny_hparams.vocab_size, model_id
        assert len(set(v.tokens)) == len(v), model_id
        assert all(0 <= i < len(v) for i in v.special_ids.values()), model_id


def test_special_tokens_are_the_models_own(vocabs):
    llama, qwen = vocabs["llama-3.2-1b-instruct-q4km"], vocabs["qwen2.5-1.5b-instruct-q4km"]
    olmoe, gemma = vocabs["olmoe-1b-7b-0924-instruct-q4km"], vocabs["gemma-2-2b-it-q4km"]
    assert (llama.pre, qwen.pre, olmoe.pre, gemma.model) == ("llama-bpe", "qwen2", "olmo", "llama")
    assert llama.tokens[llama.special_ids["bos"]] == "<|begin_of_text|>"
    assert llama.tokens[llama.special_ids["eos"]] == "<|eot_id|>"
    assert llama.tokens[128004] == "<|finetune_right_pad_id|>" and llama.tokens[128010] == "<|python_tag|>"
    assert llama.tokens[-1] == "<|reserved_special_token_247|>"
    assert qwen.tokens[qwen.special_ids["eos"]] == "<|im_end|>" and qwen.tokens[151664] == "<|file_sep|>"
    assert qwen.tokens[151665] == "[PAD151665]" and qwen.token_types[151665] == vocab.TOKEN_UNUSED
    assert qwen.token_types[qwen.tokens.index("<tool_call>")] == vocab.TOKEN_USER_DEFINED
    assert olmoe.tokens[0] == "|||IP_ADDRESS|||" and olmoe.tokens[50279] == "<|endoftext|>"
    assert olmoe.special_ids == {"bos": 50279, "eos": 50279, "padding": 1}
    assert olmoe.tokens[olmoe.special_ids["padding"]] == "<|padding|>"
    assert gemma.tokens[:4] == ["<pad>", "<eos>", "<bos>", "<unk>"] and gemma.special_ids["bos"] == 2
    assert gemma.add_bos is True and gemma.add_space_prefix is False


def test_text_tokens_and_merges_are_the_source_files(module_cfg, gguf, vocabs):
    """Only special tokens and padding are edited: what tokenizes text is the source file's."""
    for model_id, first_special in (("llama-3.2-1b-instruct-q4km", 128000), ("qwen2.5-1.5b-instruct-q4km", 151643)):
        source = tokenizer_source.tokenizer_source(module_cfg, model_id, PIN)
        base = vocab.read_gguf_vocab(gguf, source.path)
        built = vocabs[model_id]
        assert built.tokens[:first_special] == base.tokens[:first_special]
        assert built.token_types[:first_special] == base.token_types[:first_special]
        assert built.merges == base.merges and len(built.merges) in (280147, 151387)
    neox = vocab.read_gguf_vocab(gguf, tokenizer_source.tokenizer_source(
        module_cfg, "olmoe-1b-7b-0924-instruct-q4km", PIN).path)
    olmoe = vocabs["olmoe-1b-7b-0924-instruct-q4km"]
    assert olmoe.tokens[1:50277] == neox.tokens[1:50277] and olmoe.merges == neox.merges


def test_gemma_scores_follow_the_merge_order(vocabs):
    gemma = vocabs["gemma-2-2b-it-q4km"]
    ids = {token: i for i, token in enumerate(gemma.tokens)}
    # "▁the" is one of the first merges of the English text; "▁thermodynamics"-like pieces come much later
    assert gemma.scores[ids["▁the"]] > gemma.scores[ids["▁thermal"]]
    assert gemma.token_types[ids["<0x41>"]] == vocab.TOKEN_BYTE
    assert gemma.token_types[ids["<start_of_turn>"]] == vocab.TOKEN_CONTROL
    assert gemma.scores[ids["<start_of_turn>"]] == vocab.ADDED_TOKEN_SCORE
    # user-defined runs of spaces are stored pre-normalized, as the converter does
    assert "  " in gemma.tokens and "▁▁" not in gemma.tokens


def test_same_files_same_vocabulary(module_cfg, gguf, vocabs):
    model_id = "qwen2.5-1.5b-instruct-q4km"
    spec = module_cfg.models.models[model_id]
    again = replica_vocab(gguf, spec, tokenizer_source.tokenizer_source(module_cfg, model_id, PIN))
    assert again == vocabs[model_id]


def test_a_source_that_is_not_the_recipes_is_refused(module_cfg, gguf):
    """Llama's recipe on Qwen's file: another vocabulary under the expected name stops the replica."""
    llama = module_cfg.models.models["llama-3.2-1b-instruct-q4km"]
    qwen_file = tokenizer_source.tokenizer_source(module_cfg, "qwen2.5-1.5b-instruct-q4km", PIN)
    with pytest.raises(IntegrityError, match="llama-bpe vocabulary"):
        replica_vocab(gguf, llama, qwen_file)


def _package(tmp_path, members: dict[str, bytes]):
    archive = tmp_path / "pkg-1.0.0.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return archive


def _with_package(cfg, archive, sha256, members):
    from moebench.config import TokenizerPackage

    package = TokenizerPackage(url=archive.as_uri(), sha256=sha256, members=members)
    return dataclasses.replace(cfg, lock=cfg.lock.model_copy(update={"tokenizer_packages": {"pkg@1.0.0": package}}))


def test_package_members_come_out_of_the_pinned_archive_only(module_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("MOEBENCH_HOME", str(tmp_path / "home"))
    data = json.dumps({"hello": 1}).encode()
    archive = _package(tmp_path, {"package/models/tokenizer.json": data, "package/other.js": b"x"})
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    cfg = _with_package(module_cfg, archive, digest, {"tokenizer.json": "package/models/tokenizer.json"})
    source = tokenizer_source.package_members(cfg, "pkg@1.0.0")
    assert sorted(p.name for p in source.path.iterdir()) == ["tokenizer.json"]
    assert (source.path / "tokenizer.json").read_bytes() == data
    assert source.files_sha256 == {"tokenizer.json": hashlib.sha256(data).hexdigest()}


def test_package_with_other_bytes_is_refused(module_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("MOEBENCH_HOME", str(tmp_path / "home"))
    archive = _package(tmp_path, {"package/models/tokenizer.json": b"{}"})
    cfg = _with_package(module_cfg, archive, "0" * 64, {"tokenizer.json": "package/models/tokenizer.json"})
    with pytest.raises(IntegrityError, match="sha256 is .*lock pins 0{64}"):
        tokenizer_source.package_members(cfg, "pkg@1.0.0")
