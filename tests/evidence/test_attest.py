"""attest.py: a valid in-toto Statement with a SLSA provenance v1 predicate, signed (DSSE, Ed25519) with a
local key that never leaves its file; a bad signature or an altered payload is refused (exit 2).

Fast tests attest a fake build (a manifest and small "binaries") in an isolated MOEBENCH_HOME.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from moebench.evidence import attest as attest_module
from moebench.evidence.attest import (BUILD_TYPE, PAYLOAD_TYPE, PREDICATE_TYPE, STATEMENT_TYPE, attest, default_key_path,
                             open_envelope, pae, public_key_path, read_attestation, validate_statement)
from moebench.pins.build import MANIFEST_SCHEMA_VERSION, RECIPE_VERSION, build_dir_for
from moebench.config import REPO_ROOT, load_config
from moebench.errors import EXIT_USER_ERROR, IntegrityError, UserError

DEVICE, PIN = "cpu", "offline"
BINARIES = ("llama-bench", "llama-cli", "llama-quantize")


def write_fake_build(home: Path | None = None, seed: bytes = b"", device: str = DEVICE, pin: str = PIN) -> Path:
    """A build directory as build() leaves it (manifest + bin/), under MOEBENCH_HOME or `home`."""
    cfg = load_config()
    build_dir = build_dir_for(device, pin, home)
    (build_dir / "bin").mkdir(parents=True)
    binaries = {}
    for index, name in enumerate(BINARIES):
        path = build_dir / "bin" / name
        path.write_bytes(b"\x7fELF" + bytes([index]) * 4000 + seed)
        path.chmod(0o755)
        binaries[name] = {"path": f"bin/{name}", "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                          "size_bytes": path.stat().st_size}
    pinned = cfg.pin(pin)
    manifest = {
        "schema_version": MANIFEST_SCHEMA_VERSION, "device": device, "pin": pin, "commit": pinned.commit,
        "build_number": None, "source_channel": "pypi_sdist", "source_tree_hash": pinned.tree_hash,
        "archive_sha256": pinned.sources.pypi_sdist.sha256 if pinned.sources.pypi_sdist else None,
        "patch": None, "patch_sha256": None,
        "compiler": {"c": "/usr/bin/cc", "c_version": "cc 12.2.0", "cxx": "/usr/bin/c++", "cxx_version": "c++ 12.2.0"},
        "cmake": "/usr/bin/cmake", "cmake_version": "3.25.1",
        "cmake_flags": ["-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=OFF"], "env": {},
        "source_date_epoch": 315532800, "toolchain_id": "gcc-12.2.0-00000000_cmake-3.25.1_x86_64-linux-gnu",
        "binaries": binaries, "failed_targets": {}, "jobs": 2, "fingerprint": "f" * 64, "build_seconds": 61.5,
        "built_at": "2026-01-02T03:04:05+00:00",
    }
    (build_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return build_dir


def run_invoke(*args: str, home: Path, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess:
    invoke = REPO_ROOT / ".venv" / "bin" / "invoke"
    command = [str(invoke)] if invoke.exists() else [sys.executable, "-m", "invoke"]
    env = {**os.environ, "MOEBENCH_HOME": str(home)}
    return subprocess.run([*command, "-r", str(REPO_ROOT), *args], cwd=cwd, capture_output=True, text=True, env=env,
                          timeout=300)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == EXIT_USER_ERROR, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture
def fake_build(isolated_home) -> Path:
    return write_fake_build()


def decoded(envelope: dict) -> dict:
    return json.loads(base64.b64decode(envelope["payload"]))


def test_attestation_is_a_signed_slsa_v1_statement_of_the_build(fake_build, key_path):
    path, statement, keyid = attest(load_config(), DEVICE, PIN, key_path)
    assert path == fake_build / "attestation.intoto.json"
    envelope = json.loads(path.read_text())
    assert envelope["payloadType"] == PAYLOAD_TYPE and decoded(envelope) == statement
    assert [set(s) for s in envelope["signatures"]] == [{"keyid", "sig", "publicKey"}]
    manifest = json.loads((fake_build / "manifest.json").read_text())

    assert statement["_type"] == STATEMENT_TYPE and statement["predicateType"] == PREDICATE_TYPE
    assert {s["name"]: s["digest"]["sha256"] for s in statement["subject"]} == \
        {name: entry["sha256"] for name, entry in manifest["binaries"].items()}
    definition = statement["predicate"]["buildDefinition"]
    assert definition["buildType"] == BUILD_TYPE and BUILD_TYPE.endswith(f"/v{RECIPE_VERSION}")
    assert definition["externalParameters"] == {"device": DEVICE, "pin": PIN, "cmake_flags": manifest["cmake_flags"]}
    assert definition["internalParameters"]["SOURCE_DATE_EPOCH"] == "315532800"
    deps = {d["name"]: d for d in definition["resolvedDependencies"]}
    assert deps["llama.cpp source archive"]["digest"] == {"sha256": manifest["archive_sha256"]}
    assert deps["llama.cpp source archive"]["uri"].endswith("llama_cpp_python-0.3.6.tar.gz")
    assert deps["llama.cpp source tree"]["digest"] == {"gitTree": manifest["source_tree_hash"],
                                                      "gitCommit": manifest["commit"]}
    assert deps[f"toolchain {manifest['toolchain_id']}"]["uri"].endswith(manifest["toolchain_id"])
    assert deps["moebench build recipe fingerprint"]["digest"] == {"sha256": "f" * 64}
    run = statement["predicate"]["runDetails"]
    assert run["builder"]["id"] == "urn:moebench:builder:bare-host" and run["builder"]["version"]["machine"]
    assert run["metadata"]["startedOn"] == "2026-01-02T03:03:03Z"
    assert run["metadata"]["finishedOn"] == "2026-01-02T03:04:05Z"

    assert read_attestation(path) == (statement, keyid)
    public = serialization.load_pem_public_key(public_key_path(key_path).read_bytes())
    signature = base64.b64decode(envelope["signatures"][0]["sig"])
    public.verify(signature, pae(PAYLOAD_TYPE, base64.b64decode(envelope["payload"])))  # raises if invalid


def test_image_digest_becomes_the_toolchain_dependency(fake_build, key_path, monkeypatch):
    monkeypatch.setenv("MOEBENCH_IMAGE_DIGEST", "sha256:" + "a" * 64)
    _, statement, _ = attest(load_config(), DEVICE, PIN, key_path)
    deps = {d["name"]: d for d in statement["predicate"]["buildDefinition"]["resolvedDependencies"]}
    assert deps["toolchain image"]["digest"] == {"sha256": "a" * 64}
    assert deps["toolchain image"]["annotations"]["toolchain_id"].startswith("gcc-12.2.0")


def test_key_is_created_private_reused_and_never_written_out(fake_build, key_path):
    _, _, first = attest(load_config(), DEVICE, PIN, key_path)
    assert key_path.stat().st_mode & 0o777 == 0o600
    _, _, second = attest(load_config(), DEVICE, PIN, key_path)
    assert first == second
    key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    text = (fake_build / "attestation.intoto.json").read_bytes()
    pem_body = b"".join(key_path.read_bytes().splitlines()[1:-1])
    for secret in (raw, base64.b64encode(raw), raw.hex().encode(), pem_body):
        assert secret not in text
    assert b"PRIVATE" not in text


def test_default_key_lives_in_the_work_directory(fake_build, isolated_home):
    _, _, keyid = attest(load_config(), DEVICE, PIN)
    assert default_key_path() == isolated_home / "keys" / "attest-ed25519.pem"
    assert default_key_path().stat().st_mode & 0o777 == 0o600 and public_key_path(default_key_path()).is_file()
    assert keyid.startswith("sha256:")


def test_key_readable_by_others_is_refused(fake_build, key_path):
    attest(load_config(), DEVICE, PIN, key_path)
    key_path.chmod(0o644)
    with pytest.raises(UserError, match="readable by others"):
        attest(load_config(), DEVICE, PIN, key_path)


def test_tampered_binary_is_not_attested(fake_build, key_path):
    target = fake_build / "bin" / "llama-cli"
    target.write_bytes(target.read_bytes() + b"x")
    with pytest.raises(IntegrityError) as caught:
        attest(load_config(), DEVICE, PIN, key_path)
    assert caught.value.where == str(target)
    assert not (fake_build / "attestation.intoto.json").exists()


def test_keyless_signing_is_refused_with_the_command_to_run(fake_build, key_path):
    with pytest.raises(UserError) as caught:
        attest(load_config(), DEVICE, PIN, key_path, sign_with="sigstore")
    line = caught.value.one_line()
    assert "Fulcio" in line and "Rekor" in line and "cosign attest-blob" in line
    assert not (fake_build / "attestation.intoto.json").exists() and not key_path.exists()


def test_unknown_predicate_field_is_refused():
    statement = {"_type": STATEMENT_TYPE, "subject": [{"name": "x", "digest": {"sha256": "ab"}}],
                 "predicateType": PREDICATE_TYPE,
                 "predicate": {"buildDefinition": {"buildType": BUILD_TYPE, "buildTypo": 1}}}
    with pytest.raises(UserError, match="buildTypo"):
        validate_statement(statement, "x.json")
    with pytest.raises(UserError, match="subject"):
        validate_statement({**statement, "subject": []}, "x.json")


def _resigned(envelope: dict, payload: bytes, key: Ed25519PrivateKey) -> dict:
    signed = attest_module.sign({}, key)
    signature = key.sign(pae(PAYLOAD_TYPE, payload))
    return {**envelope, "payload": base64.b64encode(payload).decode(),
            "signatures": [{**signed["signatures"][0], "sig": base64.b64encode(signature).decode()}]}


@pytest.mark.parametrize("tamper", ["payload changed", "signed by another key", "another key's id"])
def test_bad_signature_exits_2(fake_build, key_path, tamper, isolated_home):
    path, statement, _ = attest(load_config(), DEVICE, PIN, key_path)
    envelope = json.loads(path.read_text())
    payload = base64.b64decode(envelope["payload"]).replace(statement["subject"][0]["digest"]["sha256"].encode(),
                                                            b"0" * 64)
    other = Ed25519PrivateKey.generate()
    if tamper == "payload changed":
        envelope["payload"] = base64.b64encode(payload).decode()
    elif tamper == "signed by another key":
        forged = _resigned(envelope, payload, other)
        envelope["payload"], envelope["signatures"][0]["sig"] = forged["payload"], forged["signatures"][0]["sig"]
    else:
        envelope = _resigned(envelope, payload, other)
        envelope["signatures"][0]["keyid"] = json.loads(path.read_text())["signatures"][0]["keyid"]
    path.write_text(json.dumps(envelope))
    with pytest.raises(IntegrityError, match="bad signature"):
        open_envelope(envelope, path)
    line = one_error_line(run_invoke("compare", str(path), str(fake_build), home=isolated_home))
    assert str(path) in line and "bad signature" in line


def test_a_trusted_key_list_refuses_other_signers(fake_build, key_path):
    path, _, keyid = attest(load_config(), DEVICE, PIN, key_path)
    assert read_attestation(path, frozenset({keyid}))[1] == keyid
    with pytest.raises(IntegrityError, match="not among the trusted keys"):
        read_attestation(path, frozenset({"sha256:" + "0" * 64}))


def test_compare_with_trusted_keys_refuses_another_labs_key(fake_build, key_path, tmp_path, isolated_home):
    path, _, _ = attest(load_config(), DEVICE, PIN, key_path)
    assert run_invoke("compare", str(path), str(fake_build), "--trusted-keys", str(public_key_path(key_path)),
                      home=isolated_home).returncode == 0
    stranger = tmp_path / "stranger.pub.pem"
    stranger.write_bytes(Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    line = one_error_line(run_invoke("compare", str(path), str(fake_build), "--trusted-keys", str(stranger),
                                     home=isolated_home))
    assert "not among the trusted keys" in line
