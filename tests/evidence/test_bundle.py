"""bundle.py: one reproducible tarball of a lab's evidence; the same inputs give the same bytes, and a
bundle altered after it was written is refused (exit 2), naming the member."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest
from test_analyze import make_record, write_jsonl
from test_attest import one_error_line, run_invoke, write_fake_build

from moebench.evidence.attest import attest
from moebench.evidence.bundle import MANIFEST_NAME, PREFIX, make_bundle, read_bundle, sidecar_path
from moebench.config import load_config
from moebench.errors import IntegrityError

MEMBERS = {"lock.yaml", "HARDWARE.md", "BADGES.md", "MANIFEST", "builds/cpu-offline/manifest.json",
           "builds/cpu-offline/attestation.intoto.json", "data/raw/run_a.jsonl", "data/raw/host1/run_b.jsonl",
           "results/REPORT.md", "results/benchmark_results.csv", "results/figures/fig.png"}


def made_by(record: dict, build_dir: Path) -> dict:
    """`record` as the build in `build_dir` made it: its llama-cli, commit, tree hash and pin."""
    manifest = json.loads((build_dir / "manifest.json").read_text())
    record["provenance"].update(binary_name="llama-cli", binary_sha256=manifest["binaries"]["llama-cli"]["sha256"],
                                llama_cpp_commit=manifest["commit"], source_tree_hash=manifest["source_tree_hash"],
                                llama_cpp_pin=manifest["pin"])
    return record


class Evidence:
    """A lab's work directory (an attested build), records made by that build, results and HARDWARE.md,
    all under tmp."""

    def __init__(self, root: Path, key: Path, gen: tuple[float, ...] = (10.0, 10.5, 9.8)):
        self.root = root
        self.home = root / "home"
        self.build_dir = write_fake_build(self.home)
        attest(load_config(), "cpu", "offline", key, work_root=self.home)
        self.raw = root / "raw"
        write_jsonl(self.raw, "run_a.jsonl", [made_by(make_record(gen_tps=v, rep=i), self.build_dir)
                                              for i, v in enumerate(gen)])
        write_jsonl(self.raw / "host1", "run_b.jsonl", [made_by(make_record(gen_tps=gen[0], rep=9), self.build_dir)])
        (self.raw / "run_a.jsonl.lock").write_text("123\n")
        self.results = root / "results"
        (self.results / "figures").mkdir(parents=True)
        (self.results / "REPORT.md").write_text("# moebench report\n")
        (self.results / "benchmark_results.csv").write_text("a,b\n1,2\n")
        (self.results / "figures" / "fig.png").write_bytes(b"\x89PNG" + bytes(range(256)))
        self.hardware = root / "HARDWARE.md"
        self.hardware.write_text("# Hardware\n")

    def bundle(self, output: Path) -> tuple[Path, str]:
        return self.bundle_with_builds(output, 1)

    def bundle_with_builds(self, output: Path, builds: int) -> tuple[Path, str]:
        path, digest, members, _ = make_bundle(load_config(), output, self.raw, self.results, self.home, self.hardware)
        assert members == len(MEMBERS) + 2 * (builds - 1)  # a manifest and an attestation per build
        return path, digest


@pytest.fixture
def evidence(tmp_path, key_path, isolated_home) -> Evidence:  # noqa: F811 - key_path is a fixture
    return Evidence(tmp_path / "lab", key_path)


def test_a_bundle_made_twice_is_byte_identical(evidence, tmp_path):
    first, digest = evidence.bundle(tmp_path / "one" / "bundle.tar.gz")
    for path in [*evidence.raw.rglob("*"), *evidence.results.rglob("*")]:
        os.utime(path, (1_700_000_000, 1_700_000_000))  # other mtimes, the same bytes
    second, again = evidence.bundle(tmp_path / "two" / "bundle.tar.gz")
    assert first.read_bytes() == second.read_bytes() and digest == again
    assert digest == hashlib.sha256(first.read_bytes()).hexdigest()
    assert sidecar_path(first).read_text() == f"{digest}  bundle.tar.gz\n"


def test_members_are_sorted_with_fixed_metadata(evidence, tmp_path):
    path, _ = evidence.bundle(tmp_path / "bundle.tar.gz")
    data = path.read_bytes()
    assert data[:2] == b"\x1f\x8b" and data[4:8] == b"\0\0\0\0"  # gzip: mtime 0
    assert not data[3] & 0x08  # no FNAME field
    with tarfile.open(path) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names) and {n.removeprefix(f"{PREFIX}/") for n in names} == MEMBERS
    for member in members:
        assert member.isfile() and member.mtime == 315532800 and (member.uid, member.gid) == (0, 0)
        assert (member.uname, member.gname) == ("", "")
        assert member.mode == 0o644


def test_manifest_lists_every_member_with_its_sha256(evidence, tmp_path):
    path, _ = evidence.bundle(tmp_path / "bundle.tar.gz")
    bundle = read_bundle(path)
    assert bundle.sidecar == "matches"
    listed = dict(line.split("  ")[::-1] for line in bundle.members[MANIFEST_NAME].decode().splitlines())
    assert set(listed) == MEMBERS - {MANIFEST_NAME}
    for name, digest in listed.items():
        assert hashlib.sha256(bundle.members[name]).hexdigest() == digest
    assert bundle.members["data/raw/run_a.jsonl"] == (evidence.raw / "run_a.jsonl").read_bytes()


def test_one_record_byte_changes_the_bundle(evidence, tmp_path):
    _, before = evidence.bundle(tmp_path / "one.tar.gz")
    record = evidence.raw / "run_a.jsonl"
    record.write_bytes(record.read_bytes().replace(b'"gen_tokens_per_s": 10.5', b'"gen_tokens_per_s": 10.6', 1))
    _, after = evidence.bundle(tmp_path / "two.tar.gz")
    assert before != after


def test_private_key_never_enters_the_bundle(evidence, tmp_path, key_path):  # noqa: F811
    path, _ = evidence.bundle(tmp_path / "bundle.tar.gz")
    everything = b"".join(read_bundle(path).members.values())
    pem_body = b"".join(key_path.read_bytes().splitlines()[1:-1])
    assert pem_body not in everything and b"PRIVATE KEY" not in everything


def rewrite_member(path: Path, name: str, change) -> None:
    """The bundle with one member's bytes changed (tar headers kept), its sidecar made to match."""
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    raw = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for member, data in members:
            if member.name == f"{PREFIX}/{name}":
                data = change(data)
                member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    path.write_bytes(raw.getvalue())
    sidecar_path(path).write_text(f"{hashlib.sha256(raw.getvalue()).hexdigest()}  {path.name}\n")


def test_tampered_member_exits_2_naming_it(evidence, tmp_path, isolated_home):
    path, _ = evidence.bundle(tmp_path / "bundle.tar.gz")
    original = read_bundle(path).members["data/raw/run_a.jsonl"]
    rewrite_member(path, "data/raw/run_a.jsonl", lambda data: data.replace(b"10.5", b"99.5", 1))
    tampered = hashlib.sha256(original.replace(b"10.5", b"99.5", 1)).hexdigest()
    with pytest.raises(IntegrityError) as caught:
        read_bundle(path)
    assert caught.value.where == f"{path}: data/raw/run_a.jsonl"
    line = one_error_line(run_invoke("compare", str(path), str(path), "--report-dir", str(tmp_path / "report"),
                                     home=isolated_home))
    assert "data/raw/run_a.jsonl" in line and tampered in line and hashlib.sha256(original).hexdigest() in line
    assert not (tmp_path / "report").exists()


def test_sidecar_mismatch_exits_2(evidence, tmp_path, isolated_home):
    path, digest = evidence.bundle(tmp_path / "bundle.tar.gz")
    data = bytearray(path.read_bytes())
    data[-9] ^= 0x01  # one byte of the gzip trailer
    path.write_bytes(bytes(data))
    actual = hashlib.sha256(bytes(data)).hexdigest()
    line = one_error_line(run_invoke("compare", str(path), str(path), "--report-dir", str(tmp_path / "report"),
                                     home=isolated_home))
    assert str(path) in line and actual in line and digest in line and "bundle.tar.gz.sha256" in line


def test_a_member_outside_the_bundle_folder_is_refused(evidence, tmp_path):
    path, _ = evidence.bundle(tmp_path / "bundle.tar.gz")
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(path, "w:gz") as tar:
        for member, data in members:
            tar.addfile(member, io.BytesIO(data))
        extra = tarfile.TarInfo("../evil")
        tar.addfile(extra, io.BytesIO(b""))
    sidecar_path(path).unlink()
    with pytest.raises(IntegrityError, match="not a regular file under moebench-bundle/"):
        read_bundle(path)


def test_an_attestation_that_names_other_binaries_is_not_bundled(evidence, tmp_path):
    binary = evidence.home / "build" / "cpu-offline" / "bin" / "llama-bench"  # not the records' binary
    manifest = binary.parent.parent / "manifest.json"
    manifest.write_text(manifest.read_text().replace(hashlib.sha256(binary.read_bytes()).hexdigest(), "0" * 64))
    with pytest.raises(IntegrityError, match="attests other binaries"):
        evidence.bundle(tmp_path / "bundle.tar.gz")
