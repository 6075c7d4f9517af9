"""End to end through the invoke front, as a user runs it: `invoke reproduce --device cpu --smoke`
(build, replicas, verify, both cpu experiments, analysis, figures, report), then the same command
again, which must resume and record nothing twice; and the router-overhead run of `cpu_patched`."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from moebench.config import REPO_ROOT, load_config
from moebench.run.records import read_records, validate_record

pytestmark = pytest.mark.slow

OLMOE = "olmoe-1b-7b-0924-instruct-q4km"
VERDICT = re.compile(r"^- \*\*(?P<id>[a-z0-9_]+)\*\*: (?P<status>reproduced|not reproduced|not comparable) — (?P<why>.+)$",
                     re.MULTILINE)
CELLS_TO_RUN = re.compile(r"^(?P<experiment>\S+) on (?P<device>\S+): (?P<todo>\d+) cells to run "
                          r"\((?P<done>\d+) already recorded\)", re.MULTILINE)


def _invoke_path() -> str:
    beside = Path(sys.executable).parent / "invoke"  # the venv running the tests
    found = str(beside) if beside.is_file() else shutil.which("invoke")
    assert found, "invoke is not installed in the test environment (run scripts/bootstrap.sh)"
    return found


def invoke(*args: str, timeout_s: float = 1800) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    done = subprocess.run([_invoke_path(), *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout_s)
    return done, time.monotonic() - started


def all_records(raw: Path) -> list[dict]:
    return [record for path in sorted(raw.glob("run_*.jsonl")) for record in read_records(path)]


@pytest.fixture(scope="module")
def reproduction(tmp_path_factory, pinned_bin_dir, tiny_replica_paths):
    """Two identical `invoke reproduce --device cpu --smoke` runs into one temporary raw/results pair."""
    tmp = tmp_path_factory.mktemp("reproduce")
    raw, results = tmp / "raw", tmp / "results"
    args = ("reproduce", "--device", "cpu", "--smoke", "--raw-dir", str(raw), "--output-dir", str(results))
    first, first_s = invoke(*args)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    records_after_first = all_records(raw)
    report_after_first = (results / "REPORT.md").read_text(encoding="utf-8")
    second, second_s = invoke(*args)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    print(f"\ninvoke reproduce --device cpu --smoke: {first_s:.1f} s; the repeat: {second_s:.1f} s")
    return {"raw": raw, "results": results, "first": first, "second": second, "first_s": first_s,
            "records_after_first": records_after_first, "report_after_first": report_after_first}


def test_reproduce_writes_valid_records_with_full_provenance(reproduction):
    records = reproduction["records_after_first"]
    cfg = load_config()
    assert records
    assert {r["experiment"] for r in records} == set(cfg.device("cpu").experiments)
    assert {r["model_id"] for r in records} == set(cfg.models.models)
    for record in records:
        validate_record(record)  # schema, and every null measurement carries its reason
        assert record["model_source"] == "replica" and record["replica_scale"] == "tiny"
        assert record["status"] == "ok", record["failure"]
        prov = record["provenance"]
        assert prov["model_source"] == "replica"
        assert prov["tokenizer"] == cfg.models.models[record["model_id"]].tokenizer.statement
        unexplained = [name for name, value in prov.items()
                       if value is None and not prov["null_reasons"].get(name)]
        assert not unexplained, f"provenance fields null without a reason: {unexplained}"
        # a run of the kit's own build: everything the manifest and the host know is filled
        for name in ("binary_sha256", "llama_cpp_commit", "source_tree_hash", "compiler", "build_flags",
                     "toolchain_id", "model_sha256", "kit_commit", "config_sha256", "host"):
            assert prov[name], name
        assert prov["verified"] is True and prov["allow_unverified"] is False
    assert len({r["provenance"]["binary_sha256"] for r in records}) == 1


def test_reproduce_writes_results_figures_and_report(reproduction):
    results, records = reproduction["results"], reproduction["records_after_first"]
    with open(results / "benchmark_results.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(records)
    tables = sorted((results / "summary_tables").glob("*.csv"))
    assert {"per_model_summary.csv", "axes_summary.csv", "failures.csv"} <= {p.name for p in tables}
    for table in tables:
        assert table.read_text(encoding="utf-8").strip(), f"{table} is empty"
    with open(results / "summary_tables" / "per_model_summary.csv", newline="", encoding="utf-8") as handle:
        assert len({row["model_id"] for row in csv.DictReader(handle)}) == 4
    pngs = sorted((results / "figures").glob("*.png"))
    pdfs = sorted((results / "figures_pub").glob("*.pdf"))
    assert {"gen_throughput", "prefill_throughput", "peak_rss_vs_model_size", "axes_ratios"} <= {p.stem for p in pngs}
    assert {p.stem for p in pdfs} == {p.stem for p in pngs}
    assert all(p.read_bytes().startswith(b"\x89PNG") and p.stat().st_size > 1000 for p in pngs)
    assert all(p.read_bytes().startswith(b"%PDF") and p.stat().st_size > 1000 for p in pdfs)

    text = reproduction["report_after_first"]
    assert "## Reproduction verdict" in text
    section = text.split("## Reproduction verdict", 1)[1].split("\n## ", 1)[0]
    verdicts = [m.groupdict() for m in VERDICT.finditer(section)]
    claims = load_config().reference.claims
    assert [v["id"] for v in verdicts] == [c.id for c in claims]
    for claim, found in zip(claims, verdicts):
        assert found["status"] == "not comparable"
        assert f"records are from device cpu, claim is for {claim.device}" in found["why"]
    assert "Replica weights were used" in text
    cfg = load_config()
    for model_id, spec in cfg.models.models.items():
        assert re.search(rf"\| {re.escape(model_id)} \| replica \(tiny\) \| {re.escape(spec.tokenizer.statement)} \|",
                         text), model_id


def test_a_bundle_of_the_reproduction_backs_every_badge_line_with_its_members(reproduction, tmp_path):
    """README's main command, then `invoke bundle` of what it wrote: each line of BADGES.md that names
    members of the bundle names members it holds, and taking them out of the bundle changes the line."""
    from moebench.evidence.badges import BADGES_NAME, badges_md
    from moebench.evidence.bundle import read_bundle

    out = tmp_path / "lab.tar.gz"
    done, _ = invoke("bundle", "--output", str(out), "--raw-dir", str(reproduction["raw"]),
                     "--results-dir", str(reproduction["results"]))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    members = read_bundle(out).members
    held = members[BADGES_NAME].decode("utf-8")
    assert held == badges_md(members)
    checks = [line for line in held.splitlines() if line.startswith(("- [x] ", "- [ ] "))]
    backed = [line for line in checks if " — " in line]
    assert any(line.startswith("- [x] ") for line in backed) and len(backed) >= len(checks) - 2
    for line in backed:
        named = line.rsplit(" — ", 1)[1].split(", ")
        assert set(named) <= set(members), line
        key = line[len("- [x] "):].split(":", 1)[0]
        without = badges_md({name: data for name, data in members.items() if name not in named})
        [after] = [other for other in without.splitlines() if other[len("- [x] "):].startswith(key + ":")]
        assert after != line, line
        if line.startswith("- [x] "):
            assert after.startswith("- [ ] "), after


def test_a_second_reproduce_resumes_and_records_nothing_twice(reproduction):
    first, second = reproduction["first"].stdout, reproduction["second"].stdout
    before = reproduction["records_after_first"]
    after = all_records(reproduction["raw"])
    assert len(after) == len(before)
    assert Counter(r["cell_key"] for r in after).most_common(1)[0][1] == 1  # no cell recorded twice
    assert {r["record_id"] for r in after} == {r["record_id"] for r in before}
    ran = {m["experiment"]: (int(m["todo"]), int(m["done"])) for m in CELLS_TO_RUN.finditer(first)}
    resumed = {m["experiment"]: (int(m["todo"]), int(m["done"])) for m in CELLS_TO_RUN.finditer(second)}
    assert set(ran) == set(resumed) == set(load_config().device("cpu").experiments)
    per_experiment = Counter(r["experiment"] for r in before)
    for experiment, (todo, done) in ran.items():
        assert (todo, done) == (per_experiment[experiment], 0)
        assert resumed[experiment] == (0, per_experiment[experiment])
    assert "## Reproduction verdict" in (reproduction["results"] / "REPORT.md").read_text(encoding="utf-8")


@pytest.fixture(scope="module", params=["offline", "paper"])
def patched_build(request, pinned_bin_dir, tiny_replica_paths):
    """The cpu_patched build at each pin, with that pin's patch (the paper pin's source from the b4404
    mirror through insteadOf): built on first use, then a content-checked no-op."""
    from moebench.pins.build import build

    with pytest.MonkeyPatch.context() as env:
        if request.param == "paper":
            env.setenv("GIT_CONFIG_GLOBAL", str(request.getfixturevalue("b4404_git_config")))
        yield build(load_config(), "cpu_patched", request.param, progress=False)


def test_cpu_patched_run_records_router_overhead(patched_build, tmp_path):
    out = tmp_path / "router.jsonl"
    done, _ = invoke("run", "--device", "cpu_patched", "--experiment", "experiment_1_efficiency", "--smoke",
                     "--only-models", OLMOE, "--pin", patched_build["pin"], "--output", str(out))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    records = list(read_records(out))
    assert records and {r["model_id"] for r in records} == {OLMOE}
    for record in records:
        validate_record(record)
        assert record["status"] == "ok" and record["runner_mode"] == "cli"
        assert record["device"] == "cpu_patched"
        assert record["provenance"]["binary_sha256"] == patched_build["binaries"]["llama-cli"]["sha256"]
        routing, expert = record["router_routing_ms"], record["router_expert_ffn_ms"]
        assert isinstance(routing, float) and isinstance(expert, float)
        assert routing > 0 and expert > 0  # OLMoE: every layer routes to 8 of 64 experts
        assert "router_routing_ms" not in record["null_reasons"]
        detail = record["monitors"]["engine"]["router_overhead"]
        assert detail["decode_graphs"] == record["knobs"]["n_predict"] - 1
        assert detail["routing_ms"] == routing and 0 < detail["routing_share"] < 1
    assert json.loads(out.read_text().splitlines()[0])["provenance"]["llama_cpp_commit"] == patched_build["commit"]


def test_replicas_of_another_pin_are_written_by_the_portable_offline_build(tmp_path, monkeypatch):
    """A run at pin paper (or on a GPU) uses the offline pin's replica files: where one is missing, the
    cpu build of the offline pin writes it; where all are there and pinned, or the run's own pin is
    offline, nothing more is built."""
    from moebench.config import load_config
    from moebench.reproduce import replica_quantizer

    cfg = load_config()
    monkeypatch.setenv("MOEBENCH_MODELS", str(tmp_path))
    assert replica_quantizer(cfg, "cuda_sm90", "paper", "full") == "cpu"
    assert replica_quantizer(cfg, "cpu", "offline", "tiny") is None
    folder = tmp_path / "replica-tiny"
    folder.mkdir()
    for model_id in cfg.lock.replicas["tiny/offline"]:
        (folder / f"{model_id}.Q4_K_M.gguf").write_bytes(b"not the pinned bytes")
    assert replica_quantizer(cfg, "cpu", "paper", "tiny") == "cpu"  # present but not the lock's: rewritten
    digest = hashlib.sha256(b"not the pinned bytes").hexdigest()
    pinned = {model_id: digest for model_id in cfg.lock.replicas["tiny/offline"]}
    matching = dataclasses.replace(cfg, lock=cfg.lock.model_copy(
        update={"replicas": {**cfg.lock.replicas, "tiny/offline": pinned}}))
    assert replica_quantizer(matching, "cpu", "paper", "tiny") is None
