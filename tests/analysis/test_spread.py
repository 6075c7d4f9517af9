"""spread.py and stats.machine_spread: within-run against between-machine variation of the study's ratios."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
from test_analyze import LLAMA, MOE, make_record, write_jsonl

from moebench.analysis.frame import load_records, to_frame
from moebench.analysis.report import section_spread
from moebench.analysis.spread import spread_table
from moebench.analysis.stats import machine_spread
from moebench.analysis.tables import analyze
from moebench.config import REPO_ROOT, load_config

H200_RUN = REPO_ROOT / "results" / "cuda_sm90-h200_2026-12-04" / "raw"
H200 = "NVIDIA H200 on Intel(R) Xeon(R) Processor"
H100 = "NVIDIA H100 80GB HBM3 on Intel(R) Xeon(R) Processor"


def on_machine(record: dict, host: str, boot: str = "boot-1") -> dict:
    record["provenance"]["host"].update(host_id=host, host_id_basis="machine-id", boot_id=boot)
    return record


def test_random_effects_matches_dersimonian_laird_by_hand():
    offsets, d = (-0.40, -0.30, -0.35), 0.02
    logs = [[o - d, o, o + d] for o in offsets]
    got = machine_spread(logs)
    w = 3 / d ** 2  # each machine: variance of its mean = d^2 / 3
    mean = sum(offsets) / 3
    q = w * sum((o - mean) ** 2 for o in offsets)
    tau2 = (q - 2) / (3 * w - w)
    assert got.machines == 3
    assert got.tau == pytest.approx(math.sqrt(tau2))
    assert got.ratio == pytest.approx(math.exp(mean))
    assert 0 < got.ci_low < got.ratio < got.ci_high
    assert got.predict_low < got.ci_low and got.predict_high > got.ci_high  # another machine: wider still
    assert got.between_cv == pytest.approx(math.sqrt(math.expm1(tau2)))


def test_machines_that_agree_have_no_between_machine_spread():
    logs = [[-0.31, -0.30, -0.29], [-0.305, -0.30, -0.295]]
    got = machine_spread(logs)
    assert got.tau == 0.0 and got.between_cv == 0.0
    assert got.predict_low is None and "at least 3 machines" in got.note


def test_one_machine_leaves_the_spread_unmeasured_and_short_machines_out():
    assert machine_spread([[-0.3, -0.2, -0.25]]).note == "between-machine spread unmeasured: one machine"
    got = machine_spread([[-0.3, -0.2, -0.25], [-0.1, -0.1]])
    assert got.machines == 1 and "1 machine(s) with fewer than 3 pairs left out" in got.note


def _lab(host: str, moe_tps: float, *, boot: str = "boot-1") -> list[dict]:
    """Three prompts x three repetitions of OLMoE and Llama on one machine, with a little noise."""
    out = []
    for p, prompt in enumerate(("p01", "p02", "p03")):
        for rep in range(3):
            jitter = 1 + 0.01 * ((p + rep) % 3 - 1)
            out.append(on_machine(make_record(MOE, moe_tps * jitter, rep=rep, prompt=prompt), host, boot))
            out.append(on_machine(make_record(LLAMA, 20.0, rep=rep, prompt=prompt), host, boot))
    return out


def _table(tmp_path: Path, records: list[dict]):
    write_jsonl(tmp_path, "run.jsonl", records)
    return spread_table(load_config(), to_frame(load_records(tmp_path)[1]))


def test_two_machines_pair_inside_each_machine(tmp_path):
    table = _table(tmp_path, _lab("aaaa", 10.0) + _lab("bbbb", 12.0))
    row = table[(table["metric"] == "gen_tokens_per_s") & (table["axis"] == "memory_footprint")].iloc[0]
    assert row["n_machines"] == 2 and row["n_pairs"] == 18 and row["machine_basis"] == "host"
    assert "aaaa/boot-1: 0.5" in row["per_machine"] and "bbbb/boot-1: 0.6" in row["per_machine"]
    assert row["ci95_low"] < 0.5 and row["ci95_high"] > 0.6  # the interval carries the machines' disagreement
    assert row["within_ci95_high"] - row["within_ci95_low"] < row["ci95_high"] - row["ci95_low"]
    assert row["between_machine_cv"] > 0.05


def test_a_reboot_counts_as_another_machine_and_no_pair_spans_two(tmp_path):
    moe_here = [r for r in _lab("aaaa", 10.0) if r["model_id"] == MOE]
    dense_there = [r for r in _lab("aaaa", 10.0, boot="boot-2") if r["model_id"] == LLAMA]
    assert _table(tmp_path, moe_here + dense_there).empty


def test_records_without_host_ids_count_each_run(tmp_path):
    records = _lab("aaaa", 10.0) + _lab("bbbb", 12.0)
    for r in records:
        r["run_id"] = "run-" + r["provenance"]["host"].pop("host_id")
    table = _table(tmp_path, records)
    assert set(table["machine_basis"]) == {"run"} and set(table["n_machines"]) == {2}
    assert "run-aaaa: 0.5" in table.iloc[0]["per_machine"]


def test_the_committed_single_machine_run_says_its_spread_is_unmeasured(tmp_path):
    analysis = analyze(load_config(), H200_RUN, tmp_path)
    section = section_spread(analysis)
    assert "**Between-machine spread is unmeasured**" in section
    assert ("| NVIDIA H200 on Intel(R) Xeon(R) Processor | llama-3.2-1b-instruct-q4km | gen_tokens_per_s | 1 | 36 | "
            "0.241x [0.231, 0.252] | — |") in section
    assert (tmp_path / "summary_tables" / "spread_summary.csv").is_file()


def test_the_committed_two_machine_runs_measure_the_spread_between_them(tmp_path):
    """The first machine's records name no host (its run is the unit), the second machine's do."""
    two = REPO_ROOT / "results" / "cuda_sm90-h200_2026-12-04_two-machines" / "raw"
    section = section_spread(analyze(load_config(), two, tmp_path))
    assert "unmeasured" not in section
    assert "one boot of one host where the records name it (host_id, boot_id), else the run" in section
    llama = next(line for line in section.splitlines()
                 if line.startswith(f"| {H200} | llama-3.2-1b-instruct-q4km | gen_"))
    assert "| 2 | 72 | 0.233x [0.226, 0.240] | 0.233x [0.148, 0.365] | 4.6% | — |" in llama
    assert "e5e5e3: 0.2412 (n=36)" in llama and "5bce98f73f3ed0c8/d9f89ab4: 0.2246 (n=36)" in llama


def test_machines_of_another_kind_get_rows_of_their_own(tmp_path):
    other_gpu = _lab("bbbb", 12.0)
    for r in other_gpu:
        r["provenance"]["gpu"] = {"name": "another GPU"}
    table = _table(tmp_path, _lab("aaaa", 10.0) + other_gpu)
    gen = table[(table["metric"] == "gen_tokens_per_s") & (table["axis"] == "memory_footprint")]
    assert sorted(gen["machine_kind"]) == ["another GPU on test cpu", "test cpu"]
    assert set(gen["n_machines"]) == {1} and set(gen["between_machine_cv"]) == {None}


def test_an_h100_beside_the_two_h200s_is_no_third_h200(tmp_path):
    """The committed H100 run analyzed with the two H200 machines: the H200s' spread stays what it was."""
    raw = tmp_path / "raw"
    shutil.copytree(REPO_ROOT / "results" / "cuda_sm90-h200_2026-12-04_two-machines" / "raw", raw)
    shutil.copytree(REPO_ROOT / "results" / "cuda_sm90-h100_2026-12-06" / "raw", raw / "h100")
    section = section_spread(analyze(load_config(), raw, tmp_path / "out"))
    lines = [line for line in section.splitlines() if "| llama-3.2-1b-instruct-q4km | gen_tokens_per_s |" in line]
    h200 = next(line for line in lines if line.startswith(f"| {H200} |"))
    h100 = next(line for line in lines if line.startswith(f"| {H100} |"))
    assert "| 2 | 72 | 0.233x [0.226, 0.240] | 0.233x [0.148, 0.365] | 4.6% |" in h200
    assert "| 1 | 36 | 0.316x [0.311, 0.321] | — | — | — |" in h100
