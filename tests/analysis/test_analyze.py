"""analysis/tables.py: JSONL -> benchmark_results.csv and summary tables, on recorded runs and built records."""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from scipy import stats as scipy_stats

from moebench.analysis.axes import AXIS_RULES, axis_pairs
from moebench.analysis.tables import analyze, load_records
from moebench.config import CONFIG_DIR, SECTIONS, Config, parse_section, read_yaml
from moebench.errors import UserError
from moebench.run.records import validate_record

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
RAW = FIXTURES / "raw"
GOOD_RUN = RAW / "run_cpu_experiment_1_efficiency_smoke.jsonl"
FAILED_RUN = RAW / "run_cpu_experiment_1_efficiency_truncated_model.jsonl"
OTHER_BINARY_RUN = RAW / "run_cpu_experiment_1_efficiency_other_binary.jsonl"

MOE = "olmoe-1b-7b-0924-instruct-q4km"
LLAMA = "llama-3.2-1b-instruct-q4km"
QWEN = "qwen2.5-1.5b-instruct-q4km"
GEMMA = "gemma-2-2b-it-q4km"


def analysis_config() -> Config:
    """The kit's configs, each file validated (analysis reads models, devices, experiments, reference)."""
    sections = {name.removesuffix(".yaml"): parse_section(CONFIG_DIR / name, read_yaml(CONFIG_DIR / name), model)
                for name, model in SECTIONS.items()}
    return Config(root=CONFIG_DIR, file_sha256={}, **sections)  # type: ignore[arg-type]


def make_record(model_id: str = MOE, gen_tps: float | None = 10.0, *, device: str = "cpu",
                experiment: str = "experiment_1_efficiency", rep: int = 0, prompt: str = "p01",
                threads: int = 4, n_predict: int = 128, warmup: bool = False, source: str = "replica",
                binary: str = "b" * 64, model_sha: str | None = None, energy: float | None = None,
                prefill_tps: float = 100.0, rss: int = 1_000_000_000, failure: str | None = None,
                length_class: str = "short", prompt_tokens: int = 20) -> dict:
    """A schema-valid record with the given measurements (for cases the recorded runs cannot show)."""
    failed = failure is not None
    reasons: dict[str, str] = {}
    nulls = {"cpu_percent_mean", "cpu_percent_peak", "power_w_mean", "peak_temp_c", "gpu_util_percent_mean",
             "router_routing_ms", "router_expert_ffn_ms", "load_ms"}
    values = {
        "prompt_tokens": prompt_tokens, "prefill_ms": 200.0, "prefill_tokens_per_s": prefill_tps,
        "gen_tokens": n_predict, "gen_ms": 1000.0, "gen_tokens_per_s": gen_tps, "ttft_ms": 210.0,
        "wall_ms": 1500.0, "peak_rss_bytes": rss, "model_file_bytes": 2_000_000_000,
        "energy_joules": energy * n_predict if energy is not None else None, "joules_per_token": energy,
    }
    if failed:
        values = {k: None for k in values}
        values["model_file_bytes"] = 2_000_000_000
    record = {
        "schema_version": 1, "record_id": f"{abs(hash((model_id, rep, prompt, warmup, threads, n_predict, binary, device))) % 16**16:016x}",
        "run_id": "test-run", "cell_key": f"{experiment}|{model_id}|{prompt}|{'warmup' if warmup else 'rep'}{rep}|t{threads}|n{n_predict}",
        "experiment": experiment, "device": device, "model_id": model_id, "model_source": source,
        "replica_scale": "tiny" if source == "replica" else None, "prompt_id": prompt,
        "prompt_length_class": length_class, "repetition": rep, "is_warmup": warmup, "runner_mode": "server",
        "knobs": {"threads": threads, "n_predict": n_predict, "ctx_size": 4096, "batch_size": 2048,
                  "ubatch_size": 512, "n_gpu_layers": 0, "seed": 42, "temperature": 0.0, "ignore_eos": True},
        "status": "failed" if failed else "ok",
        "failure": {"reason": failure, "message": f"llama-server {failure}", "exit_code": None, "signal": 9,
                    "stderr_tail": ""} if failed else None,
        "started_at": f"2025-01-01T00:{rep:02d}:00.000Z", "monitors": {},
        "provenance": {
            "allow_unverified": False, "binary_name": "llama-server", "binary_sha256": binary, "build_flags": ["-DX=1"],
            "clocks": None, "command_line": ["invoke", "run"], "compiler": "gcc 12", "config_sha256": {},
            "host": {"cpu_model": "test cpu"}, "image_digest": None, "kit_commit": "c" * 40, "kit_dirty": False,
            "llama_cpp_commit": "f" * 40, "llama_cpp_pin": "offline", "model_path": None,
            "model_sha256": model_sha or f"{model_id[:8]:0<64}"[:64], "model_source": source,
            "null_reasons": {"clocks": "no cpufreq", "image_digest": "not in an image",
                             "model_path": "built in a test"},
            "power_mode": "15W" if device == "jetson" else None, "source_channel": "pypi_sdist",
            "source_tree_hash": "e" * 40, "started_at": "2025-01-01T00:00:00Z", "toolchain_id": "gcc-12",
            "verified": True},
        "router_routing_ms": None, "router_expert_ffn_ms": None,
    }
    if device != "jetson":
        record["provenance"]["null_reasons"]["power_mode"] = "not a Jetson"
    for name in nulls:
        record[name] = None
        reasons[name] = "not measured in this test record"
    record.update(values)
    for name, value in values.items():
        if value is None:
            reasons[name] = f"cell failed ({failure})" if failed else "no energy monitor on this device"
    record["null_reasons"] = reasons
    validate_record(record)
    return record


def write_jsonl(directory: Path, name: str, records: list[dict]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records), encoding="utf-8")
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def four_models(gen: dict[str, list[float]], **kwargs) -> list[dict]:
    """Warm-up + measured records for each model; gen tok/s values given per model."""
    records = []
    for model, values in gen.items():
        records.append(make_record(model, 1.0, warmup=True, **kwargs))
        records += [make_record(model, v, rep=i, **kwargs) for i, v in enumerate(values)]
    return records


@pytest.fixture(scope="module")
def cfg() -> Config:
    return analysis_config()


# --- recorded runs ---------------------------------------------------------------------------------

def test_recorded_fixtures_are_valid_records(cfg):
    files, loaded = load_records(RAW)
    assert {GOOD_RUN, FAILED_RUN, OTHER_BINARY_RUN} <= set(files)
    assert all(item.record["schema_version"] == 1 for item in loaded)
    # recorded through build manifests of the offline pin (README.txt): the build provenance is filled
    pin = cfg.pin("offline")
    for item in loaded:
        prov = item.record["provenance"]
        assert prov["llama_cpp_commit"] == pin.commit and prov["source_tree_hash"] == pin.tree_hash
        assert prov["build_flags"] and prov["compiler"] and prov["toolchain_id"] and prov["kit_commit"]
        assert item.record["model_source"] == "replica" and item.record["replica_scale"] == "tiny"


def _provenance(path: Path) -> list[dict]:
    return [json.loads(line)["provenance"] for line in path.read_text().splitlines()]


def test_recorded_fixtures_differ_in_what_their_readme_says():
    good, other, failed = _provenance(GOOD_RUN), _provenance(OTHER_BINARY_RUN), _provenance(FAILED_RUN)
    assert all(p["verified"] and not p["allow_unverified"] for p in good + other)
    # the second build: same pin and device, one more cmake flag, so another llama-server
    assert all("-DGGML_OPENMP=OFF" in p["build_flags"] for p in other)
    assert not any("-DGGML_OPENMP=OFF" in p["build_flags"] for p in good)
    assert len({p["binary_sha256"] for p in good}) == len({p["binary_sha256"] for p in other}) == 1
    assert good[0]["binary_sha256"] != other[0]["binary_sha256"]
    # the truncated model fails `invoke verify`, so that run was explicitly allowed to go on unverified
    assert all(not p["verified"] and p["allow_unverified"] for p in failed)
    assert {p["binary_sha256"] for p in failed} == {good[0]["binary_sha256"]}
    assert len({p["model_sha256"] for p in failed}) == 1
    assert failed[0]["model_sha256"] not in {p["model_sha256"] for p in good}


def _raw_dir_with(tmp_path: Path, *files: Path) -> Path:
    raw = tmp_path / "raw"
    raw.mkdir()
    for path in files:
        shutil.copy(path, raw / path.name)
    return raw


def test_recorded_smoke_run_summary(cfg, tmp_path):
    raw = _raw_dir_with(tmp_path, GOOD_RUN)
    result = analyze(cfg, raw, tmp_path / "out")
    records = [json.loads(line) for line in GOOD_RUN.read_text().splitlines()]
    rows = read_csv(tmp_path / "out" / "benchmark_results.csv")
    assert len(rows) == len(records)
    assert {"prov_binary_sha256", "prov_llama_cpp_commit", "prov_model_sha256", "prov_image_digest",
            "prov_power_mode", "prov_kit_commit", "model_source", "threads", "null_reasons"} <= set(rows[0])
    summary = {r["model_id"]: r for r in read_csv(tmp_path / "out" / "summary_tables" / "per_model_summary.csv")}
    for model, row in summary.items():
        measured = [r["gen_tokens_per_s"] for r in records
                    if r["model_id"] == model and r["status"] == "ok" and not r["is_warmup"]]
        warmups = sum(1 for r in records if r["model_id"] == model and r["is_warmup"])
        assert int(row["n_warmup_excluded"]) == warmups > 0
        assert int(row["gen_tokens_per_s_n"]) == len(measured)
        assert float(row["gen_tokens_per_s_mean"]) == pytest.approx(sum(measured) / len(measured))
        # two measured runs: a geometric mean and a CV, no interval, and the reason
        assert float(row["gen_tokens_per_s_geomean"]) == pytest.approx(math.sqrt(measured[0] * measured[1]))
        cv = statistics.stdev(measured) / statistics.mean(measured)
        assert float(row["gen_tokens_per_s_cv"]) == pytest.approx(cv)
        assert row["gen_tokens_per_s_ci95_low"] == row["gen_tokens_per_s_ci95_high"] == ""
        assert row["gen_tokens_per_s_note"] == "n=2: an interval needs at least 3 values"
        assert "log values" in row["ci_method"]
        # psutil-only CPU device: no energy; the note carries the records' null reason
        assert row["joules_per_token_mean"] == ""
        assert "energy" in row["joules_per_token_note"]
    assert result.tables["failures"] == []
    assert len(result.frame) == len(records) and result.frame["measured"].sum() == 8
    # the recorded run was noisy (2 shared cores): llama's two prefill runs differ 4.6x, and the table says so
    assert "prefill_tokens_per_s: CV 0.911 > 0.10" in summary[LLAMA]["warnings"]
    assert all(not any(r[c] and float(r[c]) < 0 for c in r if c.endswith("ci95_low")) for r in summary.values())


def test_recorded_smoke_ratios_are_paired_by_prompt_and_repetition(cfg, tmp_path):
    raw = _raw_dir_with(tmp_path, GOOD_RUN)
    analyze(cfg, raw, tmp_path / "out")
    records = [json.loads(line) for line in GOOD_RUN.read_text().splitlines()]
    value = {(r["model_id"], r["prompt_id"], r["repetition"]): r["gen_tokens_per_s"] for r in records
             if not r["is_warmup"]}
    rows = read_csv(tmp_path / "out" / "summary_tables" / "axes_summary.csv")
    row = next(r for r in rows if r["denominator_model"] == LLAMA and r["metric"] == "gen_tokens_per_s")
    ratios = [value[(MOE, "p01_short_fact", rep)] / value[(LLAMA, "p01_short_fact", rep)] for rep in (0, 1)]
    assert int(row["n_pairs"]) == 2 and float(row["ratio"]) == pytest.approx(math.sqrt(ratios[0] * ratios[1]))
    assert row["ci95_low"] == row["ci95_high"] == "" and "at least 3 pairs" in row["note"]
    assert "geometric mean of per-pair ratios" in row["ci_method"]
    assert all(r["n_pairs"] == "2" and r["ci95_low"] == "" for r in rows)


def test_recorded_failures_are_listed_not_averaged(cfg, tmp_path):
    raw = _raw_dir_with(tmp_path, GOOD_RUN, FAILED_RUN)
    result = analyze(cfg, raw, tmp_path / "out")
    failed = [json.loads(line) for line in FAILED_RUN.read_text().splitlines()]
    assert failed and all(r["status"] == "failed" for r in failed), "every cell of the truncated model fails"
    assert {r["failure"]["reason"] for r in failed} == {"load_failed"}
    assert sum(r["is_warmup"] for r in failed) == 1  # the warm-up failed too and is listed
    rows = read_csv(tmp_path / "out" / "summary_tables" / "failures.csv")
    assert len(rows) == len(failed)
    assert {r["reason"] for r in rows} == {r["failure"]["reason"] for r in failed}
    assert all(r["message"] for r in rows)
    cell = next(r for r in result.tables["per_model_summary"] if r["model_id"] == failed[0]["model_id"])
    assert cell["n_failed"] == sum(1 for r in failed if not r["is_warmup"])


def test_recorded_mixed_binaries_refused_then_flagged(cfg, tmp_path):
    raw = _raw_dir_with(tmp_path, GOOD_RUN, OTHER_BINARY_RUN)
    with pytest.raises(UserError) as err:
        analyze(cfg, raw, tmp_path / "out")
    message = err.value.one_line()
    assert "\n" not in message and "binary_sha256" in message and "cell (" in message
    shas = {json.loads(line)["provenance"]["binary_sha256"] for path in (GOOD_RUN, OTHER_BINARY_RUN)
            for line in path.read_text().splitlines()}
    assert len(shas) == 2 and all(sha in message for sha in shas)
    result = analyze(cfg, raw, tmp_path / "out", allow_mixed=True)
    flagged = [r for r in result.tables["per_model_summary"] if r["mixed_provenance"]]
    assert flagged and all("binary_sha256" in r["mixed_provenance"] for r in flagged)
    assert result.mixed_cells
    # pooled runs pair in the order they ran (each prompt and repetition twice): 4 pairs, not 2 x 2 x 2
    axes = result.tables["axes_summary"]
    assert axes and all(r["n_pairs"] == 4 and "binary_sha256" in r["mixed_provenance"] for r in axes)


# --- built records: cases a smoke run cannot show --------------------------------------------------

def test_warmups_excluded_and_interval_on_log_scale(cfg, tmp_path):
    values = [10.0, 12.0, 11.0, 13.0]
    raw = tmp_path / "raw"
    write_jsonl(raw, "run.jsonl", four_models({MOE: values, LLAMA: [20.0, 21.0, 22.0]}))
    result = analyze(cfg, raw, tmp_path / "out")
    row = next(r for r in result.tables["per_model_summary"] if r["model_id"] == MOE)
    assert row["n_warmup_excluded"] == 1 and row["gen_tokens_per_s_n"] == 4
    assert row["gen_tokens_per_s_mean"] == pytest.approx(11.5)
    logs = [math.log(v) for v in values]
    half = scipy_stats.t.ppf(0.975, 3) * statistics.stdev(logs) / math.sqrt(4)
    centre = statistics.mean(logs)
    assert row["gen_tokens_per_s_geomean"] == pytest.approx(math.exp(centre))
    assert row["gen_tokens_per_s_ci95_low"] == pytest.approx(math.exp(centre - half))
    assert row["gen_tokens_per_s_ci95_high"] == pytest.approx(math.exp(centre + half))
    assert row["gen_tokens_per_s_cv"] == pytest.approx(statistics.stdev(values) / 11.5)
    assert row["warnings"] == "gen_tokens_per_s: CV 0.112 > 0.10 over repetitions (prompt p01)"
    assert next(r for r in result.tables["per_model_summary"] if r["model_id"] == LLAMA)["warnings"] is None
def test_axes_pairs_come_from_models_yaml(cfg):
    pairs = axis_pairs(cfg)
    active = {d for axis, m, d in pairs if axis == "active_parameters"}
    memory = [d for axis, m, d in pairs if axis == "memory_footprint"]
    assert {m for _, m, _ in pairs} == {MOE}
    assert active == {LLAMA, QWEN}
    assert memory[0] == GEMMA and set(memory) == {LLAMA, QWEN, GEMMA}
    assert set(AXIS_RULES) == {"active_parameters", "memory_footprint"}


def test_axes_ratios_with_ci_and_missing_metric(cfg, tmp_path):
    raw = tmp_path / "raw"
    moe, llama = [9.0, 9.2, 8.8], [10.0, 10.1, 9.9]
    write_jsonl(raw, "run.jsonl", four_models({MOE: moe, LLAMA: llama, QWEN: [8.0, 8.2, 7.8], GEMMA: [6.0, 6.1, 5.9]}))
    analyze(cfg, raw, tmp_path / "out")
    rows = read_csv(tmp_path / "out" / "summary_tables" / "axes_summary.csv")
    gen = next(r for r in rows if r["axis"] == "active_parameters" and r["denominator_model"] == LLAMA
               and r["metric"] == "gen_tokens_per_s")
    log_ratios = [math.log(a / b) for a, b in zip(moe, llama)]  # paired by repetition
    half = scipy_stats.t.ppf(0.975, 2) * statistics.stdev(log_ratios) / math.sqrt(3)
    assert int(gen["n_pairs"]) == 3
    assert float(gen["ratio"]) == pytest.approx(math.exp(statistics.mean(log_ratios)))
    assert float(gen["ci95_low"]) == pytest.approx(math.exp(statistics.mean(log_ratios) - half))
    assert float(gen["ci95_high"]) == pytest.approx(math.exp(statistics.mean(log_ratios) + half))
    assert 0 < float(gen["ci95_low"]) < 0.9 < float(gen["ci95_high"])
    assert "geometric mean of per-pair ratios" in gen["ci_method"]
    assert gen["statement"].startswith("OLMoE-1B-7B-0924-Instruct gen tok/s = 0.90x Llama-3.2-1B-Instruct [")
    assert gen["statement"].endswith("geometric mean of 3 paired ratios")
    assert not any(r["metric"] == "joules_per_token" for r in rows)  # not measured on either side


def test_ratio_pairs_prompts_instead_of_pooling_them(cfg, tmp_path):
    """Two prompts 10x apart in speed, the MoE 0.8x the dense model on each with 1% noise: pooled, the
    prompts' spread would swamp the interval; paired, it is tight around 0.8."""
    raw = tmp_path / "raw"
    records = []
    for model, factor in ((MOE, 0.8), (LLAMA, 1.0)):
        for rep, noise in enumerate((1.0, 1.01, 0.99)):
            for prompt, speed in (("p01", 100.0), ("p02", 10.0)):
                records.append(make_record(model, factor * speed * noise, rep=rep, prompt=prompt))
    records.append(make_record(MOE, 80.0, rep=3, prompt="p01"))  # its dense partner was never run
    write_jsonl(raw, "run.jsonl", records)
    result = analyze(cfg, raw, tmp_path / "out")
    gen = next(r for r in result.tables["axes_summary"] if r["metric"] == "gen_tokens_per_s")
    assert gen["n_pairs"] == 6 and gen["numerator_n"] == 7 and gen["denominator_n"] == 6
    assert gen["ratio"] == pytest.approx(0.8)
    assert 0.79 < gen["ci95_low"] < 0.8 < gen["ci95_high"] < 0.81
    assert "1 record(s) without a partner" in gen["note"]


def test_first_measured_run_outlier_is_warned(cfg, tmp_path):
    raw = tmp_path / "raw"
    records = four_models({MOE: [6.0, 10.0, 10.2, 9.9], LLAMA: [10.1, 10.0, 10.2, 9.9]})
    write_jsonl(raw, "run.jsonl", records)
    result = analyze(cfg, raw, tmp_path / "out")
    rows = {r["model_id"]: r for r in result.tables["per_model_summary"]}
    assert "gen_tokens_per_s: first measured run 6 is 40% from the median 10" in rows[MOE]["warnings"]
    assert rows[LLAMA]["warnings"] is None


def test_energy_ratio_when_measured(cfg, tmp_path):
    raw = tmp_path / "raw"
    records = four_models({MOE: [5.0, 5.1, 4.9]}, device="jetson", energy=0.2, source="real")
    records += four_models({LLAMA: [7.0, 7.1, 6.9]}, device="jetson", energy=0.1, source="real")
    write_jsonl(raw, "run.jsonl", records)
    result = analyze(cfg, raw, tmp_path / "out")
    jpt = next(r for r in result.tables["axes_summary"] if r["metric"] == "joules_per_token")
    assert jpt["ratio"] == pytest.approx(2.0)


def test_mixed_model_hash_refused(cfg, tmp_path):
    raw = tmp_path / "raw"
    records = four_models({MOE: [1.0, 2.0]})
    records.append(make_record(MOE, 3.0, rep=5, model_sha="9" * 64))
    write_jsonl(raw, "run.jsonl", records)
    with pytest.raises(UserError, match="model_sha256"):
        analyze(cfg, raw, tmp_path / "out")


def test_malformed_line_names_file_and_line(cfg, tmp_path):
    raw = tmp_path / "raw"
    path = write_jsonl(raw, "run.jsonl", four_models({MOE: [1.0, 2.0]}))
    with open(path, "a") as handle:
        handle.write('{"schema_version": 1, "broken\n')
    with pytest.raises(UserError) as err:
        analyze(cfg, raw, tmp_path / "out")
    assert "run.jsonl" in err.value.one_line() and "line 4" in err.value.one_line()


def test_schema_invalid_line_refused(cfg, tmp_path):
    raw = tmp_path / "raw"
    record = make_record(MOE)
    bad = copy.deepcopy(record)
    del bad["provenance"]
    write_jsonl(raw, "run.jsonl", [record, bad])
    with pytest.raises(UserError, match="line 2"):
        analyze(cfg, raw, tmp_path / "out")


def test_sequence_length_and_thread_sweep_tables(cfg, tmp_path):
    raw = tmp_path / "raw"
    records = []
    for n_predict in (64, 256):
        for cls, tokens in (("short", 20), ("long", 900)):
            records += [make_record(MOE, 10.0 + i + n_predict / 100, rep=i, experiment="experiment_2_sequence_length",
                                    n_predict=n_predict, prompt=cls, length_class=cls, prompt_tokens=tokens)
                        for i in range(2)]
    for threads, base in ((4, 8.0), (6, 12.0), (8, 10.0)):
        records += [make_record(LLAMA, base + 0.1 * i, rep=i, experiment="experiment_a_cpu_thread_sweep",
                                threads=threads) for i in range(3)]
    write_jsonl(raw, "run.jsonl", records)
    result = analyze(cfg, raw, tmp_path / "out")
    seq = result.tables["sequence_length_summary"]
    assert {(r["n_predict"], r["prompt_length_class"]) for r in seq} == {(64, "short"), (64, "long"),
                                                                          (256, "short"), (256, "long")}
    assert next(r for r in seq if r["prompt_length_class"] == "long")["prompt_tokens_mean"] == 900
    optimum = result.tables["thread_optimum_summary"]
    assert len(optimum) == 1 and optimum[0]["best_threads"] == 6 and optimum[0]["runner_up_threads"] == 8
    assert optimum[0]["best_ci_clear_of_runner_up"] is True
    assert len(result.tables["cpu_thread_sweep_summary"]) == 3


def test_failed_oom_record_in_failures(cfg, tmp_path):
    raw = tmp_path / "raw"
    records = four_models({MOE: [1.0, 2.0]}) + [make_record(GEMMA, None, rep=0, failure="oom_killed")]
    write_jsonl(raw, "run.jsonl", records)
    result = analyze(cfg, raw, tmp_path / "out")
    assert [r["reason"] for r in result.tables["failures"]] == ["oom_killed"]
    gemma = next(r for r in result.tables["per_model_summary"] if r["model_id"] == GEMMA)
    assert gemma["n_failed"] == 1 and gemma["gen_tokens_per_s_n"] == 0
    assert "oom_killed" in gemma["gen_tokens_per_s_note"]


def test_roofline_uses_the_bandwidth_measured_on_the_host_when_devices_yaml_has_none(tmp_path):
    """devices.yaml gives `cpu` no bandwidth; the runs' own measurement (provenance.host) fills it."""
    records = [json.loads(line) for line in GOOD_RUN.read_text().splitlines()]
    for i, record in enumerate(records):
        record["provenance"]["host"]["memory_bandwidth"] = {
            "gb_per_s": 20.0 + (i % 3), "method": "numpy copy (test)", "threads": 2,
            "buffer_bytes_per_thread": 1, "passes_gb_per_s": [20.0]}
    raw = tmp_path / "raw"
    write_jsonl(raw, GOOD_RUN.name, records)
    result = analyze(analysis_config(), raw, tmp_path / "out")
    rows = [r for r in result.tables["roofline_summary"] if r["model_id"] == MOE]
    assert rows and all(r["bandwidth_gb_per_s"] == 21.0 for r in rows)  # median of 20, 21, 22
    assert all(r["bandwidth_source"].startswith("measured on the run's host (numpy copy (test)") for r in rows)
    assert all(r["fraction_of_active_bound"] is not None for r in rows)
    untouched = analyze(analysis_config(), GOOD_RUN.parent, tmp_path / "plain", allow_mixed=True)
    plain = [r for r in untouched.tables["roofline_summary"] if r["model_id"] == MOE and r["device"] == "cpu"]
    assert plain and all(r["bandwidth_gb_per_s"] is None for r in plain)  # no measurement, no invented bound


def test_invoke_analyze_into_a_read_only_results_directory_is_one_line(tmp_path):
    """The task front turns a write the disk refuses into one line and exit 2, not a traceback."""
    if os.geteuid() != 0:
        pytest.skip("mounting a read-only tmpfs needs root")
    raw, results = tmp_path / "raw", tmp_path / "results"
    raw.mkdir()
    shutil.copy(FIXTURES / "raw" / "run_cpu_experiment_1_efficiency_smoke.jsonl", raw)
    results.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(results)], check=True)
    try:
        done = subprocess.run([str(Path(sys.executable).parent / "invoke"), "analyze", "--raw-dir", str(raw),
                               "--output-dir", str(results)], cwd=CONFIG_DIR.parent, capture_output=True, text=True)
    finally:
        subprocess.run(["umount", str(results)], check=True)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stdout + done.stderr, done.stderr
    assert str(results) in lines[0] and "could not write" in lines[0] and "(fix: " in lines[0]


def test_warmup_summary_on_the_recorded_h200_run():
    """The committed H200 records (results/cuda_sm90-h200_2026-12-01/raw, one warm-up per model):
    OLMoE's first measured experiment-1 run sits 35% above the rest of its prompt, an outlier, so its
    warm-up is flagged; Qwen's sits within 2%."""
    from moebench.analysis.frame import load_records, to_frame
    from moebench.analysis.warmup import warmup_table

    raw = Path(__file__).resolve().parents[2] / "results" / "cuda_sm90-h200_2026-12-01" / "raw"
    table = warmup_table(to_frame(load_records(raw)[1]))
    exp1 = table[table["experiment"] == "experiment_1_efficiency"].set_index("model_id")
    olmoe, qwen = exp1.loc["olmoe-1b-7b-0924-instruct-q4km"], exp1.loc["qwen2.5-1.5b-instruct-q4km"]
    assert olmoe["warmup_n"] == 1 and not olmoe["warmup_enough"] and olmoe["first_vs_rest"] > 0.3
    assert "MADs" in olmoe["note"] and qwen["warmup_enough"] and abs(qwen["first_vs_rest"]) < 0.02
    swept = table[(table["experiment"] == "experiment_2_sequence_length") & (table["n_predict"] == 1024)]
    assert (swept["warmup_n"] == 0).all() and swept["warmup_gen_tokens_per_s"].isna().all()
