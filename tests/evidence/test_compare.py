"""compare.py: two labs' builds and bundles, IDENTICAL or DIFFERENT per artifact (both hashes, diffoscope's
account where both files are here), and per headline metric whether the labs' intervals overlap.

Fast tests use fake builds and built records; the slow ones build the pinned llama.cpp a second time in
another directory and attest both builds.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import pytest
from scipy import stats as scipy_stats
from test_attest import one_error_line, run_invoke, write_fake_build
from test_analyze import make_record
from test_bundle import Evidence, made_by

from moebench.evidence import compare as compare_module
from moebench.evidence.attest import attest
from moebench.pins.build import build_dir_for, load_manifest
from moebench.evidence.compare import compare, render, unpaired_ratio
from moebench.config import load_config

DEVICE, PIN = "cpu", "offline"


def flip_byte(path: Path, offset: int) -> tuple[str, str]:
    """(sha256 before, after) of flipping one bit of the byte at `offset`."""
    data = bytearray(path.read_bytes())
    before = hashlib.sha256(bytes(data)).hexdigest()
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    return before, hashlib.sha256(bytes(data)).hexdigest()


# --- statistics --------------------------------------------------------------------------------------

def test_unpaired_ratio_is_welch_on_the_logs():
    a, b = [10.0, 10.4, 9.7, 10.1], [12.1, 11.6, 12.5]
    ratio = unpaired_ratio(a, b)
    assert ratio.ratio == pytest.approx(math.exp(sum(map(math.log, b)) / 3 - sum(map(math.log, a)) / 4))
    welch = scipy_stats.ttest_ind([math.log(v) for v in b], [math.log(v) for v in a], equal_var=False)
    low, high = welch.confidence_interval(0.95)
    assert (ratio.low, ratio.high) == (pytest.approx(math.exp(low)), pytest.approx(math.exp(high)))
    assert unpaired_ratio([1.0, 2.0], [2.0, 4.0]).low is None  # n < 3: no interval, with the reason
    assert "at least 3" in unpaired_ratio([1.0, 2.0], [2.0, 4.0]).note


# --- bundles -----------------------------------------------------------------------------------------

def two_labs(tmp_path: Path, key: Path, gen_b: tuple[float, ...]) -> tuple[Path, Path, Path]:
    lab_a = Evidence(tmp_path / "lab-a", key, (10.0, 10.5, 9.8))
    bundle_a, _ = lab_a.bundle(tmp_path / "a.tar.gz")
    lab_b = Evidence(tmp_path / "lab-b", tmp_path / "other-key.pem", gen_b)
    bundle_b, _ = lab_b.bundle(tmp_path / "b.tar.gz")
    report_dir = tmp_path / "report"
    report_dir.mkdir()
    (report_dir / "REPORT.md").write_text("# moebench report\n\n## Failures\n\nNo failed records.\n")
    return bundle_a, bundle_b, report_dir


def test_bundles_of_two_labs_that_agree(tmp_path, key_path, isolated_home):  # noqa: F811
    bundle_a, bundle_b, report_dir = two_labs(tmp_path, key_path, (10.2, 9.9, 10.6))
    result = compare(bundle_a, bundle_b)
    assert result.exit_code == 0 and not result.different
    names = {r.name: r.status for r in result.artifacts}
    assert names["binary cpu/offline llama-cli"] == "IDENTICAL" and names["source tree offline"] == "IDENTICAL"
    assert any(name.startswith("model ") for name in names)
    assert len(result.a.signers) == len(result.b.signers) == 1 and result.a.signers != result.b.signers
    gen = next(m for m in result.metrics if m.metric == "gen_tokens_per_s")
    assert gen.verdict == "agree" and gen.overlap and gen.n_a == gen.n_b == 4  # 3 + 1 of a fleet host
    assert gen.ratio.low < gen.ratio.ratio < gen.ratio.high

    done = run_invoke("compare", str(bundle_a), str(bundle_b), "--report-dir", str(report_dir), home=isolated_home)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "IDENTICAL: " in done.stdout.splitlines()[-2] and "agree" in done.stdout
    report = (report_dir / "REPORT.md").read_text()
    assert report.count("## Verification") == 1 and report.index("## Failures") < report.index("## Verification")
    assert "Binaries: 3 of 3 identical." in report and "3 of 3 headline metrics agree" in report
    # a second comparison replaces the section instead of adding another
    run_invoke("compare", str(bundle_a), str(bundle_b), "--report-dir", str(report_dir), home=isolated_home)
    assert (report_dir / "REPORT.md").read_text().count("## Verification") == 1


def test_bundles_whose_numbers_differ(tmp_path, key_path, isolated_home):  # noqa: F811
    bundle_a, bundle_b, report_dir = two_labs(tmp_path, key_path, (20.1, 19.6, 20.8))
    result = compare(bundle_a, bundle_b)
    gen = next(m for m in result.metrics if m.metric == "gen_tokens_per_s")
    assert gen.verdict == "differ" and gen.overlap is False
    assert gen.ratio.low < 2.0 < gen.ratio.high
    assert result.exit_code == 1 and not result.different

    done = run_invoke("compare", str(bundle_a), str(bundle_b), "--report-dir", str(report_dir), home=isolated_home)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "DIFFERENT: 0 of" in done.stdout and "1 of 3 metrics differ" in done.stdout
    verification = json.loads((report_dir / "verification.json").read_text())
    assert [m["verdict"] for m in verification["metrics"] if m["metric"] == "gen_tokens_per_s"] == ["differ"]
    assert "2 of 3 headline metrics agree" in (report_dir / "REPORT.md").read_text()


# --- builds ------------------------------------------------------------------------------------------

def test_a_flipped_byte_is_different_naming_the_file_and_both_hashes(tmp_path, isolated_home, monkeypatch):
    dir_a, dir_b = write_fake_build(tmp_path / "lab-a"), write_fake_build(tmp_path / "lab-b")
    target = dir_b / "bin" / "llama-cli"
    before, after = flip_byte(target, 100)
    result = compare(dir_a, dir_b)
    assert result.exit_code == 1
    different = {r.name: r for r in result.artifacts if r.status == "DIFFERENT"}
    assert list(different) == ["binary cpu/offline llama-cli"]
    text = render(result)
    line = next(line for line in text.splitlines() if line.startswith("  DIFFERENT"))
    assert "llama-cli" in line and f"A sha256:{before}" in line and f"B sha256:{after}" in line
    assert f"B file: {target}" in text and f"{target}: sha256 is {after}, its build manifest records {before}" in text
    if shutil.which("diffoscope"):
        assert "diffoscope:" in text and "@@" in different["binary cpu/offline llama-cli"].diffoscope
    monkeypatch.setattr(compare_module.shutil, "which", lambda name: None)
    missing = compare(dir_a, dir_b).different[0].diffoscope
    assert missing.startswith("diffoscope is not installed")
    assert f"diffoscope {dir_a / 'bin' / 'llama-cli'} {target}" in missing


def test_a_bundle_against_a_build_compares_what_both_describe(tmp_path, key_path, isolated_home):  # noqa: F811
    lab = Evidence(tmp_path / "lab", key_path)
    bundle, _ = lab.bundle(tmp_path / "a.tar.gz")
    other = write_fake_build(tmp_path / "other", seed=b"!")
    result = compare(bundle, other)
    assert {r.name for r in result.different} == {f"binary cpu/offline {n}" for n in ("llama-bench", "llama-cli",
                                                                                      "llama-quantize")}
    assert any("model: only A describes any" in note for note in result.artifact_notes)
    assert result.metrics == [] and "only bundles carry records" in result.record_notes[0]
    assert all("both files on disk" in r.diffoscope for r in result.different)


def test_a_bare_host_and_an_image_build_of_one_pin_keep_apart_in_a_bundle(tmp_path, key_path, isolated_home,
                                                                           monkeypatch):  # noqa: F811
    lab = Evidence(tmp_path / "lab", key_path)
    monkeypatch.setenv("MOEBENCH_IMAGE", "cpu")
    image_build = write_fake_build(lab.home, seed=b"built in the image")
    attest(load_config(), DEVICE, PIN, key_path, work_root=lab.home)
    monkeypatch.delenv("MOEBENCH_IMAGE")
    assert image_build.parent.name == "image-cpu"
    with open(lab.raw / "run_a.jsonl", "a") as records:  # a record of the image build: both builds are used
        records.write(json.dumps(made_by(make_record(gen_tps=10.1, rep=5), image_build)) + "\n")
    bundle, _ = lab.bundle_with_builds(tmp_path / "a.tar.gz", 2)
    result = compare(bundle, write_fake_build(tmp_path / "bare"))
    assert result.exit_code == 0 and {r.status for r in result.artifacts} == {"IDENTICAL"}
    assert "binary cpu/offline llama-cli" in {r.name for r in result.artifacts}
    assert "cpu/offline in image cpu: only A has it, not compared" in result.artifact_notes


def test_an_unreadable_side_exits_2(tmp_path, isolated_home):
    junk = tmp_path / "junk.json"
    junk.write_text("{not json")
    line = one_error_line(run_invoke("compare", str(junk), str(junk), home=isolated_home))
    assert str(junk) in line
    line = one_error_line(run_invoke("compare", str(tmp_path / "absent"), str(junk), home=isolated_home))
    assert "absent" in line


# --- the real build, twice ---------------------------------------------------------------------------

@pytest.fixture
def second_build(second_cpu_build) -> Path:
    """The work root of the pin built again in another directory (conftest.second_cpu_build)."""
    return second_cpu_build[0]


@pytest.mark.slow
def test_two_builds_in_different_directories_attest_identical(pinned_bin_dir, second_build, tmp_path,
                                                              isolated_home):
    ours, theirs = pinned_bin_dir.parent, build_dir_for(DEVICE, PIN, second_build)
    assert ours != theirs and load_manifest(DEVICE, PIN, second_build)["prefix_map"]["from"] == str(theirs)
    att_a, _, key_a = attest(load_config(), DEVICE, PIN, tmp_path / "a.pem", tmp_path / "a.intoto.json",
                             work_root=ours.parent.parent)
    att_b, _, key_b = attest(load_config(), DEVICE, PIN, tmp_path / "b.pem", tmp_path / "b.intoto.json",
                             work_root=second_build)
    assert key_a != key_b
    done = run_invoke("compare", str(att_a), str(att_b), home=isolated_home)
    assert done.returncode == 0, done.stdout + done.stderr
    binaries = [line for line in done.stdout.splitlines() if line.strip().startswith(("IDENTICAL", "DIFFERENT"))]
    assert len(binaries) >= 8 and all(line.strip().startswith("IDENTICAL") for line in binaries)
    assert "IDENTICAL  binary cpu/offline llama-cli" in done.stdout and key_b in done.stdout
    assert done.stdout.rstrip().splitlines()[-1].startswith("IDENTICAL: ")
    done = run_invoke("compare", str(ours), str(theirs), home=isolated_home)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow
def test_a_flipped_byte_in_a_real_binary_gets_diffoscopes_account(second_build, tmp_path, isolated_home):
    theirs = build_dir_for(DEVICE, PIN, second_build)
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy2(theirs / "manifest.json", copy / "manifest.json")
    shutil.copytree(theirs / "bin", copy / "bin")
    before, after = flip_byte(copy / "bin" / "llama-quantize", 4096)
    done = run_invoke("compare", str(theirs), str(copy), home=isolated_home)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"DIFFERENT  binary cpu/offline llama-quantize  A sha256:{before}  B sha256:{after}" in done.stdout
    assert str(copy / "bin" / "llama-quantize") in done.stdout
    if shutil.which("diffoscope"):
        assert "diffoscope:" in done.stdout and "@@" in done.stdout
    else:
        assert "diffoscope is not installed" in done.stdout
    assert done.stdout.rstrip().splitlines()[-1] == "DIFFERENT: 1 of 8 artifacts differ"
