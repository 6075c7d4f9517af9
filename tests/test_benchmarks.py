"""Every script in benchmarks/ runs at HEAD: each in its quick mode (the tiny replica, one repetition,
results into a temporary directory), with what it wrote checked for the fields its README row names.
The image benchmarks, which need root, mmdebstrap and the engine, run in tests/images/ (test_image_benchmarks.py,
and test_aarch64.py, whose clean-state arm64 build is bench_aarch64.py's quick run)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from moebench.config import REPO_ROOT

BENCHMARKS = REPO_ROOT / "benchmarks"
TEST_FILES = (Path(__file__), Path(__file__).parent / "images" / "test_image_benchmarks.py",
              Path(__file__).parent / "images" / "test_aarch64.py")
MODEL = "llama-3.2-1b-instruct-q4km"


def run_benchmark(script: str, *args: str, timeout: float = 900) -> str:
    """The script's stdout; its whole output in the failure message when it exits non-zero."""
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, f"{script} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done.stdout


def test_every_benchmark_script_has_a_quick_run_in_ci():
    tested = "\n".join(path.read_text() for path in TEST_FILES)
    missing = [path.name for path in sorted(BENCHMARKS.glob("bench_*.py")) if f'"{path.name}"' not in tested]
    assert not missing, f"no quick run of {missing} in {[str(p.relative_to(REPO_ROOT)) for p in TEST_FILES]}"


@pytest.fixture
def harness_args(pinned_bin_dir, tiny_replica_paths, tmp_path) -> list[str]:
    return ["--bin-dir", str(pinned_bin_dir), "--model", str(tiny_replica_paths[MODEL]), "--quick",
            "--results-dir", str(tmp_path)]


@pytest.mark.slow
def test_harness_vs_llama_bench_quick(harness_args, tmp_path):
    run_benchmark("bench_harness_vs_llama_bench.py", *harness_args)
    body = json.loads((tmp_path / "harness_vs_llama_bench.json").read_text())
    assert body["meta"]["quick"] and body["meta"]["reps"] == 1
    # on a CPU run the CUDA-only variants are left out and llama-bench runs once per rep
    assert [row["variant"] for row in body["ablation"]] == [
        "cli", "cli greedy", "cli no-warmup", "cli ctx 512", "cli ubatch 2048", "server", "server greedy",
        "server no-stream"]
    assert all(row["gen_ratio"] > 0 and row["prefill_ratio"] > 0 for row in body["ablation"])
    assert {row["metric"] for row in body["ablation"] if row["runner"] == "server"} == {"slot timers (end to end)"}
    assert "gen_tokens_per_s" in body["variants"]["cli"]["rates"]
    assert "gen_tokens_per_s" not in body["variants"]["server"]["rates"]
    assert list(body["llama_bench"]) == ["default"] and body["llama_bench"]["default"]["tg_tokens_per_s"]["n"] == 1


@pytest.mark.slow
def test_harness_vs_llama_bench_on_a_study_prompt_with_llama_simple(harness_args, pinned_bin_dir, tmp_path):
    """--prompt-id runs a study prompt in the study's context (the context-512 variant, which cannot
    hold it, left out); --simple-bin adds llama-simple, built here from the same build tree."""
    cmake_dir = pinned_bin_dir.parent / "cmake"
    subprocess.run(["cmake", "--build", str(cmake_dir), "--target", "llama-simple"], check=True, capture_output=True)
    simple = cmake_dir / "bin" / "llama-simple"
    run_benchmark("bench_harness_vs_llama_bench.py", *harness_args, "--prompt-id",
                  "p12_very_long_incident_review_summary", "--simple-bin", str(simple))
    body = json.loads((tmp_path / "harness_vs_llama_bench.json").read_text())
    assert body["prompt"] == "p12_very_long_incident_review_summary"
    variants = [row["variant"] for row in body["ablation"]]
    assert "cli ctx 512" not in variants and variants[-1] == "llama-simple"
    # the real tokenizer's count of p12 (benchmarks/results/prompt_tokens.json), in every runner
    assert body["variants"]["cli"]["prompt_tokens"] == body["variants"]["server"]["prompt_tokens"] == 1934
    assert body["llama_simple"]["prompt_tokens"] == [1934]
    assert body["llama_simple"]["rates"]["gen_tokens_per_s"]["mean"] > 0


@pytest.mark.slow
def test_order_cost_quick(pinned_bin_dir, tiny_replica_paths, tmp_path):
    run_benchmark("bench_order_cost.py", "--quick", "--results-dir", str(tmp_path))
    body = json.loads((tmp_path / "order_cost.json").read_text())
    assert set(body["runs"]) == {"fixed/cli", "fixed/server", "interleaved/cli", "interleaved/server"}
    cli, server = body["summary"]["cli"], body["summary"]["server"]
    assert cli["model_loads_fixed"] == cli["cells"] == 12   # a process, and a load, per cell
    assert server["model_loads_fixed"] == 4                  # one server per model in the fixed order
    assert all(4 <= n <= 8 for n in server["model_loads_interleaved"])  # 2 repetitions, models reshuffled
    assert cli["wall_ratio_interleaved_over_fixed"] > 0


@pytest.mark.slow
def test_cli_vs_server_quick(harness_args, tmp_path):
    run_benchmark("bench_cli_vs_server.py", *harness_args)
    body = json.loads((tmp_path / "cli_vs_server.json").read_text())
    assert body["cli"]["cells"] == body["server"]["cells"] == 1
    assert body["cli_over_server_wall_ratio"] > 0 and body["server"]["e2e_gen_tokens_per_s"]["mean"] > 0
    assert "gen_tokens_per_s" in body["cli"] and "gen_tokens_per_s" not in body["server"]


@pytest.mark.slow
def test_sampler_overhead_quick(harness_args, tmp_path):
    run_benchmark("bench_sampler_overhead.py", *harness_args)
    body = json.loads((tmp_path / "sampler_overhead.json").read_text())
    assert body["sampling_on"]["gen_tokens_per_s"]["n"] == body["sampling_off"]["gen_tokens_per_s"]["n"] == 1
    assert isinstance(body["gen_overhead_percent"], float)


@pytest.mark.slow
def test_build_verify_quick(pinned_bin_dir, tiny_replica_paths, tmp_path):
    run_benchmark("bench_build_verify.py", "--quick", "--results-dir", str(tmp_path))
    body = json.loads((tmp_path / "build_verify.json").read_text())
    assert body["meta"]["quick"] and body["noop_rebuild"]["n"] == 1
    assert body["fresh_build"] is None  # a fresh build in another directory: tests/pins/test_build.py
    hashers = body["verify_throughput"]["hashers"]
    assert set(hashers) == {"hashlib_threads", "hashlib_one_by_one", "coreutils_sha256sum"}
    assert all(entry["gb_per_s"] > 0 for entry in hashers.values())


@pytest.mark.slow
def test_cuda_reproducibility_steps_on_the_cpu_build(pinned_bin_dir, tmp_path):
    """Both steps of the GPU benchmark, on the kit's CPU build (built, then its no-op rebuild)."""
    for label in ("a", "b"):
        run_benchmark("bench_cuda_reproducibility.py", "build", "--device", "cpu", "--pin", "offline", "--label",
                      label, "--out", str(tmp_path / f"{label}.json"))
    output = run_benchmark("bench_cuda_reproducibility.py", "compare", str(tmp_path / "a.json"),
                           str(tmp_path / "b.json"), "--results-dir", str(tmp_path / "results"))
    body = json.loads((tmp_path / "results" / "reproducibility_cpu_offline.json").read_text())
    assert body["identical"] and body["objects_compared"] > 10 and not body["objects_differing"]
    assert "llama-server" in body["binaries"] and all(e["verdict"] == "IDENTICAL" for e in body["binaries"].values())
    assert f"0 of {body['objects_compared']} objects differ" in output
