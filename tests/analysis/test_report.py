"""analysis/report.py: REPORT.md sections, replica statement, and one verdict line per reference claim."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from moebench.analysis.tables import analyze
from moebench.config import REPO_ROOT
from moebench.analysis.figures import render_figures
from moebench.analysis.report import section_verification, write_report
from test_analyze import GOOD_RUN, FAILED_RUN, LLAMA, MOE, analysis_config, four_models, write_jsonl

VERDICT = re.compile(r"^- \*\*(?P<id>[a-z0-9_]+)\*\*: (?P<status>reproduced|not reproduced|not comparable) — (?P<why>.+)$",
                     re.MULTILINE)


def _report(tmp_path: Path, raw: Path, reference_dir: Path | None = None) -> str:
    cfg = analysis_config()
    out = tmp_path / "out"
    result = analyze(cfg, raw, out)
    render_figures(out / "summary_tables", out / "figures", out / "figures_pub")
    return write_report(cfg, result, out, reference_dir=reference_dir).read_text()


def _recorded_report(tmp_path: Path) -> str:
    """The report of the recorded smoke run and its failure run, compared with themselves as the reference."""
    raw = tmp_path / "raw"
    raw.mkdir()
    for path in (GOOD_RUN, FAILED_RUN):
        shutil.copy(path, raw / path.name)
    return _report(tmp_path, raw, reference_dir=raw)


def _verdicts(text: str) -> dict[str, tuple[str, str]]:
    return {m["id"]: (m["status"], m["why"]) for m in VERDICT.finditer(text)}


def test_recorded_replica_run_report(tmp_path):
    text = _recorded_report(tmp_path)
    cfg = analysis_config()
    verdicts = _verdicts(text)
    assert set(verdicts) == {c.id for c in cfg.reference.claims}
    for claim in cfg.reference.claims:
        status, why = verdicts[claim.id]
        assert status == "not comparable"
        assert f"records are from device cpu, claim is for {claim.device}" in why
    assert "Replica weights were used" in text and "replica" in text
    # the recorded runs went through the build manifest: commit known, verification state per record
    assert f"llama.cpp commit: `{cfg.pin('offline').commit}`" in text
    n_good, n_failed = (len(path.read_text().splitlines()) for path in (GOOD_RUN, FAILED_RUN))
    assert (f"hashes verified before the run: yes — {n_good} records; no (run with --allow-unverified) — "
            f"{n_failed} records") in text
    assert "load_failed" in text  # the failures table
    assert "![gen_throughput](figures/gen_throughput.png)" in text
    assert "thread_sweep: skipped" in text
    assert "## Comparison with an earlier run" in text
    assert "energy" in text  # why J/token is missing on a psutil-only device


def _jetson_run(moe_gen, llama_gen, energy_moe=None, energy_llama=None, source="real"):
    return (four_models({MOE: moe_gen}, device="jetson", source=source, energy=energy_moe)
            + four_models({LLAMA: llama_gen}, device="jetson", source=source, energy=energy_llama))


def test_verdicts_reproduced_and_not(tmp_path):
    raw = tmp_path / "raw"
    # gen ratio ~0.69 (claim 0.69 +- 0.05); J/token ratio 3.0 (claim 2.1 +- 0.2)
    write_jsonl(raw, "run.jsonl", _jetson_run([6.9, 7.0, 6.8, 6.95], [10.0, 10.1, 9.9, 10.05], 0.30, 0.10))
    verdicts = _verdicts(_report(tmp_path, raw))
    assert verdicts["jetson_gen_olmoe_vs_llama"][0] == "reproduced"
    assert "real weights" in verdicts["jetson_gen_olmoe_vs_llama"][1]
    assert "geometric mean of 4 paired ratios" in verdicts["jetson_gen_olmoe_vs_llama"][1]
    assert verdicts["jetson_energy_olmoe_vs_llama"][0] == "not reproduced"
    assert verdicts["m2_gen_olmoe_vs_llama"][0] == "not comparable"


def test_verdict_not_reproduced_for_gen(tmp_path):
    raw = tmp_path / "raw"
    write_jsonl(raw, "run.jsonl", _jetson_run([9.0, 9.1, 8.9], [10.0, 10.1, 9.9]))
    verdicts = _verdicts(_report(tmp_path, raw))
    assert verdicts["jetson_gen_olmoe_vs_llama"][0] == "not reproduced"
    status, why = verdicts["jetson_energy_olmoe_vs_llama"]
    assert status == "not comparable" and "joules_per_token not measured" in why


def test_verdict_replica_on_claim_device_not_comparable(tmp_path):
    raw = tmp_path / "raw"
    write_jsonl(raw, "run.jsonl", _jetson_run([6.9, 7.0, 6.8], [10.0, 10.1, 9.9], source="replica"))
    text = _report(tmp_path, raw)
    status, why = _verdicts(text)["jetson_gen_olmoe_vs_llama"]
    assert status == "not comparable" and "replica weights" in why
    assert "Replica weights were used" in text


INTERVAL = re.compile(r"\[(-?[\d,]+\.\d+), (-?[\d,]+\.\d+)\]")


def test_summary_gives_each_moe_dense_pair_once(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(GOOD_RUN, raw / GOOD_RUN.name)
    text = _report(tmp_path, raw)
    summary = text.split("## Summary: MoE / dense", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in summary.splitlines() if line.startswith("| experiment_1_efficiency")]
    dense = ["gemma-2-2b-it-q4km", LLAMA, "qwen2.5-1.5b-instruct-q4km"]
    assert sorted(row.split(" | ")[4] for row in rows) == sorted(dense)  # both axes share pairs: once each
    llama_row = next(row for row in rows if f" | {LLAMA} | " in row)
    # the smoke run has 2 repetitions of one prompt: 2 pairs, a paired ratio, and no interval
    assert re.search(r"\| 2 \| \d+\.\d\dx \(n=2, no interval\) \|", llama_row)
    assert text.index("## Summary: MoE / dense") < text.index("## Where: provenance")


def test_smoke_report_has_no_negative_or_unbounded_interval_and_shows_paired_ratios(tmp_path):
    text = _recorded_report(tmp_path)
    assert "unbounded" not in text.lower()
    assert all(float(low.replace(",", "")) >= 0 for low, _ in INTERVAL.findall(text))
    assert "Paired ratios, MoE over each dense model: the geometric mean of per-pair ratios" in text
    assert "same prompt at the same repetition index" in text
    assert ("No interval for gen tok/s, prefill tok/s, TTFT in 4 of 4 cells: "
            "n=2: an interval needs at least 3 values.") in text
    # CVs and hyperfine-style warnings under the per-model table
    assert "| CV gen / prefill / TTFT |" in text
    assert "**Warnings** (3 of 4 cells)" in text and "prefill_tokens_per_s: CV 0.911 > 0.10" in text


def test_report_with_three_or_more_pairs_prints_positive_intervals(tmp_path):
    raw = tmp_path / "raw"
    # a noisy run: a Student-t interval on the raw values (or Fieller's for a ratio) would cross zero here
    write_jsonl(raw, "run.jsonl", _jetson_run([30.0, 6.0, 14.0, 9.0], [8.0, 2.0, 20.0, 3.0]))
    text = _report(tmp_path, raw)
    summary = text.split("## Summary: MoE / dense", 1)[1].split("\n## ", 1)[0]
    llama_row = next(line for line in summary.splitlines() if f" | {LLAMA} | " in line)
    assert re.search(r"\| 4 \| \d+\.\d\dx \[\d+\.\d\d, \d+\.\d\d\] \|", llama_row)
    lows = [float(low.replace(",", "")) for low, _ in INTERVAL.findall(text)]
    assert lows and all(low > 0 for low in lows)
    assert "unbounded" not in text.lower()


def test_invoke_report_turns_records_from_elsewhere_into_tables_figures_and_report(tmp_path):
    """`invoke report` is reproduce's last three stages for records already made (another host's)."""
    raw, out = tmp_path / "raw", tmp_path / "results"
    raw.mkdir()
    shutil.copy(GOOD_RUN, raw / GOOD_RUN.name)
    invoke = [str(Path(sys.executable).parent / "invoke"), "report"]
    done = subprocess.run([*invoke, "--raw-dir", str(raw), "--output-dir", str(out)], cwd=REPO_ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert [line.split()[0] for line in done.stdout.splitlines()[-4:]] == ["analyze", "figures", "report", "total"]
    text = (out / "REPORT.md").read_text()
    assert "## Findings: the MoE against each dense model" in text and (out / "figures" / "gen_throughput.png").is_file()
    missing = subprocess.run([*invoke, "--raw-dir", str(tmp_path / "nowhere")], cwd=REPO_ROOT,
                             capture_output=True, text=True)
    lines = missing.stderr.strip().splitlines()
    assert missing.returncode == 2 and len(lines) == 1 and "nowhere" in lines[0] and "(fix: " in lines[0]


def test_the_verification_section_shows_each_headline_ratio_and_its_decision():
    """From the committed comparison of the first H200 run (A) with the H100 run (B)."""
    section = section_verification(REPO_ROOT / "results" / "cuda_sm90-h100_2026-12-06")
    decode = next(line for line in section.splitlines() if "| llama-3.2-1b-instruct-q4km | gen_tokens_per_s |" in line)
    assert ("| 0.241x [0.231, 0.252] (36 pairs, cli) | 0.316x [0.311, 0.321] (36 pairs, cli) | 1.310x [1.251, 1.372] "
            "| 5.0% | not reproduced | machines of another kind: A NVIDIA H200") in decode
    assert "- tolerance: MLPerf's replication rule" in section
    assert "- Results Reproduced: not upgraded: the two bundles ran different work in 3 cell(s)" in section


def test_a_pin_comparison_shows_shifts_it_does_not_judge():
    """The offline pin's server run (A) against the paper pin's cli run (B): every line not comparable."""
    section = section_verification(REPO_ROOT / "results" / "cuda_sm90-h200_2026-12-04")
    decode = next(line for line in section.splitlines()
                  if "n_predict=128 | llama-3.2-1b-instruct-q4km | gen_tokens_per_s |" in line)
    assert "| 0.271x [0.259, 0.282] (33 pairs, server) | 0.241x [0.231, 0.252] (36 pairs, cli) | 0.891x" in decode
    assert "| not comparable | runner server in A, cli in B" in decode
