"""`invoke attest`: an in-toto Statement with a SLSA provenance v1 predicate for one build, signed.

The statement names every binary of a build manifest with its SHA-256 (subjects) and what decided
those bytes (resolved dependencies): the source archive and the source tree (git tree id), the
toolchain image ID (or the toolchain id on a bare host) and the build recipe's fingerprint. The
builder is the host the build ran on. It is checked with the in-toto-attestation bindings: the
Statement's own validator, and the predicate parsed strictly into the SLSA provenance v1 message, so
a misspelt or unknown field is refused before anything is signed.

Signing is local: an Ed25519 key (created on first use with mode 0600, its public key written beside
it) signs the DSSE pre-authentication encoding of the statement. The envelope carries the key id
(SHA-256 of the raw public key) and the public key, never the private key. Keyless signing
(Sigstore: a Fulcio certificate, a Rekor log entry) needs the network; `sign_with="sigstore"` is
refused with the cosign command to run where the network is reachable.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from google.protobuf import json_format
from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
from in_toto_attestation.v1.statement import Statement

from moebench import paths
from moebench.pins.build import RECIPE_VERSION, build_dir_for, load_manifest, verify_binaries
from moebench.config import Config
from moebench.errors import IntegrityError, UserError
from moebench.files import write_atomic

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
BUILD_TYPE = f"https://moebench.invalid/build-recipe/v{RECIPE_VERSION}"
ATTESTATION_NAME = "attestation.intoto.json"
KEY_NAME = "attest-ed25519.pem"
SIGNERS = ("ed25519", "sigstore")


def default_key_path() -> Path:
    return paths.work_dir() / "keys" / KEY_NAME


def public_key_path(key_path: Path) -> Path:
    return key_path.with_name(key_path.name.removesuffix(".pem") + ".pub.pem")


def attestation_path(device: str, pin: str, work_root: Path | None = None) -> Path:
    return build_dir_for(device, pin, work_root) / ATTESTATION_NAME


# --- keys --------------------------------------------------------------------------------------------

def load_or_create_key(key_path: Path) -> Ed25519PrivateKey:
    """The lab's signing key; created (mode 0600, public key beside it) when the file does not exist."""
    key_path = Path(key_path)
    if not key_path.exists():
        key_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        public_key_path(key_path).write_text(public_pem(key.public_key()), encoding="utf-8")
        return key
    if key_path.stat().st_mode & 0o077:
        raise UserError(key_path, f"signing key is readable by others (mode {key_path.stat().st_mode & 0o777:o})",
                        f"chmod 600 {key_path}")
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise UserError(key_path, f"not an unencrypted PEM private key ({exc})",
                        "give --key an Ed25519 key in PKCS#8 PEM, or a path that does not exist yet") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise UserError(key_path, f"the key is {type(key).__name__}, attestations are signed with Ed25519",
                        "give --key an Ed25519 key, or a path that does not exist yet (one is created)")
    return key


def public_pem(public: Ed25519PublicKey) -> str:
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "sha256:" + hashlib.sha256(raw).hexdigest()


# --- the statement -----------------------------------------------------------------------------------

def _rfc3339(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _archive_uri(cfg: Config, manifest: dict[str, Any]) -> str:
    sources = cfg.pin(manifest["pin"]).sources
    if manifest.get("source_channel") == "pypi_sdist" and sources.pypi_sdist is not None:
        return sources.pypi_sdist.url
    if sources.archive is not None:
        return sources.archive.url
    return f"llama.cpp@{manifest['commit']}"


def _toolchain_dependency(manifest: dict[str, Any], image_digest: str | None) -> dict[str, Any]:
    if image_digest:
        algorithm, _, value = image_digest.partition(":")
        return {"name": "toolchain image", "digest": {algorithm: value},
                "annotations": {"toolchain_id": manifest["toolchain_id"]}}
    return {"name": f"toolchain {manifest['toolchain_id']}", "uri": f"urn:moebench:toolchain:{manifest['toolchain_id']}",
            "annotations": {"c_version": manifest["compiler"].get("c_version", ""),
                            "cxx_version": manifest["compiler"].get("cxx_version", ""),
                            "cmake_version": manifest.get("cmake_version", "")}}


def statement(cfg: Config, manifest: dict[str, Any], image_digest: str | None, host: dict[str, Any],
              kit_commit: str | None) -> dict[str, Any]:
    """The in-toto Statement (as JSON data) of one build manifest."""
    finished = datetime.fromisoformat(manifest["built_at"])
    started = finished - timedelta(seconds=float(manifest.get("build_seconds") or 0))
    dependencies = [
        {"name": "llama.cpp source archive", "uri": _archive_uri(cfg, manifest),
         "digest": {"sha256": manifest["archive_sha256"]}} if manifest.get("archive_sha256") else None,
        {"name": "llama.cpp source tree", "uri": f"git+https://github.com/ggerganov/llama.cpp@{manifest['commit']}",
         "digest": {"gitTree": manifest["source_tree_hash"], "gitCommit": manifest["commit"]}},
        _toolchain_dependency(manifest, image_digest),
        {"name": "moebench build recipe fingerprint", "digest": {"sha256": manifest["fingerprint"]}},
        {"name": "patch", "uri": manifest["patch"], "digest": {"sha256": manifest["patch_sha256"]}}
        if manifest.get("patch") else None,
    ]
    image = paths.running_image()
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": name, "digest": {"sha256": entry["sha256"]}}
                    for name, entry in sorted(manifest["binaries"].items())],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {"device": manifest["device"], "pin": manifest["pin"],
                                       "cmake_flags": list(manifest["cmake_flags"])},
                "internalParameters": {"SOURCE_DATE_EPOCH": str(manifest["source_date_epoch"]),
                                       "toolchain_id": manifest["toolchain_id"],
                                       "build_number": manifest.get("build_number")},
                "resolvedDependencies": [d for d in dependencies if d is not None],
            },
            "runDetails": {
                "builder": {"id": f"urn:moebench:builder:{'image:' + image if image else 'bare-host'}",
                            "version": {"moebench_commit": kit_commit or "unknown",
                                        **{k: str(v) for k, v in sorted(host.items()) if v is not None}}},
                "metadata": {"invocationId": f"{manifest['device']}-{manifest['pin']}-{manifest['fingerprint'][:16]}",
                             "startedOn": _rfc3339(started), "finishedOn": _rfc3339(finished)},
            },
        },
    }


def validate_statement(data: dict[str, Any], where: str | Path) -> None:
    """The in-toto Statement validator, and the predicate parsed strictly as SLSA provenance v1."""
    try:
        parsed = json_format.ParseDict(data, Statement([], "", {}).pb)
        Statement.copy_from_pb(parsed).validate()
        if data.get("predicateType") != PREDICATE_TYPE:
            raise ValueError(f"predicateType is {data.get('predicateType')!r}, expected {PREDICATE_TYPE}")
        json_format.ParseDict(data["predicate"], provenance_pb2.Provenance())
    except (json_format.ParseError, ValueError, KeyError, TypeError) as exc:
        raise UserError(where, f"not an in-toto v1 Statement with a SLSA provenance v1 predicate: {exc}",
                        "regenerate it with: invoke attest") from None


# --- DSSE --------------------------------------------------------------------------------------------

def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: what is signed, so the type cannot be swapped."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)


def sign(data: dict[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    payload = (json.dumps(data, indent=None, sort_keys=True, separators=(",", ":")) + "\n").encode()
    public = key.public_key()
    signature = key.sign(pae(PAYLOAD_TYPE, payload))
    return {"payloadType": PAYLOAD_TYPE, "payload": base64.b64encode(payload).decode(),
            "signatures": [{"keyid": key_id(public), "sig": base64.b64encode(signature).decode(),
                            "publicKey": public_pem(public)}]}


def open_envelope(envelope: Any, where: str | Path,
                  trusted_keyids: frozenset[str] = frozenset()) -> tuple[dict[str, Any], str]:
    """(statement, signer key id) of a signed envelope; IntegrityError when no signature verifies."""
    try:
        payload = base64.b64decode(envelope["payload"], validate=True)
        payload_type = envelope["payloadType"]
        signatures = list(envelope["signatures"])
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(where, f"not a DSSE envelope ({exc.__class__.__name__}: {exc})",
                        "give an attestation written by: invoke attest") from None
    if payload_type != PAYLOAD_TYPE:
        raise UserError(where, f"payloadType is {payload_type!r}, expected {PAYLOAD_TYPE}", "give an in-toto attestation")
    problems = []
    for entry in signatures:
        try:
            public = serialization.load_pem_public_key(str(entry["publicKey"]).encode())
            if not isinstance(public, Ed25519PublicKey):
                raise ValueError("not an Ed25519 public key")
            if key_id(public) != entry["keyid"]:
                raise ValueError(f"keyid {entry['keyid']} is not the public key's ({key_id(public)})")
            public.verify(base64.b64decode(entry["sig"], validate=True), pae(payload_type, payload))
        except InvalidSignature:
            problems.append(f"signature of key {entry.get('keyid')} does not verify")
            continue
        except (KeyError, TypeError, ValueError) as exc:
            problems.append(str(exc))
            continue
        if trusted_keyids and entry["keyid"] not in trusted_keyids:
            problems.append(f"signed by {entry['keyid']}, which is not among the trusted keys")
            continue
        try:
            data = json.loads(payload)
        except json.JSONDecodeError as exc:
            raise UserError(where, f"signed payload is not JSON ({exc})", "regenerate it with: invoke attest") from None
        validate_statement(data, where)
        return data, entry["keyid"]
    raise IntegrityError(where, "bad signature: " + ("; ".join(problems) or "the envelope has no signature"),
                         "the attestation was altered after signing, or signed by another key; "
                         "ask its lab for the original")


def read_attestation(path: Path, trusted_keyids: frozenset[str] = frozenset()) -> tuple[dict[str, Any], str]:
    path = Path(path)
    try:
        envelope = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(path, f"cannot read the attestation ({exc})", "give the file invoke attest wrote") from None
    return open_envelope(envelope, path, trusted_keyids)


# --- the task ----------------------------------------------------------------------------------------

def refuse_keyless(output: Path) -> None:
    raise UserError("--sign-with sigstore", "keyless signing needs network access to Sigstore's Fulcio (a "
                    "certificate for your identity) and Rekor (a public log entry), which this kit never reaches",
                    f"sign with the lab's key (the default, --sign-with ed25519); then, where the network is "
                    f"reachable: cosign attest-blob --type slsaprovenance1 --predicate <the `predicate` of {output}> "
                    f"--bundle {output.with_suffix('.sigstore.json')} <binary>")


def attest(cfg: Config, device: str, pin: str, key_path: Path | None = None, output: Path | None = None,
           work_root: Path | None = None, sign_with: str = "ed25519") -> tuple[Path, dict[str, Any], str]:
    """Sign a statement of the build `device`/`pin` (binaries re-hashed first); (path, statement, key id)."""
    from moebench.run.provenance import host_info, image_digest, kit_state

    output = Path(output) if output else attestation_path(device, pin, work_root)
    if sign_with not in SIGNERS:
        raise UserError("--sign-with", f"unknown signer {sign_with!r}", f"use one of: {', '.join(SIGNERS)}")
    if sign_with == "sigstore":
        refuse_keyless(output)
    manifest = load_manifest(device, pin, work_root)
    verify_binaries(manifest, build_dir_for(device, pin, work_root))
    host = {k: v for k, v in host_info().items() if k != "python"}
    data = statement(cfg, manifest, image_digest()[0], host, kit_state()[0])
    validate_statement(data, output)
    key = load_or_create_key(Path(key_path) if key_path else default_key_path())
    envelope = sign(data, key)
    write_atomic(output, json.dumps(envelope, indent=2) + "\n")
    return output, data, envelope["signatures"][0]["keyid"]
