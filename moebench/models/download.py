"""Real model files from the Hugging Face Hub, at the pinned revision, verified before use.

`hf_hub_download` does the transfer (resumable, with its own progress bar) into a cache under
`models/hf-cache/`; the file's SHA-256 is then compared with `configs/models.yaml` before its path is
returned, so nothing downstream ever sees an unverified file. A file that does not match is kept
where it is, for inspection; nothing is deleted. The access token comes from the standard Hugging
Face configuration (`HF_TOKEN` or `huggingface-cli login`, i.e. `huggingface_hub.get_token()`) unless
one is passed, and is only ever handed to huggingface_hub: it is never printed, logged or recorded.
`HF_ENDPOINT` is honoured at call time (a mirror, or a test server).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from moebench import paths
from moebench.config import Config, HubFile
from moebench.errors import ConfigError, IntegrityError, OutputWriteError, UserError, describe_os_error, is_write_error
from moebench.files import write_atomic
from moebench.hashing import sha256_file

HASHES_FILE = "model_hashes.txt"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class DownloadResult:
    path: Path
    sha256: str
    size_bytes: int
    model_id: str = ""
    revision: str = ""


def hf_cache_dir() -> Path:
    return paths.models_dir() / "hf-cache"


def hashes_file() -> Path:
    return paths.processed_dir() / HASHES_FILE


def _endpoint() -> str | None:
    return (os.environ.get("HF_ENDPOINT") or "").rstrip("/") or None


def _hub(cfg: Config, model_id: str) -> HubFile:
    if model_id not in cfg.models.models:
        raise ConfigError(cfg.root / "models.yaml", f"unknown model {model_id!r}",
                          f"use one of: {', '.join(cfg.models.models)}", key="models")
    return cfg.models.models[model_id].hub


def _require_pins(cfg: Config, model_id: str, hub: HubFile) -> None:
    for field in ("revision", "sha256"):
        if getattr(hub, field) is None:
            raise ConfigError(cfg.root / "models.yaml",
                              f"{field} is null, so the download could not be checked against a pin",
                              "run `invoke lock models` to record the hub's current revision and SHA-256 "
                              "(or pass allow_unpinned=True / --allow-unpinned to fetch the branch head unchecked)",
                              key=f"models.{model_id}.hub.{field}")


def cached_path(hub: HubFile, cache_dir: Path | None = None) -> Path | None:
    """Where the pinned file lies in the cache if it was downloaded before, else None (no network)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(hub.repo, hub.filename, cache_dir=cache_dir or hf_cache_dir(),
                                   revision=hub.revision or "main")
    return Path(found) if isinstance(found, str) else None


def _check_hub_hash(hub: HubFile, revision: str, token: str | None) -> None:
    """Ask the hub for the file's LFS SHA-256 first: a changed file is refused before gigabytes move."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    meta = get_hf_file_metadata(hf_hub_url(hub.repo, hub.filename, revision=revision, endpoint=_endpoint()),
                                token=token)
    if meta.etag and _SHA256.match(meta.etag) and meta.etag != hub.sha256:
        raise IntegrityError(f"{hub.repo}@{revision}/{hub.filename}",
                             f"the hub reports sha256 {meta.etag}, models.yaml pins {hub.sha256}",
                             "check the revision in configs/models.yaml; re-pin with `invoke lock models` only if "
                             "the new file is the one the study used")


def _hub_errors(hub: HubFile, revision: str, exc: Exception) -> UserError:
    """huggingface_hub's exceptions as one line with a fix (their text never holds the token)."""
    from huggingface_hub import errors

    where = f"{hub.repo}@{revision}/{hub.filename}"
    if isinstance(exc, errors.GatedRepoError):
        return UserError(where, "the repository is gated",
                         "accept its license on the hub, then `huggingface-cli login` or set HF_TOKEN")
    if isinstance(exc, errors.RepositoryNotFoundError):
        return UserError(where, "repository not found (or private)", "check hub.repo in configs/models.yaml; "
                         "log in with `huggingface-cli login` if it is private")
    if isinstance(exc, errors.RevisionNotFoundError):
        return UserError(where, "revision not found", "check hub.revision in configs/models.yaml")
    if isinstance(exc, errors.EntryNotFoundError):
        return UserError(where, "file not found at that revision", "check hub.filename in configs/models.yaml")
    if isinstance(exc, errors.LocalEntryNotFoundError):
        return UserError(where, "the hub is unreachable and the file is not in the cache",
                         "check the network (or HF_ENDPOINT), or copy the file into the cache")
    return UserError(where, f"download failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}",
                     "run the same command again: the download resumes where it stopped")


def _is_transfer_error(exc: Exception) -> bool:
    import requests
    from huggingface_hub import errors

    if isinstance(exc, (errors.HfHubHTTPError, errors.LocalEntryNotFoundError, requests.RequestException)):
        return True
    return isinstance(exc, OSError) and "Consistency check failed" in str(exc)


def download_model(cfg: Config, model_id: str, out_dir: Path | None = None, token: str | None = None, *,
                   allow_unpinned: bool = False) -> DownloadResult:
    """Fetch one model's GGUF (or find it in the cache) and verify its SHA-256 before returning it."""
    from huggingface_hub import hf_hub_download

    hub = _hub(cfg, model_id)
    if not allow_unpinned:
        _require_pins(cfg, model_id, hub)
    cache_dir = Path(out_dir) if out_dir is not None else hf_cache_dir()
    revision = hub.revision or "main"
    try:
        if hub.sha256 is not None and cached_path(hub, cache_dir) is None:
            _check_hub_hash(hub, revision, token)
        local = Path(hf_hub_download(repo_id=hub.repo, filename=hub.filename, revision=revision,
                                     cache_dir=cache_dir, token=token, endpoint=_endpoint()))
    except Exception as exc:
        if isinstance(exc, OSError) and is_write_error(exc):
            # huggingface_hub writes `<blob>.incomplete` and renames it only once complete
            raise OutputWriteError(exc.filename or cache_dir, f"the download of {hub.repo}@{revision}/{hub.filename} "
                                   f"could not be written ({describe_os_error(exc)}); the part received is kept as "
                                   "an .incomplete file, never as the model",
                                   "free space (or make the cache writable), then run the same command again: it "
                                   "resumes") from None
        if _is_transfer_error(exc):
            raise _hub_errors(hub, revision, exc) from None
        raise
    digest = sha256_file(local)
    if hub.sha256 is not None and digest != hub.sha256:
        raise IntegrityError(local, f"sha256 is {digest}, models.yaml pins {hub.sha256} "
                             f"({hub.repo}@{revision}/{hub.filename}); the file was not used and is kept "
                             f"(blob {local.resolve()})",
                             "delete that blob and its link and run again to re-download; if it fails again, the "
                             "hub serves another file than the pinned one: check hub.revision",
                             key=f"models.{model_id}.hub.sha256")
    size = local.stat().st_size
    if hub.size_bytes is not None and size != hub.size_bytes:
        raise IntegrityError(local, f"size is {size} bytes, models.yaml pins {hub.size_bytes}",
                             "re-run `invoke lock models` if sha256 and size were recorded from different files",
                             key=f"models.{model_id}.hub.size_bytes")
    commit = _snapshot_commit(local, hub.filename) or revision
    record_hash(digest, model_id, f"{hub.repo}@{commit}/{hub.filename}")
    return DownloadResult(local, digest, size, model_id, commit)


def _snapshot_commit(local: Path, filename: str) -> str | None:
    """The commit a cache path belongs to (`.../snapshots/<commit>/<filename>`)."""
    parts = local.parts
    depth = len(Path(filename).parts)
    if len(parts) > depth + 1 and parts[-depth - 2] == "snapshots":
        return parts[-depth - 1]
    return None


def record_hash(sha256: str, model_id: str, source: str) -> Path:
    """Append `<sha256>  <model_id>  <repo>@<revision>/<filename>` unless that exact line is there."""
    target = hashes_file()
    line = f"{sha256}  {model_id}  {source}"
    existing = target.read_text(encoding="utf-8").splitlines() if target.is_file() else []
    if line not in existing:
        kept = "".join(f"{old}\n" for old in existing)
        try:
            write_atomic(target, kept + line + "\n")
        except OSError as exc:
            if not is_write_error(exc):
                raise
            raise OutputWriteError(target, f"could not record the verified hash ({describe_os_error(exc)}); the file "
                                   "is unchanged", "free space (or make it writable), then run the same command "
                                   "again") from None
    return target


def download_models(cfg: Config, models: list[str] | None = None, token: str | None = None, *,
                    allow_unpinned: bool = False) -> list[DownloadResult]:
    """`invoke models.download`: every (or the named) model, one line each, then a summary table."""
    results = []
    for model_id in models or list(cfg.models.models):
        result = download_model(cfg, model_id, token=token, allow_unpinned=allow_unpinned)
        print(f"{model_id}: {result.path} sha256 {result.sha256} verified", flush=True)
        results.append(result)
    width = max([len(r.model_id) for r in results] + [5])
    print(f"{'model':<{width}}  {'size_bytes':>12}  sha256")
    for r in results:
        print(f"{r.model_id:<{width}}  {r.size_bytes:>12}  {r.sha256}")
    return results


def lock_model_metadata(cfg: Config, model_id: str, token: str | None = None) -> dict:
    """The hub's commit, LFS SHA-256 and size of a model's file, for `invoke lock models`.

    With `hub.revision` null this resolves the default branch to the commit it points at now.
    """
    from huggingface_hub import HfApi

    hub = _hub(cfg, model_id)
    revision = hub.revision or "main"
    try:
        info = HfApi(endpoint=_endpoint()).model_info(hub.repo, revision=revision, files_metadata=True, token=token)
    except Exception as exc:
        if _is_transfer_error(exc):
            raise _hub_errors(hub, revision, exc) from None
        raise
    sibling = next((s for s in info.siblings or [] if s.rfilename == hub.filename), None)
    if sibling is None:
        raise ConfigError(cfg.root / "models.yaml", f"{hub.repo}@{info.sha} has no file {hub.filename!r}",
                          "fix hub.filename", key=f"models.{model_id}.hub.filename")
    if sibling.lfs is None:
        raise UserError(f"{hub.repo}@{info.sha}/{hub.filename}", "the hub lists no LFS SHA-256 for the file",
                        "pin a GGUF stored with git LFS (every GGUF on the hub is)")
    return {"revision": info.sha, "sha256": sibling.lfs.sha256, "size_bytes": sibling.lfs.size}
