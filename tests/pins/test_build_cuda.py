"""The CUDA part of the recipe: nvcc in the toolchain id, --objdir-as-tempdir, one fixed compile path.

The identity of whole CUDA builds is measured on GPU machines (benchmarks/bench_cuda_reproducibility.py);
here nvcc itself, which needs no GPU to compile, shows on a small kernel what the recipe relies on."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from moebench.pins import build as build_module
from moebench.pins.build import FIXED_CUDA_ROOT, compile_place, recipe, toolchain
from moebench.config import load_config

NVCC = shutil.which("nvcc")
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc is not installed on this host")
needs_root = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                                reason="binding a fixed compile path needs root and unshare")
KERNEL = "__global__ void scale(float *x, float a) { x[threadIdx.x] *= a; }\n"


def test_cpu_builds_compile_where_they_are(tmp_path):
    assert compile_place("cpu", tmp_path / "b") == build_module.CompilePlace(tmp_path / "b")


def test_cuda_builds_compile_at_one_fixed_path(tmp_path, monkeypatch):
    monkeypatch.delenv("MOEBENCH_IMAGE", raising=False)
    monkeypatch.setattr(build_module.os, "geteuid", lambda: 0)
    place = compile_place("cuda", tmp_path / "cuda_sm90-offline")
    assert place.path == FIXED_CUDA_ROOT / "cuda_sm90-offline" and place.not_fixed_because is None
    assert place.wrapper[:2] == ("unshare", "--mount") and str(tmp_path / "cuda_sm90-offline") in place.wrapper
    monkeypatch.setenv("MOEBENCH_IMAGE", "cuda")  # in the image the work directory already is at a fixed path
    assert compile_place("cuda", tmp_path / "x") == build_module.CompilePlace(tmp_path / "x")


def test_a_cuda_build_that_cannot_bind_the_fixed_path_says_why(tmp_path, monkeypatch):
    monkeypatch.delenv("MOEBENCH_IMAGE", raising=False)
    monkeypatch.setattr(build_module.os, "geteuid", lambda: 1000)
    place = compile_place("cuda", tmp_path / "b")
    assert place.path == tmp_path / "b" and "root" in place.not_fixed_because


@needs_nvcc
def test_cuda_toolchain_id_carries_nvccs_version():
    tools = toolchain(cuda=True)
    release = re.search(r"V(\d+\.\d+\.\d+)", subprocess.run([NVCC, "--version"], capture_output=True,
                                                            text=True).stdout).group(1)
    assert re.search(rf"_nvcc-{re.escape(release)}-[0-9a-f]{{8}}$", tools["toolchain_id"]), tools["toolchain_id"]
    assert "Cuda compilation tools" in tools["compiler"]["cuda_version"]
    assert "_nvcc-" not in toolchain()["toolchain_id"]


@needs_nvcc
def test_recipe_gives_nvcc_the_objdir_and_the_prefix_maps(tmp_path):
    cfg = load_config()
    plan = recipe(cfg.device("cuda_sm90"), Path("/moebench-build/cuda_sm90-offline"), tmp_path / "git",
                  toolchain(cuda=True))
    cuda_flags = next(flag for flag in plan["cmake_flags"] if flag.startswith("-DCMAKE_CUDA_FLAGS="))
    assert "--objdir-as-tempdir" in cuda_flags
    assert "-ffile-prefix-map=/moebench-build/cuda_sm90-offline=/moebench/build" in cuda_flags
    assert any(flag.startswith("-DCMAKE_CUDA_COMPILER=") for flag in plan["cmake_flags"])


def _compile(real_dir: Path, fixed: Path | None, objdir_flag: bool) -> str:
    """Compile the kernel the way cmake calls nvcc (absolute paths), at `fixed` when given; the object's SHA-256."""
    real_dir.mkdir(parents=True)
    (real_dir / "k.cu").write_text(KERNEL)
    (real_dir / "obj").mkdir()
    at = fixed or real_dir
    command = [NVCC, "-c", "-arch=sm_90", *(["--objdir-as-tempdir"] if objdir_flag else []),
               f"-Xcompiler=-ffile-prefix-map={at}=/moebench/build", str(at / "k.cu"), "-o", str(at / "obj" / "k.o")]
    if fixed is not None:
        command = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", build_module.BIND_AND_EXEC,
                   "sh", str(fixed), str(real_dir), *command]
    subprocess.run(command, check=True, env={**os.environ, "SOURCE_DATE_EPOCH": "315532800"})
    return hashlib.sha256((real_dir / "obj" / "k.o").read_bytes()).hexdigest()


@needs_nvcc
@needs_root
def test_two_clone_paths_bound_at_the_fixed_path_give_one_object(tmp_path):
    fixed = FIXED_CUDA_ROOT / f"test-{os.getpid()}"
    try:
        first = _compile(tmp_path / "clone-a" / "deep", fixed, objdir_flag=True)
        second = _compile(tmp_path / "b", fixed, objdir_flag=True)
    finally:
        fixed.rmdir()  # the empty mount point the namespace left on the host
    assert first == second


@needs_nvcc
def test_without_the_objdir_flag_nvcc_objects_differ_run_to_run(tmp_path):
    """The difference the recipe removes is real: nvcc's pid-named temporaries reach the object."""
    assert _compile(tmp_path / "a", None, objdir_flag=False) != _compile(tmp_path / "b", None, objdir_flag=False)
