"""resolve() maps (model, source, scale) to a path and its pin; verify() checks the bytes."""

from __future__ import annotations

import dataclasses

import pytest

from moebench.errors import ConfigError, IntegrityError, UserError
from moebench.hashing import sha256_bytes
from moebench.models import registry

MODEL = "gemma-2-2b-it-q4km"


def test_replica_path_and_pin(cfg, kit_dirs):
    models_dir, _ = kit_dirs
    lock = cfg.lock.model_copy(update={"replicas": {"tiny/offline": {MODEL: "ab" * 32}}})
    ref = registry.resolve(dataclasses.replace(cfg, lock=lock), MODEL, "replica", "tiny")
    assert ref.path == models_dir / "replica-tiny" / f"{MODEL}.Q4_K_M.gguf"
    assert ref.expected_sha256 == "ab" * 32 and ref.label == "replica-tiny"
    assert registry.resolve(cfg, MODEL, "replica", "full", pin="paper").expected_sha256 is None


def test_real_path_follows_the_hf_cache_layout(cfg, kit_dirs):
    models_dir, _ = kit_dirs
    hub = cfg.models.models[MODEL].hub
    ref = registry.resolve(cfg, MODEL, "real", None)
    assert ref.path == (models_dir / "hf-cache" / f"models--{hub.repo.replace('/', '--')}" / "snapshots"
                        / (hub.revision or "main") / hub.filename)
    assert ref.expected_sha256 == hub.sha256 and ref.scale is None


def test_unknown_names_are_user_errors(cfg):
    with pytest.raises(ConfigError):
        registry.resolve(cfg, "no-such-model", "replica", "tiny")
    with pytest.raises(UserError):
        registry.resolve(cfg, MODEL, "replica", "huge")
    with pytest.raises(UserError):
        registry.resolve(cfg, MODEL, "cloud", "tiny")


def test_verify_checks_bytes_against_the_pin(cfg, kit_dirs, tmp_path):
    ref = registry.resolve(cfg, MODEL, "replica", "tiny")
    with pytest.raises(UserError, match="models.replica --scale tiny"):
        registry.verify(ref)
    ref.path.parent.mkdir(parents=True)
    ref.path.write_bytes(b"GGUF")
    good = dataclasses.replace(ref, expected_sha256=sha256_bytes(b"GGUF"))
    assert registry.verify(good) == sha256_bytes(b"GGUF")
    with pytest.raises(IntegrityError) as caught:
        registry.verify(dataclasses.replace(ref, expected_sha256="0" * 64))
    assert sha256_bytes(b"GGUF") in caught.value.problem and "0" * 64 in caught.value.problem
    with pytest.raises(IntegrityError):
        registry.verify(dataclasses.replace(ref, expected_sha256=None))
    assert registry.verify(dataclasses.replace(ref, expected_sha256=None), allow_unpinned=True)
