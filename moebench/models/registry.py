"""Which file a model id stands for: the real download or a replica, and the SHA-256 it must have.

Everything that opens a model (run, verify, reproduce) asks here, so the path layout and the pins
live in one place: real files in the Hugging Face cache under `models/hf-cache/` at the pinned
revision, replicas in `models/replica-<scale>/`, pinned by configs/models.yaml (`hub.sha256`) and
configs/lock.yaml (`replicas["<scale>/<pin>"]`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from moebench.config import Config
from moebench.errors import ConfigError, IntegrityError, UserError
from moebench.hashing import sha256_file
from moebench.models import replica
from moebench.models.download import hf_cache_dir

Source = Literal["real", "replica"]
SOURCES: tuple[str, ...] = ("real", "replica")


@dataclass(frozen=True)
class ModelRef:
    model_id: str
    source: str                   # "real" | "replica"
    scale: str | None             # "tiny" | "full" for replicas, None for real files
    path: Path
    expected_sha256: str | None   # None: not pinned yet
    pin_key: str                  # where the pin lives, for messages

    @property
    def label(self) -> str:
        return "real" if self.source == "real" else f"replica-{self.scale}"


def resolve(cfg: Config, model_id: str, source: str = "replica", scale: str = "tiny",
            pin: str = "offline") -> ModelRef:
    """The local path and expected SHA-256 of `model_id` from `source` (no network, no hashing)."""
    if model_id not in cfg.models.models:
        raise ConfigError(cfg.root / "models.yaml", f"unknown model {model_id!r}",
                          f"use one of: {', '.join(cfg.models.models)}", key="models")
    if source == "real":
        hub = cfg.models.models[model_id].hub
        path = real_model_path(hub.repo, hub.revision or "main", hub.filename)
        return ModelRef(model_id, "real", None, path, hub.sha256, f"models.yaml: models.{model_id}.hub.sha256")
    if source == "replica":
        if scale not in replica.SCALES:
            raise UserError("--scale", f"unknown replica scale {scale!r}", f"use one of: {', '.join(replica.SCALES)}")
        path = replica.replica_dir(scale) / replica.replica_filename(model_id)
        return ModelRef(model_id, "replica", scale, path, replica.pinned_replica_sha256(cfg, scale, pin, model_id),
                        f"lock.yaml: replicas.{scale}/{pin}.{model_id}")
    raise UserError("--models", f"unknown model source {source!r}", f"use one of: {', '.join(SOURCES)}")


def real_model_path(repo: str, revision: str, filename: str, cache_dir: Path | None = None) -> Path:
    """huggingface_hub's cache layout: `<cache>/models--org--name/snapshots/<revision>/<filename>`."""
    from huggingface_hub.file_download import repo_folder_name

    return (cache_dir or hf_cache_dir()) / repo_folder_name(repo_id=repo, repo_type="model") / "snapshots" \
        / revision / filename


def verify(ref: ModelRef, *, allow_unpinned: bool = False) -> str:
    """Hash the file and compare it with its pin; returns the SHA-256. Raises a UserError naming the fix."""
    if not ref.path.is_file():
        make = ("invoke models.download" if ref.source == "real" else f"invoke models.replica --scale {ref.scale}")
        raise UserError(ref.path, f"{ref.model_id} ({ref.label}) is not there", f"run `{make}`")
    digest = sha256_file(ref.path)
    if ref.expected_sha256 is None:
        if allow_unpinned:
            return digest
        raise IntegrityError(ref.path, f"no SHA-256 pinned ({ref.pin_key} is null); file has {digest}",
                             "pin it (`invoke lock models` / `invoke lock replicas`) or pass --allow-unverified")
    if digest != ref.expected_sha256:
        raise IntegrityError(ref.path, f"sha256 is {digest}, {ref.pin_key} pins {ref.expected_sha256}",
                             "re-fetch or regenerate the file (invoke models.download / models.replica)")
    return digest
