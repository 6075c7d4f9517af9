"""Assemble layers into a Docker image archive whose image ID is known before any engine sees it.

An image ID is the SHA-256 of the image's config JSON, and that config names the layers by their
diff_ids; so with layers that are pure functions of their trees (layers.py) and a config with
no build-time fields (`created` and every history entry are SOURCE_DATE_EPOCH), the ID is a
pure function of the recipe. The archive is the `docker save` format (manifest.json, the config
blob, one directory per layer), which `docker load` and podman both read; its own members are
written in a fixed order with fixed mtimes, so the archive file is byte-identical too.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

# Where the kit's checkout is mounted and builds happen: binaries never see the host's clone path.
KIT_MOUNT = "/moebench"
VENV_BIN = "/opt/moebench/venv/bin"
IMAGE_ENV = ("LC_ALL=C.UTF-8", "TZ=UTC", "PYTHONDONTWRITEBYTECODE=1", f"PYTHONPATH={KIT_MOUNT}",
             f"PATH={VENV_BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
ENTRYPOINT = (f"{VENV_BIN}/invoke", "--search-root", KIT_MOUNT)


def iso_date(source_date_epoch: int) -> str:
    return datetime.fromtimestamp(source_date_epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def image_config(name: str, architecture: str, layers: list[tuple[str, str]], source_date_epoch: int,
                 labels: dict[str, str], with_kit_entrypoint: bool) -> bytes:
    """The config blob: `layers` is [(diff_id, what made it)]; returns canonical JSON bytes."""
    created = iso_date(source_date_epoch)
    run_config: dict[str, Any] = {"Env": list(IMAGE_ENV), "Labels": dict(sorted(labels.items()))}
    if with_kit_entrypoint:
        run_config.update({"Entrypoint": list(ENTRYPOINT), "Cmd": ["--list"], "WorkingDir": KIT_MOUNT})
    else:
        run_config.update({"Cmd": ["/bin/bash"]})
    config = {
        "architecture": architecture, "os": "linux", "created": created, "config": run_config,
        "rootfs": {"type": "layers", "diff_ids": [diff_id for diff_id, _ in layers]},
        "history": [{"created": created, "created_by": f"moebench image {name}: {what}"} for _, what in layers],
    }
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode()


def image_id(config: bytes) -> str:
    return f"sha256:{hashlib.sha256(config).hexdigest()}"


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mtime: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), mtime, 0o644
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str, mtime: int) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mtime, info.mode = tarfile.DIRTYPE, mtime, 0o755
    tar.addfile(info)


def write_archive(path: Path, config: bytes, layer_files: list[tuple[str, Path]], repo_tag: str,
                  source_date_epoch: int) -> None:
    """Write a `docker load`-able archive of `config` and its layers [(diff_id, layer tar file)]."""
    config_name = f"{image_id(config).removeprefix('sha256:')}.json"
    layer_names = [f"{diff_id.removeprefix('sha256:')}/layer.tar" for diff_id, _ in layer_files]
    manifest = [{"Config": config_name, "RepoTags": [repo_tag], "Layers": layer_names}]
    tmp = path.with_name(path.name + ".partial")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for (diff_id, layer_file), layer_name in zip(layer_files, layer_names):
            _add_dir(tar, layer_name.split("/")[0], source_date_epoch)
            info = tarfile.TarInfo(layer_name)
            info.size, info.mtime, info.mode = layer_file.stat().st_size, source_date_epoch, 0o644
            with open(layer_file, "rb") as handle:
                tar.addfile(info, handle)
        _add_bytes(tar, config_name, config, source_date_epoch)
        _add_bytes(tar, "manifest.json", json.dumps(manifest, separators=(",", ":")).encode(), source_date_epoch)
    tmp.replace(path)
