"""The evidence chain: a bundle holds the builds its records name and no other, refuses (or marks) a
record whose binary has no manifest, finds manifests brought from another machine, and `compare` and
`verify --bundle` read record -> binary -> manifest -> tree hash and commit, naming any break; two
pins' records compare DIFFERENT per cell, naming commit, tree hash and binary."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_analyze import make_record, write_jsonl
from test_attest import one_error_line, run_invoke, write_fake_build
from test_bundle import Evidence, made_by

from moebench.config import load_config
from moebench.errors import UserError
from moebench.evidence.bundle import UNBACKED_NAME, check_chain, make_bundle, read_bundle
from moebench.evidence.compare import compare


def bundle_of(lab: Evidence, output: Path, **options) -> Path:
    path, _, _, _ = make_bundle(load_config(), output, lab.raw, lab.results, lab.home, lab.hardware, **options)
    return path


def members(path: Path) -> set[str]:
    return set(read_bundle(path).members)


def test_a_bundle_holds_the_builds_its_records_name_and_no_other(tmp_path, key_path, isolated_home):  # noqa: F811
    lab = Evidence(tmp_path / "lab", key_path)
    write_fake_build(lab.home, seed=b"paper", pin="paper")  # built here, used by no record
    bundle = bundle_of(lab, tmp_path / "a.tar.gz")
    builds = {m for m in members(bundle) if m.startswith("builds/")}
    assert builds == {"builds/cpu-offline/manifest.json", "builds/cpu-offline/attestation.intoto.json"}
    checked = check_chain(read_bundle(bundle))
    assert (checked.records, checked.builds, checked.breaks, checked.unbacked) == (4, 1, [], [])


def test_a_record_without_a_manifest_is_refused_or_marked(tmp_path, key_path, isolated_home):  # noqa: F811
    lab = Evidence(tmp_path / "lab", key_path)
    write_jsonl(lab.raw / "gpu-host", "run_c.jsonl", [make_record(gen_tps=50.0, rep=3, binary="a" * 64)])
    with pytest.raises(UserError, match="a" * 64) as refused:
        bundle_of(lab, tmp_path / "a.tar.gz")
    assert "--manifests" in refused.value.fix and "1 records" in refused.value.problem
    line = one_error_line(run_invoke("bundle", "--output", str(tmp_path / "cli.tar.gz"), "--raw-dir", str(lab.raw),
                                     "--results-dir", str(lab.results), home=lab.home))
    assert "a" * 64 in line and "--allow-unbacked" in line

    marked = bundle_of(lab, tmp_path / "marked.tar.gz", allow_unbacked=True)
    unbacked = read_bundle(marked).members[UNBACKED_NAME].decode()
    assert "cpu/offline " + "a" * 64 in unbacked and "gpu-host/run_c.jsonl:1" in unbacked
    checked = check_chain(read_bundle(marked))
    assert len(checked.breaks) == 1 and "is in no bundled build manifest" in checked.breaks[0]
    result = compare(marked, marked)
    assert result.exit_code == 1 and "breaks in a bundle's own evidence chain" in result.verdict()
    done = run_invoke("verify", "--bundle", str(marked), home=lab.home)
    assert done.returncode == 1 and "break: data/raw/gpu-host/run_c.jsonl:1" in done.stdout


def test_records_of_another_machine_bundle_with_the_manifests_it_sent(tmp_path, key_path, isolated_home):  # noqa: F811
    """A fresh clone with no builds of its own: the records and manifests fleet.reproduce brought home
    (`<raw>/<host>/manifests/`), and a folder named with manifest_dirs, back every record."""
    lab = Evidence(tmp_path / "lab", key_path)
    remote = write_fake_build(tmp_path / "gpu-host-home", seed=b"on the gpu host")
    write_jsonl(lab.raw / "gpu-host", "run_c.jsonl", [made_by(make_record(gen_tps=50.0, rep=3), remote)])
    kept = write_fake_build(tmp_path / "kept")  # a copy of the lab's own build manifest, kept elsewhere
    shutil.rmtree(lab.home / "build")  # nothing built here
    with pytest.raises(UserError, match="have no build manifest here"):
        bundle_of(lab, tmp_path / "none.tar.gz", manifest_dirs=(kept,))
    brought = lab.raw / "gpu-host" / "manifests"
    brought.mkdir()
    shutil.copy(remote / "manifest.json", brought / "cpu-offline.json")
    bundle = bundle_of(lab, tmp_path / "b.tar.gz", manifest_dirs=(kept,))
    builds = sorted(m for m in members(bundle) if m.startswith("builds/"))
    assert len(builds) == 2 and all(m.endswith("/manifest.json") for m in builds)
    checked = check_chain(read_bundle(bundle))
    assert checked.breaks == [] and checked.builds == 2 and checked.records == 5


def test_a_record_whose_tree_hash_is_not_its_manifests_breaks_the_chain(tmp_path, key_path, isolated_home):  # noqa: F811
    lab = Evidence(tmp_path / "lab", key_path)
    record = made_by(make_record(gen_tps=11.0, rep=4), lab.build_dir)
    record["provenance"]["source_tree_hash"] = "d" * 40
    write_jsonl(lab.raw / "other", "run_d.jsonl", [record])
    checked = check_chain(read_bundle(bundle_of(lab, tmp_path / "a.tar.gz")))
    assert checked.breaks == [f"data/raw/other/run_d.jsonl:1: source_tree_hash {'d' * 40} but "
                              f"builds/cpu-offline/manifest.json says {load_config().pin('offline').tree_hash}"]


def test_two_pins_compare_different_per_cell_naming_commit_tree_and_binary(tmp_path, key_path, isolated_home):  # noqa: F811
    offline = Evidence(tmp_path / "offline", key_path)
    paper = Evidence(tmp_path / "paper", tmp_path / "other-key.pem")
    paper_build = write_fake_build(paper.home, seed=b"b4404", pin="paper")
    for path in paper.raw.rglob("*.jsonl"):
        rows = [made_by(json.loads(line), paper_build) for line in path.read_text().splitlines()]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    shutil.rmtree(paper.build_dir)  # the paper lab's records use only its paper build
    a, b = bundle_of(offline, tmp_path / "a.tar.gz"), bundle_of(paper, tmp_path / "b.tar.gz")
    result = compare(a, b)
    [cell] = result.work
    fields = {what: (va, vb) for what, va, vb in cell.build}
    cfg = load_config()
    assert fields["llama.cpp commit"] == (cfg.pin("offline").commit, cfg.pin("paper").commit)
    assert fields["source tree hash"] == (cfg.pin("offline").tree_hash, cfg.pin("paper").tree_hash)
    a_sha, b_sha = fields["runner binary sha256"]
    assert a_sha != b_sha and len(a_sha) == len(b_sha) == 64
    assert cell.differs and result.exit_code == 1 and "different work in 1 of 1 cells" in result.verdict()
    # the same build on both sides: the same work, IDENTICAL
    same = compare(a, bundle_of(offline, tmp_path / "a2.tar.gz"))
    assert same.exit_code == 0 and not same.work[0].build and same.verdict().startswith("IDENTICAL")
