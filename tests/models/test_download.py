"""download_model / lock_model_metadata against a local hub (tests/models/conftest.py)."""

from __future__ import annotations

import hashlib
import logging

import pytest
from local_hub import COMMIT, FILENAME, FIXTURE, REPO, with_hub

from moebench.errors import ConfigError, IntegrityError, UserError
from moebench.models.download import download_model, hashes_file, lock_model_metadata

MODEL = "olmoe-1b-7b-0924-instruct-q4km"
SHA = hashlib.sha256(FIXTURE.read_bytes()).hexdigest()
SIZE = FIXTURE.stat().st_size
TOKEN = "hf_moebenchTestTokenNeverRecorded1234"


def pinned(cfg):
    return with_hub(cfg, MODEL, revision=COMMIT, sha256=SHA, size_bytes=SIZE)


def test_download_verifies_and_records(cfg, hub, kit_dirs):
    models_dir, _ = kit_dirs
    result = download_model(pinned(cfg), MODEL)
    assert result.sha256 == SHA and result.size_bytes == SIZE
    assert result.path.read_bytes() == FIXTURE.read_bytes()
    assert result.path.is_relative_to(models_dir / "hf-cache")
    assert result.path.parent.name == COMMIT
    line = f"{SHA}  {MODEL}  {REPO}@{COMMIT}/{FILENAME}"
    assert hashes_file().read_text().splitlines() == [line]
    # A second call finds the file in the cache (no request) and adds no duplicate line.
    seen = len(hub.requests)
    again = download_model(pinned(cfg), MODEL)
    assert again.path == result.path and len(hub.requests) == seen
    assert hashes_file().read_text().splitlines() == [line]
    heads = [r for r in hub.requests if r["method"] == "HEAD"]
    assert heads and all(f"/resolve/{COMMIT}/" in r["path"] for r in heads)


def test_download_resumes_a_partial_file(cfg, hub, kit_dirs):
    models_dir, _ = kit_dirs
    blob = models_dir / "hf-cache" / f"models--{REPO.replace('/', '--')}" / "blobs" / SHA
    blob.parent.mkdir(parents=True)
    half = SIZE // 2
    (blob.parent / f"{SHA}.incomplete").write_bytes(FIXTURE.read_bytes()[:half])
    result = download_model(pinned(cfg), MODEL)
    assert result.sha256 == SHA
    gets = [r for r in hub.requests if r["method"] == "GET" and r["path"].startswith("/cdn/")]
    assert gets[-1]["headers"].get("range") == f"bytes={half}-"


def test_corrupted_bytes_are_refused_and_nothing_is_deleted(cfg, hub, kit_dirs):
    models_dir, processed = kit_dirs
    users_file = models_dir / "hf-cache" / "my-notes.txt"
    users_file.parent.mkdir(parents=True)
    users_file.write_text("keep me")
    hub.corrupt = True
    with pytest.raises(IntegrityError) as caught:
        download_model(pinned(cfg), MODEL)
    err = caught.value
    bad = hashlib.sha256(hub.served_bytes(FILENAME)).hexdigest()
    assert SHA in err.problem and bad in err.problem and FILENAME in err.where
    assert err.one_line().startswith("error: ") and "fix:" in err.one_line()
    assert users_file.read_text() == "keep me"
    kept = list((models_dir / "hf-cache").rglob(FILENAME))
    assert kept and kept[0].read_bytes() == hub.served_bytes(FILENAME)
    assert not (processed / "model_hashes.txt").exists()


def test_hub_reporting_another_hash_is_refused_before_download(cfg, hub, kit_dirs):
    other = "a" * 64
    with pytest.raises(IntegrityError) as caught:
        download_model(with_hub(cfg, MODEL, revision=COMMIT, sha256=other, size_bytes=SIZE), MODEL)
    assert other in caught.value.problem and SHA in caught.value.problem
    assert not [r for r in hub.requests if r["path"].startswith("/cdn/")]


@pytest.mark.parametrize("missing", ["revision", "sha256"])
def test_unpinned_is_refused_without_a_request(cfg, hub, kit_dirs, missing):
    fields = {"revision": COMMIT, "sha256": SHA, missing: None}
    with pytest.raises(ConfigError) as caught:
        download_model(with_hub(cfg, MODEL, **fields), MODEL)
    assert caught.value.key == f"models.{MODEL}.hub.{missing}"
    assert "invoke lock models" in caught.value.fix
    assert hub.requests == []


def test_allow_unpinned_follows_the_branch_and_records_the_commit(cfg, hub, kit_dirs):
    result = download_model(with_hub(cfg, MODEL, revision=None, sha256=None), MODEL, allow_unpinned=True)
    assert result.sha256 == SHA and result.revision == COMMIT
    assert f"{REPO}@{COMMIT}/{FILENAME}" in hashes_file().read_text()


def test_unknown_revision_is_a_user_error(cfg, hub, kit_dirs):
    with pytest.raises(UserError) as caught:
        download_model(with_hub(cfg, MODEL, revision="f" * 40, sha256=SHA), MODEL)
    assert "revision not found" in caught.value.problem


def test_lock_model_metadata_reads_the_served_pins(cfg, hub):
    meta = lock_model_metadata(with_hub(cfg, MODEL, revision=None, sha256=None), MODEL)
    assert meta == {"revision": COMMIT, "sha256": SHA, "size_bytes": SIZE}
    call = [r for r in hub.requests if r["path"].startswith("/api/models/")][-1]
    assert call["path"] == f"/api/models/{REPO}/revision/main?blobs=True"


def test_token_is_sent_but_never_recorded(cfg, hub, kit_dirs, caplog, capsys, monkeypatch):
    caplog.set_level(logging.DEBUG)
    logging.getLogger("huggingface_hub").setLevel(logging.DEBUG)
    monkeypatch.setenv("HF_TOKEN", TOKEN)  # the standard config: what huggingface_hub.get_token() reads
    result = download_model(pinned(cfg), MODEL)
    lock_model_metadata(pinned(cfg), MODEL)
    hub.corrupt = True
    with pytest.raises(IntegrityError) as caught:
        download_model(pinned(cfg), MODEL, out_dir=kit_dirs[0] / "second-cache", token=TOKEN)
    sent = {r["headers"].get("authorization") for r in hub.requests}
    assert sent == {f"Bearer {TOKEN}"}
    out, err = capsys.readouterr()
    recorded = [hashes_file().read_text(), caplog.text, out, err, str(caught.value), repr(result)]
    assert not any(TOKEN in text for text in recorded)
    for path in kit_dirs[0].rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
