"""The fleet (moebench.fleet.reproduce, fleet_host, config.load_fleet) against a real OpenSSH server on 127.0.0.1:
two "hosts" (lab-a, lab-b) that are two kit paths behind one sshd, and lab-down, a port nobody listens on.

Where sshd cannot start the SSH tests skip with the reason; with MOEBENCH_REQUIRE_SSHD=1 (CI) they fail."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from moebench import paths
from moebench.analysis.frame import load_records, to_frame
from moebench.config import REPO_ROOT, FleetHost, load_config, load_fleet
from moebench.errors import ConfigError
from moebench.fleet.reproduce import render_table, reproduce_fleet
from moebench.fleet.inspect import binary_verdict, fleet_status
from moebench.fleet.host import Host, HostFailure, PrefixedLines, snapshot

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sshd_support import SshdUnavailable, free_port, start_sshd  # noqa: E402

RAW_FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "raw" / "run_cpu_experiment_1_efficiency_smoke.jsonl"


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    try:
        server = start_sshd(tmp_path_factory.mktemp("sshd"))
    except (SshdUnavailable, OSError, subprocess.CalledProcessError) as exc:
        if os.environ.get("MOEBENCH_REQUIRE_SSHD") == "1":
            pytest.fail(f"sshd must run here (MOEBENCH_REQUIRE_SSHD=1): {exc}")
        pytest.skip(f"no sshd on 127.0.0.1: {exc}")
    yield server
    server.stop()


def fleet_yaml(path: Path, port: int, key: Path, kits: Path, env: dict[str, str] | None = None) -> Path:
    def host(name: str, host_port: int) -> dict:
        entry = {"address": "127.0.0.1", "port": host_port, "identity_file": str(key), "device": "cpu",
                 "kit_path": str(kits / name), "connect_timeout_s": 5}
        return {**entry, "env": env} if env else entry

    hosts = {"lab-a": host("lab-a", port), "lab-b": host("lab-b", port), "lab-down": host("lab-down", free_port())}
    path.write_text(yaml.safe_dump({"schema_version": 1, "hosts": hosts}, sort_keys=False))
    return path


def spec(port: int, key: Path, kit: Path, **extra) -> FleetHost:
    return FleetHost(address="127.0.0.1", port=port, identity_file=str(key), device="cpu", kit_path=str(kit),
                     connect_timeout_s=5, **extra)


# --- fleet.yaml -------------------------------------------------------------------------------------

def test_the_kits_fleet_file_loads_and_names_real_devices():
    fleet = load_fleet(cfg=load_config())
    assert fleet.hosts and all(h.identity_file is None or "\n" not in h.identity_file for h in fleet.hosts.values())


@pytest.mark.parametrize("change, problem", [
    ({"identity_file": "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn\n"}, "holds key text"),
    ({"private_key": "b3Blbn"}, "credential"),
    ({"password": "hunter2"}, "credential"),
    ({"env": {"HF_TOKEN": "hf_x"}}, "looks like a secret"),
    ({"device": "abacus"}, "not in devices.yaml"),
    ({"in_image": True, "device": "m2"}, "has no toolchain image"),
])
def test_fleet_file_refuses_secrets_and_dangling_names(tmp_path, change, problem):
    host = {"address": "h", "device": "cpu", "kit_path": "moebench", **change}
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump({"schema_version": 1, "hosts": {"h1": host}}))
    with pytest.raises(ConfigError, match=problem) as caught:
        load_fleet(path, load_config())
    assert not any(value in str(caught.value) for value in ("hunter2", "b3Blbn", "hf_x"))


def test_fleet_file_refuses_two_hosts_on_one_kit_path(tmp_path):
    host = {"address": "h", "device": "cpu", "kit_path": "~/moebench"}
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump({"schema_version": 1, "hosts": {"a": host, "b": {**host, "kit_path": "moebench"}}}))
    with pytest.raises(ConfigError, match="share one kit_path"):
        load_fleet(path)


# --- pieces without SSH ---------------------------------------------------------------------------------

def test_analysis_reads_each_hosts_subfolder_and_names_the_host(tmp_path):
    raw = tmp_path / "raw"
    for host in ("lab-a", "lab-b"):
        (raw / host).mkdir(parents=True)
        shutil.copy(RAW_FIXTURE, raw / host / "run_same_name.jsonl")
        (raw / host / "fleet.log").write_text("not a record\n")
    files, loaded = load_records(raw)
    frame = to_frame(loaded)
    assert [f.relative_to(raw).as_posix() for f in files] == ["lab-a/run_same_name.jsonl", "lab-b/run_same_name.jsonl"]
    assert sorted(set(frame["fleet_host"])) == ["lab-a", "lab-b"]
    assert set(frame["source_file"]) == {"lab-a/run_same_name.jsonl", "lab-b/run_same_name.jsonl"}
    assert loaded[0].origin == "lab-a/run_same_name.jsonl:1"


def test_top_level_records_have_no_fleet_host(tmp_path):
    shutil.copy(RAW_FIXTURE, tmp_path / "run_x.jsonl")
    frame = to_frame(load_records(tmp_path)[1])
    assert frame["fleet_host"].isna().all() and set(frame["source_file"]) == {"run_x.jsonl"}


def test_prefixed_lines_never_split_a_line_and_log_it_bare():
    sink, log = io.StringIO(), io.StringIO()
    stream = PrefixedLines("lab-a", sink, log, threading.Lock())
    stream.write("one\ntw")
    stream.write("o\r\nbar 10%\rbar 100%\nrest")
    stream.flush()
    assert sink.getvalue() == "[lab-a] one\n[lab-a] two\n[lab-a] bar 100%\n[lab-a] rest\n"
    assert log.getvalue() == "one\ntwo\nbar 100%\nrest\n"


def test_binary_verdicts():
    a, b = "a" * 64, "b" * 64
    assert binary_verdict(a, a, a) == "= lock"
    assert binary_verdict(a, a, b).startswith("DIFFERS from lock bbbb")
    assert binary_verdict(a, b, a).startswith("CHANGED since its build")
    assert binary_verdict(None, a, a) == "MISSING on the host"
    assert binary_verdict(a, a, None).startswith("not pinned")
    assert render_table(["x", "y"], [[None, "1"]]).splitlines()[-1] == "—  1"


def test_a_closed_port_is_reported_unreachable(tmp_path):
    host = Host("lab-down", spec(free_port(), tmp_path / "no_key", tmp_path / "kit"), io.StringIO(), io.StringIO(),
                threading.Lock())
    with host, pytest.raises(HostFailure, match="unreachable: 127.0.0.1:[0-9]+ .*refused") as caught:
        host.open()
    assert caught.value.step == "connect"


def test_an_unknown_host_name_is_refused(tmp_path):
    fleet = load_fleet(fleet_yaml(tmp_path / "fleet.yaml", 22, tmp_path / "key", tmp_path / "kits"))
    with pytest.raises(ConfigError, match="no host 'lab-c'.*use one of: lab-a, lab-b, lab-down"):
        reproduce_fleet(load_config(), fleet, ("lab-c",))


def test_a_fleet_whose_every_host_is_down_reports_each_and_analyzes_nothing(tmp_path):
    fleet = load_fleet(fleet_yaml(tmp_path / "fleet.yaml", free_port(), tmp_path / "key", tmp_path / "kits"))
    sink = io.StringIO()
    run = reproduce_fleet(load_config(), fleet, ("lab-a", "lab-down"), smoke=True, raw_dir=tmp_path / "raw",
                          output_dir=tmp_path / "results", sink=sink)
    assert [o.name for o in run.failed] == ["lab-a", "lab-down"] and run.analysis is None
    assert all(o.step == "connect" and o.error.startswith("unreachable") for o in run.failed)
    assert "nothing to analyze" in sink.getvalue() and not (tmp_path / "results").exists()
    log = (tmp_path / "raw" / "lab-a" / "fleet.log").read_text()
    assert "failed at connect: unreachable" in log and "[lab-a]" not in log


# --- over a real sshd (fast) --------------------------------------------------------------------------

def test_a_key_the_server_does_not_know_is_refused(sshd, tmp_path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "stranger")], check=True)
    host = Host("lab-x", spec(sshd.port, tmp_path / "stranger", tmp_path / "kit"), io.StringIO(), io.StringIO(),
                threading.Lock())
    with host, pytest.raises(HostFailure, match="authentication refused"):
        host.open()


def test_sync_sends_the_commit_not_the_working_tree(sshd, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo)]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "tracked.txt").write_text("committed\n")
    subprocess.run([*git, "add", "tracked.txt"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "one"], check=True)
    (repo / "tracked.txt").write_text("edited, not committed\n")
    (repo / "untracked.txt").write_text("never sent\n")
    (tmp_path / "snap").mkdir()
    snap = snapshot(repo, tmp_path / "snap")
    assert snap.dirty
    kit = tmp_path / "kits" / "lab-a"
    sink = io.StringIO()
    with Host("lab-a", spec(sshd.port, sshd.client_key, kit), sink, io.StringIO(), threading.Lock()) as host:
        host.open()
        host.sync(snap)
        host.sync(snap)  # a second sync of the same commit into the same kit is fine
    assert (kit / "tracked.txt").read_text() == "committed\n"
    assert not (kit / "untracked.txt").exists() and not (kit / ".git" / "moebench-sync.bundle").exists()
    head = subprocess.run(["git", "-C", str(kit), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert head == snap.commit
    assert all(line.startswith("[lab-a] ") for line in sink.getvalue().splitlines())


def test_sync_from_a_shallow_clone(sshd, tmp_path):
    origin, shallow = tmp_path / "origin", tmp_path / "shallow"
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(origin)]
    subprocess.run(["git", "init", "-q", str(origin)], check=True)
    for text in ("one\n", "two\n"):
        (origin / "f.txt").write_text(text)
        subprocess.run([*git, "add", "f.txt"], check=True)
        subprocess.run([*git, "commit", "-q", "-m", text], check=True)
    subprocess.run(["git", "clone", "-q", "--depth", "1", f"file://{origin}", str(shallow)], check=True)
    (tmp_path / "snap").mkdir()
    snap = snapshot(shallow, tmp_path / "snap")
    assert snap.shallow is not None and not snap.dirty
    kit = tmp_path / "kit"
    with Host("lab-a", spec(sshd.port, sshd.client_key, kit), io.StringIO(), io.StringIO(), threading.Lock()) as host:
        host.open()
        host.sync(snap)
    assert (kit / "f.txt").read_text() == "two\n"


def test_status_reports_each_host_and_the_one_that_is_down(sshd, tmp_path):
    fleet = load_fleet(fleet_yaml(tmp_path / "fleet.yaml", sshd.port, sshd.client_key, tmp_path / "kits"))
    sink = io.StringIO()
    rows = {row[0]: row for row in fleet_status(fleet, sink=sink)}
    assert rows["lab-a"][2:5] == ["yes", "no kit", "no"]
    assert rows["lab-down"][2].startswith("no: unreachable")
    assert "lab-b" in sink.getvalue()


# --- the fleet smoke: two hosts and a dead one, through the invoke front ---------------------------------

def _invoke(*args: str, timeout_s: float = 1500) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    done = subprocess.run([str(Path(sys.executable).parent / "invoke"), *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=timeout_s)
    return done, time.monotonic() - started


@pytest.fixture(scope="module")
def fleet_run(sshd, tmp_path_factory, pinned_bin_dir, tiny_replica_paths):
    """`invoke fleet.reproduce --smoke` on lab-a, lab-b (sharing the kit's cpu build and replicas through each
    host's env, so their builds are verified no-ops) and lab-down; then status and verify."""
    tmp = tmp_path_factory.mktemp("fleet")
    # Both "hosts" share this machine's cores: llama.cpp's OpenMP threads must sleep at a barrier rather
    # than spin, or the two runs starve each other (a cell many times slower than alone).
    env = {"MOEBENCH_HOME": str(paths.work_dir()), "MOEBENCH_MODELS": str(paths.models_dir()),
           "OMP_WAIT_POLICY": "PASSIVE"}
    fleet_file = fleet_yaml(tmp / "fleet.yaml", sshd.port, sshd.client_key, tmp / "kits", env)
    raw, results = tmp / "raw", tmp / "results"
    done, seconds = _invoke("fleet.reproduce", "--fleet-file", str(fleet_file), "--smoke", "--raw-dir", str(raw),
                            "--output-dir", str(results))
    status, _ = _invoke("fleet.status", "--fleet-file", str(fleet_file))
    verify, _ = _invoke("fleet.verify", "--fleet-file", str(fleet_file), "--hosts", "lab-a,lab-b")
    print(f"\ninvoke fleet.reproduce --smoke (2 hosts + 1 down): {seconds:.1f} s")
    print("\n".join(line for line in done.stdout.splitlines() if not line.startswith("[")))
    return {"tmp": tmp, "raw": raw, "results": results, "done": done, "status": status, "verify": verify,
            "key": sshd.client_key}


@pytest.mark.slow
def test_fleet_reproduce_brings_both_hosts_records_home_and_reports_the_dead_one(fleet_run):
    done, raw = fleet_run["done"], fleet_run["raw"]
    output = done.stdout + done.stderr
    assert done.returncode == 1, output[-4000:]
    assert "1 of 3 hosts failed: lab-down" in output
    table = output[output.index("host "):]
    assert [line.split()[0] for line in table.splitlines()[2:5]] == ["lab-a", "lab-b", "lab-down"]
    assert "failed at connect: unreachable" in table.splitlines()[4]
    for host in ("lab-a", "lab-b"):
        assert f"[{host}] $ scripts/bootstrap.sh" in done.stdout and f"[{host}] == report" in done.stdout
        assert sorted(p.name for p in (raw / host).glob("run_*.jsonl")), host
        manifest = json.loads((raw / host / "manifests" / "cpu-offline.json").read_text())
        assert manifest["binaries"]
    assert not list((raw / "lab-down").glob("run_*.jsonl"))


@pytest.mark.slow
def test_the_combined_report_lists_both_hosts_records(fleet_run):
    results, raw = fleet_run["results"], fleet_run["raw"]
    with open(results / "benchmark_results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    by_host = {host: [r for r in rows if r["fleet_host"] == host] for host in ("lab-a", "lab-b")}
    assert by_host["lab-a"] and len(by_host["lab-a"]) == len(by_host["lab-b"])
    assert len(rows) == 2 * len(by_host["lab-a"])
    kit_commit = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
    assert {r["prov_kit_commit"] for r in rows} == {kit_commit} and {r["prov_kit_dirty"] for r in rows} == {"False"}
    report = (results / "REPORT.md").read_text()
    fleet = report[report.index("## Fleet"):]
    for host in ("lab-a", "lab-b"):
        line = next(line for line in fleet.splitlines() if line.startswith(f"| {host} |"))
        assert f"| ok | {len(by_host[host])} |" in line
        assert all(f"`{host}/{p.name}`" in line for p in (raw / host).glob("run_*.jsonl"))
    assert "| lab-down | cpu | bare host | failed at connect: unreachable" in fleet


@pytest.mark.slow
def test_fleet_status_and_verify_after_the_run(fleet_run):
    status = fleet_run["status"]
    assert status.returncode == 1  # lab-down
    commit = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    for host in ("lab-a", "lab-b"):
        line = next(line for line in status.stdout.splitlines() if line.startswith(host))
        assert line.split()[2:6] == ["yes", commit[:12], "(=", "local"], line
        assert f"complete: cpu_replica-tiny_smoke at {commit[:12]}" in line
    verify = fleet_run["verify"]
    manifest = json.loads((fleet_run["raw"] / "lab-a" / "manifests" / "cpu-offline.json").read_text())
    pinned = load_config().lock.binaries.get(f"cpu/offline/{manifest['toolchain_id']}", {})
    for host in ("lab-a", "lab-b"):
        for name, entry in manifest["binaries"].items():
            line = next(line for line in verify.stdout.splitlines() if line.startswith(host) and f" {name} " in line)
            assert entry["sha256"] in line
            assert ("= lock" in line) == (pinned.get(name) == entry["sha256"])
    all_pinned = all(pinned.get(n) == e["sha256"] for n, e in manifest["binaries"].items())
    assert verify.returncode == (0 if all_pinned else 1), verify.stdout + verify.stderr


@pytest.mark.slow
def test_no_key_text_in_anything_the_fleet_wrote(fleet_run):
    secret = fleet_run["key"].read_text().strip().splitlines()[1:-1]  # the key's body, without its armor
    assert secret
    written = [p for root in (fleet_run["raw"], fleet_run["results"], fleet_run["tmp"] / "kits")
               for p in root.rglob("*") if p.is_file() and ".venv" not in p.parts and ".git" not in p.parts]
    assert any(p.name == "fleet.log" for p in written)
    for path in written:
        data = path.read_bytes()
        assert not any(line.encode() in data for line in secret), path
        if fleet_run["tmp"] / "kits" not in path.parents:  # the synced kit's sources may name the armor
            assert b"PRIVATE KEY" not in data, path
    outputs = fleet_run["done"].stdout + fleet_run["status"].stdout + fleet_run["verify"].stdout
    assert not any(line in outputs for line in secret)
