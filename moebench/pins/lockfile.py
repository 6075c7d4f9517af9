"""Read, change and write configs/lock.yaml (and the pins of configs/models.yaml).

A change that only replaces existing scalars (a `tree_hash: null` becoming a hash) is made in
place on the text, so every comment survives. Any other change keeps the file's leading comment
block and rewrites the rest with `yaml.safe_dump` (key order kept). Both go through a temporary
file and `os.replace`, and then the whole config directory is reloaded through
`config.load_config`: a write that would leave the kit unloadable is rolled back and raised.

This is the only module that writes those files. Stages return what they verified and
`moebench.verify.record` (called from the tasks layer) hands it to the `record_*` functions here; so that
this module sits on no import circle, it imports nothing of moebench but `config` and `errors`.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Callable

import yaml

from moebench.config import CONFIG_DIR, load_config, read_yaml
from moebench.errors import ConfigError


def lock_file(config_dir: Path | None = None) -> Path:
    return Path(config_dir or CONFIG_DIR) / "lock.yaml"


def _header(text: str) -> str:
    """The leading comment lines (and blank lines between them) of a YAML file."""
    lines = []
    for line in text.splitlines(keepends=True):
        if line.startswith("#") or not line.strip():
            lines.append(line)
        else:
            break
    return "".join(lines)


def update_yaml(path: Path, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Apply `change` to the mapping in `path`, write it back atomically and prove the configs still load."""
    path = Path(path)
    old_text = path.read_text(encoding="utf-8")
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(path, "file is empty or not a mapping", "restore the file from git")
    before = copy.deepcopy(data)
    change(data)
    new_text = _edit_scalars_in_place(old_text, before, data)
    if new_text is None:
        new_text = _replace_sections_in_place(old_text, before, data)
    if new_text is None:
        body = yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True, width=100)
        new_text = _header(old_text) + body
    _replace(path, new_text)
    try:
        load_config(path.parent)
    except ConfigError:
        _replace(path, old_text)
        raise
    return data


def _scalar_changes(old: Any, new: Any, where: tuple = ()) -> list[tuple[tuple, Any]] | None:
    """[(key path, new value)] when `new` differs from `old` only in scalar values; else None."""
    if isinstance(old, dict) and isinstance(new, dict):
        if list(old) != list(new):
            return None
        changes: list[tuple[tuple, Any]] = []
        for key in old:
            sub = _scalar_changes(old[key], new[key], where + (key,))
            if sub is None:
                return None
            changes += sub
        return changes
    if isinstance(old, (dict, list)) or isinstance(new, (dict, list)):
        return None if old != new else []
    return [] if old == new else [(where, new)]


def _edit_scalars_in_place(text: str, old: dict[str, Any], new: dict[str, Any]) -> str | None:
    changes = _scalar_changes(old, new)
    if not changes:
        return None if changes is None else text
    lines = text.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    edits = []
    for key_path, value in changes:
        node = yaml.compose(text)
        for key in key_path:
            node = next((v for k, v in node.value if k.value == key), None)
            if node is None:
                return None
        if not isinstance(node, yaml.ScalarNode) or node.start_mark.line != node.end_mark.line:
            return None
        rendered = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
        rendered = rendered.removesuffix("...").strip()
        start = offsets[node.start_mark.line] + node.start_mark.column
        end = offsets[node.end_mark.line] + node.end_mark.column
        edits.append((start, end, rendered))
    for start, end, rendered in sorted(edits, reverse=True):
        text = text[:start] + rendered + text[end:]
    return text


def _replace_sections_in_place(text: str, old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """Rewrite only the changed top-level sections (e.g. `binaries:`), keeping the rest of the text."""
    if list(old) != list(new):
        return None
    root = yaml.compose(text)
    lines = text.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    edits = []
    for key_node, value_node in root.value:
        key = key_node.value
        if old[key] == new[key]:
            continue
        start = offsets[key_node.start_mark.line]
        end_line, end_col = value_node.end_mark.line, value_node.end_mark.column
        end = offsets[end_line] if end_col == 0 else offsets[min(end_line + 1, len(lines))]
        section = yaml.safe_dump({key: new[key]}, sort_keys=False, default_flow_style=False, allow_unicode=True,
                                 width=100)
        edits.append((start, end, section))
    for start, end, section in sorted(edits, reverse=True):
        text = text[:start] + section + text[end:]
    return text


def _replace(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _pin_entry(data: dict[str, Any], path: Path, pin: str) -> dict[str, Any]:
    pins = data.get("llama_cpp") or {}
    if pin not in pins:
        raise ConfigError(path, f"unknown llama.cpp pin {pin!r}", f"use one of: {', '.join(pins)}", key="llama_cpp")
    return pins[pin]


def record_tree_hash(pin: str, tree_hash: str, config_dir: Path | None = None) -> Path:
    """Set `llama_cpp.<pin>.tree_hash`."""
    path = lock_file(config_dir)
    update_yaml(path, lambda data: _pin_entry(data, path, pin).__setitem__("tree_hash", tree_hash))
    return path


def record_archive_sha256(pin: str, sha256: str, config_dir: Path | None = None) -> Path:
    """Set `llama_cpp.<pin>.sources.archive.sha256`."""
    path = lock_file(config_dir)

    def change(data: dict[str, Any]) -> None:
        archive = (_pin_entry(data, path, pin).get("sources") or {}).get("archive")
        if archive is None:
            raise ConfigError(path, f"pin {pin!r} has no archive source", "add sources.archive to the pin",
                              key=f"llama_cpp.{pin}.sources")
        archive["sha256"] = sha256

    update_yaml(path, change)
    return path


def binaries_key(device: str, pin: str, toolchain_id: str) -> str:
    return f"{device}/{pin}/{toolchain_id}"


def record_binaries(device: str, pin: str, toolchain_id: str, hashes: dict[str, str],
                    config_dir: Path | None = None) -> Path:
    """Set `binaries["<device>/<pin>/<toolchain_id>"]` to {binary name: sha256}."""
    path = lock_file(config_dir)
    key = binaries_key(device, pin, toolchain_id)

    def change(data: dict[str, Any]) -> None:
        data["binaries"] = dict(data.get("binaries") or {})
        data["binaries"][key] = dict(sorted(hashes.items()))

    update_yaml(path, change)
    return path


def record_replicas(key: str, hashes: dict[str, str], config_dir: Path | None = None) -> Path:
    """Merge {model id: sha256} into `replicas[key]` (key is "<scale>/<pin>")."""
    path = lock_file(config_dir)

    def change(data: dict[str, Any]) -> None:
        data["replicas"] = dict(data.get("replicas") or {})
        merged = dict(data["replicas"].get(key) or {})
        merged.update(hashes)
        data["replicas"][key] = merged

    update_yaml(path, change)
    return path


def record_image(name: str, entry: dict[str, Any], config_dir: Path | None = None) -> Path:
    """Merge what a build of image `name` gave (`entry`) into `images[name]`, keeping its hand-written
    inputs; reloading the configs validates the result."""
    path = lock_file(config_dir)

    def change(data: dict[str, Any]) -> None:
        images = data.get("images") or {}
        if name not in images:
            raise ConfigError(path, f"unknown image {name!r}", f"use one of: {', '.join(images)}", key="images")
        images[name] = {**images[name], **entry}

    update_yaml(path, change)
    return path


def record_model_hub(model_id: str, metadata: dict[str, Any], config_dir: Path | None = None) -> Path:
    """Set `models.<id>.hub.{revision,sha256,size_bytes}` in models.yaml from the hub's metadata."""
    path = Path(config_dir or CONFIG_DIR) / "models.yaml"

    def change(data: dict[str, Any]) -> None:
        models = data.get("models") or {}
        if model_id not in models:
            raise ConfigError(path, f"unknown model {model_id!r}", f"use one of: {', '.join(models)}", key="models")
        hub = models[model_id]["hub"]
        for field in ("revision", "sha256", "size_bytes"):
            hub[field] = metadata[field]

    update_yaml(path, change)
    return path
