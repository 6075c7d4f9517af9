"""The evidence chain of a set of records: each record's runner binary (its SHA-256, device and pin) to
the build manifest that made it, and that manifest's source tree hash and commit to the record's.

A bundle holds the manifests of exactly the binaries its records name (`backing`), found by SHA-256
among the local builds, the manifests `invoke fleet.reproduce` brings back beside a host's records
(`<raw-dir>/<host>/manifests/`) and any folder the user names; builds no record used stay out. Inside
a bundle, `breaks` names every record whose binary no bundled manifest of its device and pin lists,
or whose manifest's tree hash or commit is not the record's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

# Build-manifest keys a record's provenance must agree with, record key -> manifest key.
CHAIN_KEYS = {"source_tree_hash": "source_tree_hash", "llama_cpp_commit": "commit"}


@dataclass(frozen=True, order=True)
class Binary:
    """What a record names as its runner: device, pin, SHA-256."""
    device: str
    pin: str
    sha256: str

    def describe(self) -> str:
        return f"{self.device}/{self.pin} {self.sha256}"


@dataclass
class Backing:
    """Which manifests back which binaries, and the binaries nothing backs (with the records naming them)."""
    manifests: dict[str, Path] = field(default_factory=dict)  # bundle member folder -> manifest file
    unbacked: dict[Binary, list[str]] = field(default_factory=dict)  # binary -> record origins

    def unbacked_lines(self) -> list[str]:
        return [f"{binary.describe()}: {len(origins)} records ({', '.join(origins[:3])}"
                f"{', …' if len(origins) > 3 else ''})" for binary, origins in sorted(self.unbacked.items())]


def record_binary(record: dict[str, Any]) -> Binary | None:
    prov = record.get("provenance") or {}
    sha = prov.get("binary_sha256")
    return Binary(record["device"], prov.get("llama_cpp_pin") or "", sha) if sha else None


def is_manifest(data: Any) -> bool:
    return isinstance(data, dict) and {"device", "pin", "binaries", "fingerprint"} <= set(data)


def read_manifests(paths: Iterable[Path]) -> list[tuple[Path, dict[str, Any]]]:
    """Every build manifest among `paths` (other JSON files are skipped)."""
    out = []
    for path in sorted(set(paths)):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if is_manifest(data):
            out.append((path, data))
    return out


def listed(manifest: dict[str, Any]) -> set[str]:
    return {entry["sha256"] for entry in manifest["binaries"].values()}


def manifest_of(binary: Binary, manifests: Iterable[tuple[Any, dict[str, Any]]]) -> tuple[Any, dict[str, Any]] | None:
    """The first (key, manifest) of `binary`'s device and pin that lists its SHA-256, or None."""
    return next(((key, m) for key, m in manifests if m["device"] == binary.device and m["pin"] == binary.pin
                 and binary.sha256 in listed(m)), None)


def folder_name(manifest: dict[str, Any], path: Path, taken: set[str]) -> str:
    """The bundle folder of a manifest: `<device>-<pin>`, the build directory's own name where it is one
    (image builds: `image-<image>/<device>-<pin>`), made unique by its first binary's SHA-256 prefix."""
    parent = path.parent
    name = (f"{parent.parent.name}/{parent.name}" if parent.parent.name.startswith("image-")
            else f"{manifest['device']}-{manifest['pin']}")
    if name in taken:
        name += "@" + sorted(listed(manifest))[0][:12]
    return name


def backing(records: Iterable[tuple[dict[str, Any], str]], candidates: list[tuple[Path, dict[str, Any]]]) -> Backing:
    """The manifests that list the records' binaries (device and pin matching), one per binary set."""
    result = Backing()
    chosen: dict[str, tuple[Path, dict[str, Any]]] = {}
    for record, origin in records:
        binary = record_binary(record)
        if binary is None:
            continue
        match = manifest_of(binary, candidates)
        if match is None:
            result.unbacked.setdefault(binary, []).append(origin)
            continue
        key = json.dumps(match[1]["binaries"], sort_keys=True)
        chosen.setdefault(key, match)
    taken: set[str] = set()
    for path, manifest in sorted(chosen.values(), key=lambda pm: (pm[1]["device"], pm[1]["pin"], str(pm[0]))):
        name = folder_name(manifest, path, taken)
        taken.add(name)
        result.manifests[name] = path
    return result


def breaks(records: Iterable[tuple[dict[str, Any], str]], manifests: dict[str, dict[str, Any]]) -> list[str]:
    """One line per record whose chain breaks inside a bundle: no bundled manifest of its device and pin
    lists its binary, or that manifest's tree hash or commit is not the record's."""
    problems: list[str] = []
    for record, origin in records:
        binary = record_binary(record)
        if binary is None:
            continue
        found = manifest_of(binary, manifests.items())
        if found is None:
            problems.append(f"{origin}: binary {binary.describe()} is in no bundled build manifest")
            continue
        name, manifest = found
        for record_key, manifest_key in CHAIN_KEYS.items():
            ours, theirs = record["provenance"].get(record_key), manifest.get(manifest_key)
            if ours != theirs:
                problems.append(f"{origin}: {record_key} {ours} but builds/{name}/manifest.json says {theirs}")
    return problems
