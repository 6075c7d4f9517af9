"""badges.py: BADGES.md in every bundle, hashed by MANIFEST; each line rests on the members it names,
so taking one out turns its line from met to missing; `verify --bundle` names a BADGES.md that is not
what the members give; the committed H200 records are replicas on one machine of a device the study
did not use, and say so."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from test_analyze import make_record, write_jsonl
from test_attest import run_invoke
from test_bundle import Evidence, made_by

from moebench.config import REPO_ROOT, load_config
from moebench.evidence import badges
from moebench.evidence.bundle import MANIFEST_NAME, check_chain, collect, make_bundle, read_bundle, write_bundle

H200 = REPO_ROOT / "results" / "cuda_sm90-h200_2026-12-04"


def bundle_of(lab: Evidence, output: Path, **options) -> Path:
    path, _, _, _ = make_bundle(load_config(), output, lab.raw, lab.results, lab.home, lab.hardware, **options)
    return path


def line_of(text: str, badge: str, key: str) -> str:
    """The one line of `badge`'s check `key`, met or missing."""
    [line] = [line for line in text.splitlines() if re.match(rf"- \[[x ]\] {badge}, {key}: ", line)]
    return line


def status_of(text: str, title: str) -> str:
    [status] = [line.split(": ", 1)[1] for line in text.splitlines() if line.startswith(f"## {title}: ")]
    return status


@pytest.fixture
def members(tmp_path, key_path, isolated_home) -> dict[str, bytes]:  # noqa: F811 - fixtures
    return read_bundle(bundle_of(Evidence(tmp_path / "lab", key_path), tmp_path / "a.tar.gz")).members


def test_every_bundle_holds_badges_md_derived_from_its_members_and_hashed(members):
    listed = {line.split("  ", 1)[1] for line in members[MANIFEST_NAME].decode().splitlines()}
    assert badges.BADGES_NAME in listed
    held = members[badges.BADGES_NAME].decode()
    assert held == badges.badges_md(members)
    assert [status_of(held, b.title) for b in badges.assess(members)] == [
        "partly supported", "partly supported", "partly supported", "not supported"]
    assert line_of(held, "Functional", "records") == (
        "- [x] Functional, records: 4 records, 4 ok, 0 failed, every line valid against schema/record-v1.json — "
        "data/raw/host1/run_b.jsonl, data/raw/run_a.jsonl")


@pytest.mark.parametrize(("removed", "badge", "key"), [
    (("builds/cpu-offline/attestation.intoto.json",), "Reusable", "attestations"),
    (("builds/cpu-offline/manifest.json",), "Functional", "chain"),
    (("results/REPORT.md",), "Functional", "report"),
    (("results/benchmark_results.csv",), "Functional", "table"),
    (("HARDWARE.md",), "Reusable", "hardware"),
    (("lock.yaml",), "Available", "pin"),
    (("data/raw/run_a.jsonl", "data/raw/host1/run_b.jsonl"), "Functional", "records"),
])
def test_taking_out_the_member_a_line_names_turns_it_missing(members, removed, badge, key):
    before = line_of(badges.badges_md(members), badge, key)
    assert before.startswith("- [x] ") and all(name in before for name in removed)
    after = line_of(badges.badges_md({n: d for n, d in members.items() if n not in removed}), badge, key)
    assert after.startswith("- [ ] ") and after != before


def test_taking_out_one_records_file_changes_the_counts_it_names(members):
    after = line_of(badges.badges_md({n: d for n, d in members.items() if n != "data/raw/run_a.jsonl"}),
                    "Functional", "records")
    assert after.startswith("- [x] Functional, records: 1 record, 1 ok, 0 failed")
    assert after.endswith("— data/raw/host1/run_b.jsonl")


def test_a_bundle_without_its_build_manifest_is_unbacked_in_badges(tmp_path, key_path, isolated_home):  # noqa: F811
    lab = Evidence(tmp_path / "lab", key_path)
    shutil.rmtree(lab.home / "build")
    held = read_bundle(bundle_of(lab, tmp_path / "a.tar.gz", allow_unbacked=True)).members[badges.BADGES_NAME].decode()
    assert line_of(held, "Functional", "chain") == (
        "- [ ] Functional, chain: 1 binary the records name bundled without a build manifest — UNBACKED.txt")
    assert line_of(held, "Reusable", "attestations").startswith("- [ ] Reusable, attestations: no build manifest")


def test_a_failed_record_is_missing_evidence_for_functional(tmp_path, key_path, isolated_home):  # noqa: F811
    lab = Evidence(tmp_path / "lab", key_path)
    write_jsonl(lab.raw, "run_c.jsonl", [made_by(make_record(rep=5, failure="oom_killed"), lab.build_dir)])
    held = read_bundle(bundle_of(lab, tmp_path / "a.tar.gz")).members[badges.BADGES_NAME].decode()
    assert line_of(held, "Functional", "records").startswith(
        "- [ ] Functional, records: 5 records, 4 ok, 1 failed (first: data/raw/run_c.jsonl:1: oom_killed)")


def real_record(device: str, cpu: str, rep: int) -> dict:
    record = make_record(source="real", device=device, rep=rep)
    record["provenance"]["host"] = {"cpu_model": cpu}
    return record


def test_real_weights_on_the_study_devices_of_two_machines_leave_only_the_comparison_missing():
    rows = [real_record("m2", "Apple M2 Pro", 0), real_record("jetson", "ARMv8 Processor rev 1 (v8l)", 1)]
    text = badges.badges_md({"data/raw/run_a.jsonl": "".join(json.dumps(r) + "\n" for r in rows).encode()})
    assert [line_of(text, "Reproduced", key)[:6] for key in ("weights", "devices", "machines", "comparison")] == [
        "- [x] ", "- [x] ", "- [x] ", "- [ ] "]
    assert status_of(text, "Results Reproduced") == "partly supported"
    assert line_of(text, "Reproduced", "machines").endswith(
        "records from 1 run on 2 machines (by provenance.host) — data/raw/run_a.jsonl")


@pytest.mark.parametrize(("hosts", "machines"), [
    ([("h1", "Xeon"), (None, "Xeon")], 1),  # the unnamed records may have run on h1
    ([("h1", "Xeon"), (None, "EPYC")], 2),  # not on h1: other hardware
    ([("h1", "Xeon"), ("h2", "Xeon"), (None, "Xeon")], 2),
    ([(None, "Xeon"), (None, "Xeon")], 1),
])
def test_records_without_a_host_id_prove_another_machine_only_by_other_hardware(hosts, machines):
    records = []
    for rep, (host_id, cpu) in enumerate(hosts):
        record = real_record("m2", cpu, rep)
        if host_id:
            record["provenance"]["host"]["host_id"] = host_id
        records.append(record)
    assert badges.count_machines(records) == machines


def test_one_bundle_never_supports_a_badge_that_needs_more_than_itself(members):
    summaries = {**members, "results/summary_tables/per_model_summary.csv": b"model,n\nx,3\n"}
    text = badges.badges_md(summaries)
    assert status_of(text, "Artifacts Evaluated – Functional") == "supported"
    assert line_of(text, "Available", "archive").startswith("- [ ] Available, archive: missing an archival, DOI")
    assert line_of(text, "Reproduced", "comparison").startswith("- [ ] Reproduced, comparison: missing an independent")


def test_the_h200_records_are_replicas_on_one_machine_of_no_study_device(tmp_path, isolated_home):
    (tmp_path / "results").mkdir()
    path, _, _, notes = make_bundle(load_config(), tmp_path / "h200.tar.gz", H200 / "raw", tmp_path / "results",
                                    tmp_path / "work", manifest_dirs=(H200 / "manifests",))
    text = read_bundle(path).members[badges.BADGES_NAME].decode()
    files = ("data/raw/run_20261204T161246Z_cuda_sm90_experiment_1_efficiency.jsonl, "
             "data/raw/run_20261204T161246Z_cuda_sm90_experiment_2_sequence_length.jsonl")
    assert line_of(text, "Reproduced", "weights") == (
        "- [ ] Reproduced, weights: missing real weights: the results describe synthetic-weight replicas "
        f"(296 of 296 ok records, scale full) — {files}")
    assert line_of(text, "Reproduced", "devices") == (
        f"- [ ] Reproduced, devices: missing the study's devices jetson, m2: records on cuda_sm90 — {files}")
    assert line_of(text, "Reproduced", "machines") == (
        "- [ ] Reproduced, machines: missing a second machine: records from 3 runs on 1 machine (by provenance.host) "
        f"— {files}")
    assert status_of(text, "Results Reproduced") == "not supported"
    assert line_of(text, "Functional", "chain") == (
        "- [x] Functional, chain: every record's binary is in a bundled build manifest of its device and pin, with "
        "its tree hash and commit — builds/cuda_sm90-paper/manifest.json")
    assert "BADGES.md: Available partly supported; Functional partly supported; Reusable partly supported; " \
           "Reproduced not supported" in notes


def test_verify_names_a_badges_md_that_is_not_what_the_members_give(tmp_path, key_path, isolated_home):  # noqa: F811
    lab = Evidence(tmp_path / "lab", key_path)
    files, _ = collect(load_config(), lab.raw, lab.results, lab.home, lab.hardware)
    honest = files[badges.BADGES_NAME]
    files[badges.BADGES_NAME] = honest.replace(b"- [ ] Available, archive", b"- [x] Available, archive")
    path, _ = write_bundle(files, tmp_path / "edited.tar.gz")  # MANIFEST hashes the edited file: it reads back
    checked = check_chain(read_bundle(path))
    number = honest.decode().splitlines().index(line_of(honest.decode(), "Available", "archive")) + 1
    assert checked.stale_badges.startswith(f"BADGES.md is not what the bundle's members give, from line {number}: "
                                           "'- [x] Available, archive")
    done = run_invoke("verify", "--bundle", str(path), home=lab.home)
    assert done.returncode == 1 and f"badges: BADGES.md is not what the bundle's members give, from line {number}" \
        in done.stdout
    assert check_chain(read_bundle(bundle_of(lab, tmp_path / "honest.tar.gz"))).stale_badges is None


def test_the_study_devices_are_those_the_claims_name():
    assert badges.STUDY_DEVICES == tuple(sorted({claim.device for claim in load_config().reference.claims}))


@pytest.mark.parametrize(("decisions", "cells_differing", "sentence"), [
    (["reproduced", "reproduced"], 0,
     "Results Reproduced: upgraded: all 2 headline decisions reproduced by the same work."),
    (["reproduced", "not reproduced", "inconclusive"], 0,
     "Results Reproduced: not upgraded: 2 of 3 headline decisions fall short of reproduced (1 inconclusive, "
     "1 not reproduced)."),
    (["reproduced"], 3,
     "Results Reproduced: not upgraded: the two bundles ran different work in 3 cell(s) (model file, token "
     "fingerprints, build chain or configs: see work)."),
    ([], 0, "Results Reproduced: not upgraded: no headline metric was compared."),
])
def test_a_comparison_upgrades_results_reproduced_only_when_every_decision_reproduced(decisions, cells_differing,
                                                                                        sentence):
    assert badges.results_reproduced_upgrade(decisions, cells_differing) == sentence
