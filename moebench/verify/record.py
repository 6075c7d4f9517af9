"""Gather what the stages verified and hand it to `lockfile`, the one writer of configs/lock.yaml.

Stages (source, build, models) measure and verify; they never write a pin. Writing one is the
tasks layer's decision, and this module is where that layer turns a stage's result into `lockfile`
calls. Living outside both the stages and `lockfile`, it lets `lockfile` import nothing of moebench
but config and errors and keeps a stage from importing another just to write the lock: the import
circle build -> source -> lockfile -> build cannot form. Only tasks.py and reproduce.py import it.
"""

from __future__ import annotations

from typing import Any, Iterable

from moebench.pins import lockfile, source
from moebench.pins.build import load_manifest, verify_binaries
from moebench.config import Config, load_config
from moebench.errors import UserError
from moebench.hashing import sha256_files, tree_entries, tree_hash_of_entries
from moebench.models import registry
from moebench.models.download import lock_model_metadata


def record_source_pins(cfg: Config, manifest: dict[str, Any]) -> list[str]:
    """After a build: record the source pins of `llama_cpp.<pin>` that lock.yaml still has null,
    measured by the build's verified source fetch; one line per value written."""
    pin_name = manifest["pin"]
    pin = cfg.pin(pin_name)
    lines = []
    if pin.tree_hash is None:
        tree_hash = manifest["source_tree_hash"]
        path = lockfile.record_tree_hash(pin_name, tree_hash, cfg.root)
        lines.append(f"recorded llama_cpp.{pin_name}.tree_hash = {tree_hash} in {path}")
    lines += _record_listing(cfg, pin_name, manifest["source_tree_hash"])
    archive = pin.sources.archive
    # An archive whose sha256 is null is fetched only when the tree hash is pinned (source.py refuses
    # otherwise), and its extracted tree must then equal that pin: the archive was proven by the
    # pinned tree hash. Requiring the manifest's tree to equal the pin (not one recorded just above)
    # keeps a first sighting of both from ever being written as a proof.
    if (manifest["source_channel"] == "archive" and archive is not None and archive.sha256 is None
            and pin.tree_hash is not None and manifest["source_tree_hash"] == pin.tree_hash):
        digest = manifest["archive_sha256"]
        path = lockfile.record_archive_sha256(pin_name, digest, cfg.root)
        lines.append(f"recorded llama_cpp.{pin_name}.sources.archive.sha256 = {digest} in {path} "
                     f"(its tree matches the pinned tree_hash)")
    return lines


def _record_listing(cfg: Config, pin_name: str, built_tree_hash: str) -> list[str]:
    """Write the listing of the pin's tree (configs/trees/) where there is none and the fetched tree
    hashes, once more, to what lock.yaml now pins; one line if written."""
    pin = load_config(cfg.root).pin(pin_name)  # as lock.yaml holds it now
    tree = source.tree_dir(pin_name, pin.commit)
    if built_tree_hash != pin.tree_hash or source.pinned_listing(cfg, pin_name, pin) is not None or not tree.is_dir():
        return []
    entries = tree_entries(tree, exclude=pin.unhashed_paths)
    if tree_hash_of_entries(entries) != pin.tree_hash:
        return []
    return [f"recorded the listing of llama_cpp.{pin_name}'s tree in {source.write_listing(cfg, pin_name, pin, entries)}"]


def lock_from_measurements(cfg: Config, what: str, device: str, pin: str, scale: str = "tiny") -> Iterable[str]:
    """`invoke lock`: record hashes measured from verified local files; yields one line per pin written."""
    if what == "binaries":
        return _lock_binaries(cfg, device, pin)
    if what == "models":
        return _lock_models(cfg)
    if what == "replicas":
        return _lock_replicas(cfg, scale, pin)
    raise UserError("invoke lock", f"unknown target {what!r}", "use one of: binaries, models, replicas")


def _lock_binaries(cfg: Config, device: str, pin: str) -> list[str]:
    manifest = load_manifest(device, pin)
    verify_binaries(manifest)  # never pin a binary that no longer matches its own build
    hashes = {name: entry["sha256"] for name, entry in manifest["binaries"].items()}
    path = lockfile.record_binaries(device, pin, manifest["toolchain_id"], hashes, cfg.root)
    key = lockfile.binaries_key(device, pin, manifest["toolchain_id"])
    return [f"{sha}  {name}" for name, sha in sorted(hashes.items())] + [f"recorded binaries[{key!r}] in {path}"]


def _lock_models(cfg: Config) -> list[str]:
    lines = []
    for model_id in cfg.models.models:
        meta = lock_model_metadata(cfg, model_id)
        path = lockfile.record_model_hub(model_id, meta, cfg.root)
        lines.append(f"{meta['sha256']}  {model_id}  revision {meta['revision']}  {meta['size_bytes']} bytes -> {path}")
    return lines


def _lock_replicas(cfg: Config, scale: str, pin: str) -> list[str]:
    refs = [registry.resolve(cfg, model_id, "replica", scale, pin) for model_id in cfg.models.models]
    present = [ref for ref in refs if ref.path.is_file()]
    if not present:
        raise UserError(f"replica-{scale}", "no replica files to record",
                        f"run `invoke models.replica --scale {scale}` first")
    digests = sha256_files(ref.path for ref in present)
    hashes = {ref.model_id: digests[ref.path] for ref in present}
    path = lockfile.record_replicas(f"{scale}/{pin}", hashes, cfg.root)
    return [f"{sha}  {model_id}" for model_id, sha in hashes.items()] + [f"recorded replicas['{scale}/{pin}'] in {path}"]
