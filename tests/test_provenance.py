import hashlib

from moebench import provenance
from moebench.records import null_reason_problems

from runner_support import load_test_config


def test_run_provenance_fields(tmp_path, monkeypatch):
    cfg = load_test_config(tmp_path)
    binary = tmp_path / "llama-cli"
    binary.write_bytes(b"binary bytes")
    manifest = {"commit": "f" * 40, "source_tree_hash": "e" * 40, "source_channel": "pypi_sdist",
                "compiler": {"c": "gcc 12.2", "cxx": "g++ 12.2"}, "cmake_flags": ["-DGGML_NATIVE=OFF"],
                "toolchain_id": "debian-12-gcc-12", "binaries": {}}
    monkeypatch.setenv("MOEBENCH_IMAGE_DIGEST", "sha256:" + "1" * 64)
    prov = provenance.collect_run_provenance(
        cfg, device="cpu", pin="offline", manifest=manifest, manifest_reason=None, binary_name="llama-cli",
        binary_path=binary, command_line=["invoke", "run"], allow_unverified=True, verified=False)
    assert prov["binary_sha256"] == hashlib.sha256(b"binary bytes").hexdigest()
    assert prov["compiler"] == "gcc 12.2 / g++ 12.2" and prov["build_flags"] == ["-DGGML_NATIVE=OFF"]
    assert prov["image_digest"].startswith("sha256:")
    assert prov["config_sha256"] == cfg.file_sha256
    assert prov["host"]["logical_cores"] >= 1 and prov["host"]["ram_bytes"] > 0
    assert prov["allow_unverified"] is True and prov["verified"] is False
    full = provenance.for_model(prov, model_path=tmp_path / "m.gguf", model_sha256="a" * 64, model_source="replica")
    assert all(not p.startswith("provenance.") for p in null_reason_problems({"provenance": full}))


def test_missing_manifest_and_container_give_reasons(tmp_path, monkeypatch):
    cfg = load_test_config(tmp_path)
    binary = tmp_path / "llama-server"
    binary.write_bytes(b"x")
    monkeypatch.delenv("MOEBENCH_IMAGE_DIGEST", raising=False)
    prov = provenance.collect_run_provenance(
        cfg, device="cpu", pin="offline", manifest=None, manifest_reason="no manifest in tests",
        binary_name="llama-server", binary_path=binary, command_line=[], allow_unverified=False, verified=True)
    assert prov["llama_cpp_commit"] is None and prov["null_reasons"]["llama_cpp_commit"] == "no manifest in tests"
    assert prov["image_digest"] is None and "not running in a moebench image" in prov["null_reasons"]["image_digest"]
    assert prov["power_mode"] is None and prov["null_reasons"]["power_mode"]
    full = provenance.for_model(prov, model_path=None, model_sha256=None, model_source="real", reason="missing")
    assert all(not p.startswith("provenance.") for p in null_reason_problems({"provenance": full}))
