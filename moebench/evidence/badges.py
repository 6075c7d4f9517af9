"""BADGES.md: for each ACM artifact badge, the evidence a bundle holds for it and what it lacks, derived
from the bundle's own members by fixed rules. Each line names the members it read, so a reader can
open them, and taking a member out of the bundle turns its line from met to missing; `invoke verify
--bundle` derives the file again from the members and names a BADGES.md that is not what they give.

Each badge is a list of checks, each met (`[x]`) or missing (`[ ]`):

Artifacts Available
- pin: lock.yaml pins every llama.cpp pin the records name (every pin it holds when there are no
  records) with its commit, source tree hash and sources, each with its URL; every record's commit is
  its pin's (lock.yaml).
- kit: every record names the kit commit that made it, from a clean tree (the records).
- archive: never met: an archival, DOI-bearing location; a bundle cannot show where it is published.

Artifacts Evaluated – Functional
- records: at least one record, every line valid against schema/record-v1.json, none failed (data/raw/).
- chain: every record's binary is listed by a bundled build manifest of its device and pin, with the
  record's tree hash and commit (chain.breaks), and there is no UNBACKED.txt (builds/*/manifest.json).
- report, table, summaries: results/REPORT.md, results/benchmark_results.csv, results/summary_tables/*.csv.

Artifacts Evaluated – Reusable
- attestations: every bundled build manifest has its attestation beside it (present; `invoke compare`
  checks its signature) (builds/*/attestation.intoto.json).
- tokens: every ok record carries its prompt and generated token fingerprints and its tokenizer's source.
- provenance: every ok record names its binary, llama.cpp commit, source tree hash, model SHA-256, host
  and kit commit.
- hardware: HARDWARE.md.
- weights: every ok record ran real weights, not synthetic-weight replicas (model_source).

Results Reproduced
- weights: as for Reusable: the study's claims are about the real models.
- devices: the records cover every device the study's claims name (STUDY_DEVICES).
- machines: records from at least two machines, told apart by provenance.host.host_id where records have
  it and by CPU model, cores, RAM, architecture and GPU name (a reboot is no second machine; machines
  alike in all of these, clones of one cloud image for one, count as one).
- comparison: never met by one bundle: an independent run compared with `invoke compare`;
  `results_reproduced_upgrade` says what such a comparison gives.

A badge is "supported" when every check is met, "partly supported" when some are, "not supported" when
none is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

import yaml

from moebench.evidence import chain
from moebench.run.records import RecordError, is_records_file, validate_record

BADGES_NAME = "BADGES.md"
RAW = "data/raw/"
# The devices configs/reference.yaml's claims name: a fixed rule, so a bundle's BADGES.md does not
# change with the reader's configs (tests/evidence/test_badges.py holds the two together).
STUDY_DEVICES = ("jetson", "m2")
PROVENANCE_NAMED = ("binary_sha256", "llama_cpp_commit", "source_tree_hash", "model_sha256", "host", "kit_commit")
MACHINE_FIELDS = ("cpu_model", "logical_cores", "ram_bytes", "machine")
NOT_READ = ("MANIFEST", BADGES_NAME)  # written after, or from, the members this file reads


@dataclass(frozen=True)
class Check:
    key: str
    met: bool
    text: str
    members: tuple[str, ...] = ()  # what it read; named on its line

    def line(self, badge: str) -> str:
        rests_on = f" — {', '.join(self.members)}" if self.members else ""
        return f"- [{'x' if self.met else ' '}] {badge}, {self.key}: {self.text}{rests_on}"


@dataclass(frozen=True)
class Badge:
    title: str  # ACM's name
    short: str  # the name on each of its lines
    checks: tuple[Check, ...]

    @property
    def status(self) -> str:
        met = sum(check.met for check in self.checks)
        return "supported" if met == len(self.checks) else "partly supported" if met else "not supported"


# --- the records, read from the members --------------------------------------------------------------

@dataclass(frozen=True)
class Records:
    found: list[tuple[dict[str, Any], str]]  # (record, "data/raw/<file>:<line>")
    invalid: list[str]  # "data/raw/<file>:<line>: why"
    files: tuple[str, ...]

    @property
    def ok(self) -> list[tuple[dict[str, Any], str]]:
        return [(record, origin) for record, origin in self.found if record["status"] == "ok"]


def read_records(members: dict[str, bytes]) -> Records:
    """Every record line of the bundle's data/raw/, each validated as `invoke analyze` validates it."""
    files = tuple(sorted(name for name in members if name.startswith(RAW) and is_records_file(name[len(RAW):])))
    found, invalid = [], []
    for name in files:
        for number, raw in enumerate(members[name].splitlines(), 1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
                validate_record(record)
            except (json.JSONDecodeError, UnicodeDecodeError, RecordError) as exc:
                invalid.append(f"{name}:{number}: {str(exc)[:160]}")
                continue
            found.append((record, f"{name}:{number}"))
    return Records(found, invalid, files)


def _files(records: list[tuple[dict[str, Any], str]]) -> tuple[str, ...]:
    return tuple(sorted({origin.rsplit(":", 1)[0] for _, origin in records}))


def _count(n: int, noun: str, plural: str = "") -> str:
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def _every_ok(records: Records, key: str, lacks: Callable[[dict[str, Any]], str | None], met_text: str) -> Check:
    """Met when there are ok records and `lacks` finds nothing missing in any; else names the first that lacks."""
    if not records.ok:
        return Check(key, False, f"no ok records under {RAW} to read", records.files)
    lacking = [(origin, why) for record, origin in records.ok if (why := lacks(record))]
    if not lacking:
        return Check(key, True, f"{met_text} ({len(records.ok)} ok records)", _files(records.ok))
    origin, why = lacking[0]
    return Check(key, False, f"missing in {len(lacking)} of {len(records.ok)} ok records (first: {origin}: {why})",
                 _files(records.ok))


# --- Artifacts Available -----------------------------------------------------------------------------

def _pin_problem(name: str, entry: Any) -> str | None:
    if not isinstance(entry, dict):
        return f"lock.yaml has no pin {name}"
    sources = entry.get("sources") or {}
    if not entry.get("commit") or not entry.get("tree_hash") or not sources:
        return f"lock.yaml's pin {name} lacks its commit, tree hash or sources"
    unlocated = sorted(s for s, source in sources.items() if not (source or {}).get("url"))
    return f"lock.yaml's pin {name}: source {', '.join(unlocated)} has no URL" if unlocated else None


def pin_check(members: dict[str, bytes], records: Records) -> Check:
    if "lock.yaml" not in members:
        return Check("pin", False, "missing lock.yaml (the pins of llama.cpp, its sources and hashes)")
    try:
        pins = (yaml.safe_load(members["lock.yaml"]) or {}).get("llama_cpp") or {}
    except (yaml.YAMLError, AttributeError) as exc:
        return Check("pin", False, f"lock.yaml holds no llama_cpp pins ({str(exc)[:120]})", ("lock.yaml",))
    named = sorted({r["provenance"]["llama_cpp_pin"] or "(none)" for r, _ in records.found}) or sorted(pins)
    problems = [problem for name in named if (problem := _pin_problem(name, pins.get(name)))]
    if not problems:  # every pin named is whole: each record's commit is its pin's
        problems = [f"{origin} ran commit {prov['llama_cpp_commit']}, lock.yaml's pin {prov['llama_cpp_pin']} is "
                    f"{pins[prov['llama_cpp_pin']]['commit']}" for record, origin in records.found
                    if (prov := record["provenance"])["llama_cpp_commit"] != pins[prov["llama_cpp_pin"]]["commit"]]
    if not named or problems:
        return Check("pin", False, problems[0] if problems else "lock.yaml pins no llama.cpp", ("lock.yaml",))
    described = "; ".join(f"{name} at {pins[name]['commit'][:8]}, tree {pins[name]['tree_hash'][:8]}, sources "
                          f"{', '.join(sorted(pins[name]['sources']))}" for name in named)
    return Check("pin", True, f"lock.yaml pins llama.cpp {described}, each source with its URL", ("lock.yaml",))


def kit_check(records: Records) -> Check:
    def lacks(record: dict[str, Any]) -> str | None:
        prov = record["provenance"]
        if not prov.get("kit_commit"):
            return "no provenance.kit_commit"
        return None if prov.get("kit_dirty") is False else "made from a kit tree with uncommitted changes"
    commits = sorted({record["provenance"].get("kit_commit") or "" for record, _ in records.ok} - {""})
    return _every_ok(records, "kit", lacks, f"records made by the kit at commit {', '.join(c[:12] for c in commits)} "
                                            f"from a clean tree: its source at that commit is what to archive")


def available(members: dict[str, bytes], records: Records) -> Badge:
    archive = Check("archive", False, "missing an archival, DOI-bearing location (a bundle cannot show where it is "
                                      "published)")
    return Badge("Artifacts Available", "Available", (pin_check(members, records), kit_check(records), archive))


# --- Artifacts Evaluated – Functional ----------------------------------------------------------------

def records_check(records: Records) -> Check:
    if records.invalid:
        return Check("records", False,
                     f"{len(records.invalid)} lines are no valid record (first: {records.invalid[0]})",
                     records.files)
    if not records.found:
        return Check("records", False, f"missing records (no JSONL under {RAW})")
    failed = [(r, origin) for r, origin in records.found if r["status"] != "ok"]
    counts = f"{_count(len(records.found), 'record')}, {len(records.ok)} ok, {len(failed)} failed"
    if failed:
        first, origin = failed[0]
        return Check("records", False, f"{counts} (first: {origin}: {(first['failure'] or {}).get('reason')})",
                     records.files)
    return Check("records", True, f"{counts}, every line valid against schema/record-v1.json", records.files)


def manifests_of(members: dict[str, bytes]) -> dict[str, dict[str, Any]]:
    """builds/<folder>/manifest.json, folder -> manifest (what is no manifest is left out)."""
    found = {}
    for name, data in sorted(members.items()):
        if name.startswith("builds/") and name.endswith("/manifest.json"):
            try:
                manifest = json.loads(data)
            except ValueError:
                continue
            if chain.is_manifest(manifest):
                found[name.removeprefix("builds/").removesuffix("/manifest.json")] = manifest
    return found


def chain_check(members: dict[str, bytes], records: Records) -> Check:
    manifests = manifests_of(members)
    used = sorted({found[0] for record, _ in records.found if (binary := chain.record_binary(record))
                   and (found := chain.manifest_of(binary, manifests.items()))})
    named = tuple(f"builds/{folder}/manifest.json" for folder in used)
    if "UNBACKED.txt" in members:
        unbacked = _count(len(members["UNBACKED.txt"].splitlines()), "binary", "binaries")
        return Check("chain", False, f"{unbacked} the records name bundled without a build manifest",
                     ("UNBACKED.txt", *named))
    if not records.found:
        return Check("chain", False, "no records, so no binary a build manifest could back")
    breaks = chain.breaks(records.found, manifests)
    if breaks:
        return Check("chain", False, f"{len(breaks)} records break the chain (first: {breaks[0]})",
                     (*named, *records.files))
    return Check("chain", True, "every record's binary is in a bundled build manifest of its device and pin, with "
                                "its tree hash and commit", named)


def member_check(members: dict[str, bytes], key: str, name: str, what: str, fix: str) -> Check:
    if name in members:
        return Check(key, True, what, (name,))
    return Check(key, False, f"missing {name} ({fix})")


def summaries_check(members: dict[str, bytes]) -> Check:
    tables = tuple(sorted(n for n in members if n.startswith("results/summary_tables/") and n.endswith(".csv")))
    if tables:
        return Check("summaries", True, f"{len(tables)} summary tables", tables)
    return Check("summaries", False, "missing results/summary_tables/*.csv (run invoke analyze before invoke bundle)")


def functional(members: dict[str, bytes], records: Records) -> Badge:
    return Badge("Artifacts Evaluated – Functional", "Functional", (
        records_check(records), chain_check(members, records),
        member_check(members, "report", "results/REPORT.md", "the report of these records",
                     "run invoke report before invoke bundle"),
        member_check(members, "table", "results/benchmark_results.csv", "one row per record",
                     "run invoke analyze before invoke bundle"),
        summaries_check(members)))


# --- Artifacts Evaluated – Reusable ------------------------------------------------------------------

def attestations_check(members: dict[str, bytes]) -> Check:
    manifests = manifests_of(members)
    if not manifests:
        return Check("attestations", False, "no build manifest is bundled, so no build to attest")
    missing = [(folder, manifest) for folder, manifest in manifests.items()
               if f"builds/{folder}/attestation.intoto.json" not in members]
    if missing:
        folder, manifest = missing[0]
        return Check("attestations", False, f"missing builds/{folder}/attestation.intoto.json (run invoke attest "
                                            f"--device {manifest['device']} --pin {manifest['pin']} where it was built)"
                     + (f" and {len(missing) - 1} more" if len(missing) > 1 else ""),
                     tuple(f"builds/{folder}/manifest.json" for folder, _ in missing))
    return Check("attestations", True, f"every bundled build ({len(manifests)}) is attested",
                 tuple(f"builds/{folder}/attestation.intoto.json" for folder in manifests))


def tokens_check(records: Records) -> Check:
    def lacks(record: dict[str, Any]) -> str | None:
        absent = [f for f in ("prompt_tokens_sha256", "gen_tokens_sha256") if not record.get(f)]
        absent += [] if record["provenance"].get("tokenizer") else ["provenance.tokenizer"]
        return f"no {', '.join(absent)}" if absent else None
    return _every_ok(records, "tokens", lacks, "the records carry their prompt and generated token fingerprints and "
                                               "their tokenizer's source")


def provenance_check(records: Records) -> Check:
    def lacks(record: dict[str, Any]) -> str | None:
        absent = [f"provenance.{f}" for f in PROVENANCE_NAMED if not record["provenance"].get(f)]
        return f"no {', '.join(absent)}" if absent else None
    return _every_ok(records, "provenance", lacks, f"the records name their {', '.join(PROVENANCE_NAMED)}")


def weights_check(records: Records) -> Check:
    if not records.ok:
        return Check("weights", False, f"no ok records under {RAW} to read", records.files)
    replicas = [record for record, _ in records.ok if record["model_source"] != "real"]
    if replicas:
        scales = ", ".join(sorted({str(record["replica_scale"]) for record in replicas}))
        return Check("weights", False, f"missing real weights: the results describe synthetic-weight replicas "
                                       f"({len(replicas)} of {len(records.ok)} ok records, scale {scales})",
                     _files(records.ok))
    return Check("weights", True, f"every ok record ran the real weights ({len(records.ok)} ok records)",
                 _files(records.ok))


def reusable(members: dict[str, bytes], records: Records) -> Badge:
    return Badge("Artifacts Evaluated – Reusable", "Reusable", (
        attestations_check(members), tokens_check(records), provenance_check(records),
        member_check(members, "hardware", "HARDWARE.md", "the lab's machines and builds, described",
                     "bundle from the kit's checkout, or give invoke bundle the file"),
        weights_check(records)))


# --- Results Reproduced ------------------------------------------------------------------------------

def devices_check(records: Records) -> Check:
    ran = sorted({record["device"] for record, _ in records.ok})
    absent = [d for d in STUDY_DEVICES if d not in ran]
    text = f"records on {', '.join(ran) or 'no device'}"
    if absent:
        return Check("devices", False, f"missing the study's devices {', '.join(absent)}: {text}", _files(records.ok))
    return Check("devices", True, f"{text}, every device of the study's claims", _files(records.ok))


def hardware_key(record: dict[str, Any]) -> str:
    """What the host is: CPU, cores, RAM, architecture, GPU."""
    prov = record["provenance"]
    host = prov.get("host") or {}
    return json.dumps([*(host.get(field) for field in MACHINE_FIELDS), (prov.get("gpu") or {}).get("name")])


def count_machines(records: list[dict[str, Any]]) -> int:
    """Machines the records prove distinct, for this badge: provenance.host.host_id with what the host is.
    Not analysis's replicate unit (host and boot): a second machine must be told apart, so a reboot is
    none. A record that names no host (made before host ids) is told apart by its hardware alone and may
    have run on any named machine of the same hardware: it adds a machine only where its hardware matches
    none of theirs."""
    named: set[tuple[str, str]] = set()
    unnamed: set[str] = set()
    for record in records:
        host_id = (record["provenance"].get("host") or {}).get("host_id")
        if host_id:
            named.add((host_id, hardware_key(record)))
        else:
            unnamed.add(hardware_key(record))
    return len(named) + len(unnamed - {hardware for _, hardware in named})


def machines_check(records: Records) -> Check:
    machines = count_machines([record for record, _ in records.ok])
    runs = {record["run_id"] for record, _ in records.ok}
    text = f"records from {_count(len(runs), 'run')} on {_count(machines, 'machine')} (by provenance.host)"
    if machines < 2:
        return Check("machines", False, f"missing a second machine: {text}", _files(records.ok))
    return Check("machines", True, text, _files(records.ok))


def reproduced(records: Records) -> Badge:
    comparison = Check("comparison", False, "missing an independent run compared with `invoke compare` (a single "
                                            "bundle cannot show it)")
    return Badge("Results Reproduced", "Reproduced", (
        weights_check(records), devices_check(records), machines_check(records), comparison))


# --- the file ------------------------------------------------------------------------------------------

def assess(members: dict[str, bytes]) -> list[Badge]:
    """The four badges of a bundle's members (names as inside the bundle, without moebench-bundle/)."""
    read = {name: data for name, data in members.items() if name not in NOT_READ}
    records = read_records(read)
    return [available(read, records), functional(read, records), reusable(read, records), reproduced(records)]


def render(badges: list[Badge]) -> str:
    lines = ["# ACM artifact badges", "",
             "What this bundle's own members support, by the fixed rules of moebench's evidence/badges.py. Each",
             "line names the members it rests on; MANIFEST hashes them and this file, and `invoke verify --bundle`",
             "derives this file again from them. A badge is supported when every check is met, partly supported",
             "when some are, not supported when none is."]
    for badge in badges:
        lines += ["", f"## {badge.title}: {badge.status}", "", *(check.line(badge.short) for check in badge.checks)]
    return "\n".join(lines) + "\n"


def badges_md(members: dict[str, bytes]) -> str:
    return render(assess(members))


def summary(badges: list[Badge]) -> str:
    return "; ".join(f"{badge.short} {badge.status}" for badge in badges)


def stale(members: dict[str, bytes]) -> str | None:
    """None when the bundle's BADGES.md is what its members give; else one line saying where it is not."""
    if BADGES_NAME not in members:
        return f"no {BADGES_NAME} in the bundle (make it again with invoke bundle)"
    derived = badges_md(members)
    if members[BADGES_NAME] == derived.encode():
        return None
    held = members[BADGES_NAME].decode("utf-8", errors="replace").splitlines()
    lines = derived.splitlines()
    number = next((i for i, (a, b) in enumerate(zip(held, lines), 1) if a != b), min(len(held), len(lines)) + 1)
    shown = held[number - 1] if number <= len(held) else "(end of file)"
    return (f"{BADGES_NAME} is not what the bundle's members give, from line {number}: {shown!r} (edited, or made "
            f"by another kit version; make the bundle again with invoke bundle)")


def results_reproduced_upgrade(decisions: list[str], cells_differing: int) -> str:
    """What a comparison of two bundles gives "Results Reproduced": an upgrade only when every headline
    decision is "reproduced" and the two ran the same work in every cell (else agreement is not a
    reproduction)."""
    if not decisions:
        return "Results Reproduced: not upgraded: no headline metric was compared."
    if cells_differing:
        return (f"Results Reproduced: not upgraded: the two bundles ran different work in {cells_differing} "
                "cell(s) (model file, token fingerprints, build chain or configs: see work).")
    others = [d for d in decisions if d != "reproduced"]
    if others:
        counts = ", ".join(f"{others.count(d)} {d}" for d in sorted(set(others)))
        return f"Results Reproduced: not upgraded: {len(others)} of {len(decisions)} headline decisions fall short " \
               f"of reproduced ({counts})."
    return f"Results Reproduced: upgraded: all {len(decisions)} headline decisions reproduced by the same work."
