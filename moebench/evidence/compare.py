"""`invoke compare A B`: two labs' evidence side by side, each a bundle, a build manifest (or its
build directory) or an attestation.

Artifacts (binaries, source archive and tree, toolchain, images, recipe fingerprint, models) are
matched by name: IDENTICAL, or DIFFERENT with both digests; where two differing binaries are both on
disk, diffoscope says where their bytes differ. An artifact kind only one side describes is listed
as not compared. Signatures are checked on the way in (a bad one is an IntegrityError: exit 2).

Records (when both sides carry them) are matched per cell (experiment, device, model, weights,
runner, knobs) and compared per headline metric: each lab's 95% interval of the geometric mean
(stats.positive_interval), whether the two intervals overlap, and B/A as the ratio of the geometric
means with a Welch t-interval on the difference of the mean logs (the labs' runs are not paired).
A metric agrees when the intervals overlap.

Before the numbers, the work: per cell and prompt, whether both labs ran the same model file
(SHA-256), fed the same prompt token ids and generated the same token sequence (the records' token
fingerprints). A model or prompt mismatch is different work; a generated mismatch is too, and says
whether it is to be expected (the two records name different runner binaries or GPUs, whose
floating-point sums may round differently and flip a greedy pick), or not (same binary, model and
backend: greedy decoding is then deterministic). Any mismatch makes the verdict DIFFERENT.
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
import subprocess
import tarfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moebench.evidence.attest import ATTESTATION_NAME, PAYLOAD_TYPE, key_id, open_envelope, read_attestation
from moebench.evidence.bundle import Bundle, ChainCheck, check_chain, load_bundle_records, read_bundle
from moebench.evidence.badges import results_reproduced_upgrade
from moebench.evidence.chain import is_manifest
from moebench.evidence.reproduction import DECISIONS, Decision, decide
from moebench.config import load_config
from moebench.errors import IntegrityError, UserError
from moebench.files import write_atomic
from moebench.hashing import sha256_files
from moebench.analysis.stats import CONFIDENCE, MIN_N_FOR_INTERVAL, intervals_overlap, positive_interval, t_quantile

HEADLINE_METRICS = (("gen_tokens_per_s", "gen tok/s"), ("prefill_tokens_per_s", "prefill tok/s"),
                    ("peak_rss_bytes", "peak RSS bytes"), ("joules_per_token", "J/token"))
RATIO_METHOD = "ratio of geometric means B/A, Welch t-interval on the difference of mean logs, exponentiated, 95%"
DIFFOSCOPE_LINES = 40
DIFFOSCOPE_TIMEOUT_S = 600


@dataclass(frozen=True)
class Artifact:
    kind: str  # binary | source | toolchain | image | recipe | model
    name: str
    digest: str  # "<algorithm>:<hex>", or the toolchain id
    path: Path | None = None
    group: str = ""  # the build (or pin, or model) it belongs to: compared only when both sides have the group


@dataclass
class Side:
    label: str
    what: str
    artifacts: dict[str, Artifact] = field(default_factory=dict)
    records: list[dict[str, Any]] | None = None
    signers: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)
    chain: ChainCheck | None = None  # a bundle's own record -> binary -> manifest chain

    def add(self, artifact: Artifact) -> None:
        known = self.artifacts.get(artifact.name)
        if known is not None and known.digest != artifact.digest:
            raise IntegrityError(self.label, f"{artifact.name} is {known.digest} in one of its files and "
                                             f"{artifact.digest} in another", "ask its lab which one it built")
        if known is None or (known.path is None and artifact.path is not None):
            self.artifacts[artifact.name] = artifact


# --- reading one side --------------------------------------------------------------------------------

def _where(device: str, pin: str, image: str | None) -> str:
    """A build's name: device/pin, and the toolchain image it was built in (a bare-host build and an image
    build of one pin can sit side by side in one work directory)."""
    return f"{device}/{pin}" + (f" in image {image}" if image else "")


def _manifest_artifacts(side: Side, manifest: dict[str, Any], build_dir: Path | None, image: str | None) -> None:
    """The manifest's artifacts; a binary present in `build_dir` enters with the SHA-256 of its bytes now."""
    where = _where(manifest["device"], manifest["pin"], image)
    pin = f"pin {manifest['pin']}"
    files = {name: build_dir / entry["path"] for name, entry in manifest["binaries"].items()} if build_dir else {}
    present = sha256_files(p for p in files.values() if p.is_file())
    for name, entry in manifest["binaries"].items():
        path = files.get(name)
        digest = present.get(path, entry["sha256"]) if path is not None else entry["sha256"]
        if digest != entry["sha256"]:
            side.notes.append(f"{path}: sha256 is {digest}, its build manifest records {entry['sha256']} "
                              "(modified after it was built)")
        side.add(Artifact("binary", f"binary {where} {name}", f"sha256:{digest}", path if path in present else None,
                          where))
    if manifest.get("archive_sha256"):
        side.add(Artifact("source", f"source archive {manifest['pin']}", f"sha256:{manifest['archive_sha256']}",
                          group=pin))
    side.add(Artifact("source", f"source tree {manifest['pin']}", f"gitTree:{manifest['source_tree_hash']}", group=pin))
    side.add(Artifact("toolchain", f"toolchain {where}", manifest["toolchain_id"], group=where))
    side.add(Artifact("recipe", f"recipe fingerprint {where}", f"sha256:{manifest['fingerprint']}", group=where))


def _statement_artifacts(side: Side, statement: dict[str, Any], binaries: bool = True,
                         image: str | None = None) -> dict[str, str]:
    """Add the statement's artifacts (its binaries too unless a manifest beside it already gave them);
    returns its subjects, name -> sha256."""
    params = statement["predicate"]["buildDefinition"]["externalParameters"]
    where = _where(params["device"], params["pin"], image)
    pin = f"pin {params['pin']}"
    subjects = {s["name"]: s["digest"]["sha256"] for s in statement["subject"]}
    for name, digest in subjects.items() if binaries else ():
        side.add(Artifact("binary", f"binary {where} {name}", f"sha256:{digest}", group=where))
    for dep in statement["predicate"]["buildDefinition"]["resolvedDependencies"]:
        digest = dep.get("digest") or {}
        if dep["name"] == "llama.cpp source archive":
            side.add(Artifact("source", f"source archive {params['pin']}", f"sha256:{digest['sha256']}", group=pin))
        elif dep["name"] == "llama.cpp source tree":
            side.add(Artifact("source", f"source tree {params['pin']}", f"gitTree:{digest['gitTree']}", group=pin))
        elif dep["name"] == "toolchain image":
            algorithm, value = next(iter(digest.items()))
            side.add(Artifact("image", f"toolchain image {where}", f"{algorithm}:{value}", group=where))
            side.add(Artifact("toolchain", f"toolchain {where}", dep["annotations"]["toolchain_id"], group=where))
        elif dep["name"].startswith("toolchain "):
            side.add(Artifact("toolchain", f"toolchain {where}", dep["uri"].rsplit(":", 1)[-1], group=where))
        elif dep["name"] == "moebench build recipe fingerprint":
            side.add(Artifact("recipe", f"recipe fingerprint {where}", f"sha256:{digest['sha256']}", group=where))
    return subjects


def _check_attested(where: str | Path, subjects: dict[str, str], manifest: dict[str, Any]) -> None:
    built = {name: entry["sha256"] for name, entry in manifest["binaries"].items()}
    if subjects != built:
        differ = sorted(n for n in set(subjects) | set(built) if subjects.get(n) != built.get(n))
        raise IntegrityError(where, f"the attestation and the build manifest name different binaries: {', '.join(differ)}",
                             "attest the build again (invoke attest), or ask its lab for the matching pair")


def _records_artifacts(side: Side, records: list[dict[str, Any]]) -> None:
    models: dict[str, set[str]] = {}
    for record in records:
        prov = record["provenance"]
        label = record["model_id"] + (f" ({record['model_source']}" + (f", {record['replica_scale']})"
                                      if record.get("replica_scale") else ")"))
        if prov.get("model_sha256"):
            models.setdefault(f"model {label}", set()).add(prov["model_sha256"])
        if prov.get("image_digest"):
            side.add(Artifact("image", f"run image {record['device']}", prov["image_digest"],
                              group=f"run image {record['device']}"))
    for name, digests in models.items():
        side.add(Artifact("model", name, "sha256:" + ",".join(sorted(digests)), group=name))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(path, f"cannot read it as JSON ({exc})", "give a bundle, a build manifest or an attestation") \
            from None


def _manifest_side(path: Path, manifest: dict[str, Any], trusted: frozenset[str]) -> Side:
    side = Side(str(path), "build manifest")
    build_dir = path.parent
    _manifest_artifacts(side, manifest, build_dir, None)
    attestation = build_dir / ATTESTATION_NAME
    if attestation.is_file():
        statement, signer = read_attestation(attestation, trusted)
        _check_attested(attestation, _statement_artifacts(side, statement, binaries=False), manifest)
        side.signers.add(signer)
        side.what += f" with its attestation (signature verified, key {signer})"
    return side


def _bundle_side(bundle: Bundle, trusted: frozenset[str]) -> Side:
    side = Side(str(bundle.path), f"bundle (sha256 {bundle.sha256}; sidecar {bundle.sidecar}; MANIFEST matches)")
    manifests = {name: json.loads(data) for name, data in sorted(bundle.under("builds").items())
                 if name.endswith("/manifest.json")}
    builds = Counter((m["device"], m["pin"]) for m in manifests.values())
    for name, manifest in manifests.items():
        # a bare-host build and an image build of one device and pin: the image one is named by its image
        folder = name.split("/")[1]
        image = folder.removeprefix("image-") if folder.startswith("image-") and builds[
            (manifest["device"], manifest["pin"])] > 1 else None
        _manifest_artifacts(side, manifest, None, image)
        attestation = name.removesuffix("manifest.json") + ATTESTATION_NAME
        if attestation in bundle.members:
            where = f"{bundle.path}: {attestation}"
            statement, signer = open_envelope(json.loads(bundle.members[attestation]), where, trusted)
            _check_attested(where, _statement_artifacts(side, statement, binaries=False, image=image), manifest)
            side.signers.add(signer)
    side.records = load_bundle_records(bundle)
    side.chain = check_chain(bundle)
    _records_artifacts(side, side.records)
    return side


def trusted_key_id(path: Path) -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        public = serialization.load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise UserError(path, f"cannot read a PEM public key ({exc})", "give the lab's attest-ed25519.pub.pem") from None
    if not isinstance(public, Ed25519PublicKey):
        raise UserError(path, "not an Ed25519 public key", "give the lab's attest-ed25519.pub.pem")
    return key_id(public)


def load_side(path: Path, trusted: frozenset[str] = frozenset()) -> Side:
    """One side of a comparison; `trusted`: the key ids its attestations must be signed by (any, when empty)."""
    path = Path(path)
    if path.is_dir():
        path = path / "manifest.json"
    if not path.is_file():
        raise UserError(path, "no such file", "give a bundle (.tar.gz), a build manifest or an attestation")
    if tarfile.is_tarfile(path):
        return _bundle_side(read_bundle(path), trusted)
    data = _read_json(path)
    if isinstance(data, dict) and data.get("payloadType") == PAYLOAD_TYPE:
        side = Side(str(path), "attestation")
        statement, signer = open_envelope(data, path, trusted)
        _statement_artifacts(side, statement)
        side.signers.add(signer)
        side.what += f" (signature verified, key {signer})"
        return side
    if is_manifest(data):
        return _manifest_side(path, data, trusted)
    raise UserError(path, "neither a bundle, a build manifest nor an in-toto attestation",
                    "give what invoke bundle, invoke build or invoke attest wrote")


# --- artifacts ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ArtifactResult:
    name: str
    status: str  # IDENTICAL | DIFFERENT
    a: Artifact | None
    b: Artifact | None
    diffoscope: str | None = None


def diffoscope_summary(a: Path, b: Path) -> str:
    """diffoscope's account of where two files differ (its first lines), or why there is none."""
    command = f"diffoscope {a} {b}"
    tool = shutil.which("diffoscope")
    if tool is None:
        return (f"diffoscope is not installed (apt-get install diffoscope); to see where they differ, run: "
                f"{command}")
    try:
        done = subprocess.run([tool, "--text", "-", "--no-progress", str(a), str(b)], capture_output=True,
                              text=True, errors="replace", timeout=DIFFOSCOPE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return f"diffoscope ran past {DIFFOSCOPE_TIMEOUT_S} s; run it yourself: {command}"
    lines = done.stdout.splitlines()
    if done.returncode not in (0, 1) or not lines:
        return f"diffoscope exited {done.returncode}: {(done.stderr.strip().splitlines() or [''])[-1]}"
    shown = lines[:DIFFOSCOPE_LINES]
    more = len(lines) - len(shown)
    return "\n".join(shown + ([f"... {more} more lines; the whole account: {command}"] if more > 0 else []))


def compare_artifacts(a: Side, b: Side) -> tuple[list[ArtifactResult], list[str]]:
    kinds_a = {x.kind for x in a.artifacts.values()}
    kinds_b = {x.kind for x in b.artifacts.values()}
    notes = [f"{kind}: only {which} describes any, not compared"
             for kinds, other, which in ((kinds_a, kinds_b, "A"), (kinds_b, kinds_a, "B")) for kind in sorted(kinds - other)]
    groups_a = {x.group for x in a.artifacts.values()}
    groups_b = {x.group for x in b.artifacts.values()}
    results = []
    for name in sorted(set(a.artifacts) | set(b.artifacts)):
        left, right = a.artifacts.get(name), b.artifacts.get(name)
        kind, group = (left or right).kind, (left or right).group  # type: ignore[union-attr]
        if kind not in kinds_a or kind not in kinds_b:
            continue
        if group not in groups_a or group not in groups_b:
            if f"{group}: only " not in " ".join(notes):
                notes.append(f"{group}: only {'A' if left else 'B'} has it, not compared")
            continue
        if left is not None and right is not None and left.digest == right.digest:
            results.append(ArtifactResult(name, "IDENTICAL", left, right))
            continue
        account = None
        if left is not None and right is not None and left.path is not None and right.path is not None:
            account = diffoscope_summary(left.path, right.path)
        elif kind == "binary" and left is not None and right is not None:
            account = "diffoscope needs both files on disk: compare the two build manifests (or build directories)"
        results.append(ArtifactResult(name, "DIFFERENT", left, right, account))
    return results, notes


# --- records -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Ratio:
    ratio: float | None
    low: float | None
    high: float | None
    note: str | None = None


def unpaired_ratio(a: list[float], b: list[float], confidence: float = CONFIDENCE) -> Ratio:
    """Geometric mean of b over geometric mean of a, with a Welch t-interval on mean(log b) - mean(log a)."""
    if not a or not b or min(a + b) <= 0:
        return Ratio(None, None, None, "a side without positive values: no ratio on the log scale")
    la, lb = [math.log(v) for v in a], [math.log(v) for v in b]
    diff = math.fsum(lb) / len(lb) - math.fsum(la) / len(la)
    if min(len(a), len(b)) < MIN_N_FOR_INTERVAL:
        return Ratio(math.exp(diff), None, None, f"n={len(a)}/{len(b)}: an interval needs at least "
                                                 f"{MIN_N_FOR_INTERVAL} values on each side")
    va, vb = statistics.variance(la) / len(la), statistics.variance(lb) / len(lb)
    if va + vb == 0:
        return Ratio(math.exp(diff), math.exp(diff), math.exp(diff))
    df = (va + vb) ** 2 / (va ** 2 / (len(la) - 1) + vb ** 2 / (len(lb) - 1))
    half = t_quantile(df, confidence) * math.sqrt(va + vb)
    return Ratio(math.exp(diff), math.exp(diff - half), math.exp(diff + half))


@dataclass(frozen=True)
class MetricResult:
    cell: str
    metric: str
    n_a: int
    n_b: int
    a: tuple[float | None, float | None, float | None]  # geometric mean, low, high
    b: tuple[float | None, float | None, float | None]
    overlap: bool | None
    ratio: Ratio
    verdict: str  # agree | differ | not comparable
    note: str | None = None


def _cells(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    cells: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        if r["status"] != "ok" or r["is_warmup"]:
            continue
        knobs = r["knobs"]
        weights = r["model_source"] + (f"/{r['replica_scale']}" if r.get("replica_scale") else "")
        key = (f"{r['model_id']} | {r['experiment']} | {r['device']} | {weights} | {r['runner_mode']} | "
               f"t={knobs['threads']} n={knobs['n_predict']}")
        cells.setdefault(key, []).append(r)
    return cells


def compare_records(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> tuple[list[MetricResult], list[str]]:
    cells_a, cells_b = _cells(a), _cells(b)
    notes = [f"cell only in {which}: {cell}" for cells, other, which in ((cells_a, cells_b, "A"), (cells_b, cells_a, "B"))
             for cell in sorted(set(cells) - set(other))]
    results = []
    for cell in sorted(set(cells_a) & set(cells_b)):
        for metric, _ in HEADLINE_METRICS:
            values_a = [float(r[metric]) for r in cells_a[cell] if r.get(metric) is not None]
            values_b = [float(r[metric]) for r in cells_b[cell] if r.get(metric) is not None]
            if not values_a and not values_b:
                continue
            results.append(_metric_result(cell, metric, values_a, values_b))
    return results, notes


def _metric_result(cell: str, metric: str, values_a: list[float], values_b: list[float]) -> MetricResult:
    sa, sb = positive_interval(values_a), positive_interval(values_b)
    ratio = unpaired_ratio(values_a, values_b)
    both = None not in (sa.ci_low, sb.ci_low)
    overlap = intervals_overlap(sa.ci_low, sa.ci_high, sb.ci_low, sb.ci_high) if both else None  # type: ignore[arg-type]
    note = None if both else ("; ".join(f"{side}: {s.note}" for side, s in (("A", sa), ("B", sb)) if s.note)
                              or "no interval")
    verdict = "not comparable" if overlap is None else ("agree" if overlap else "differ")
    return MetricResult(cell, metric, sa.n, sb.n, (sa.geomean, sa.ci_low, sa.ci_high),
                        (sb.geomean, sb.ci_low, sb.ci_high), overlap, ratio, verdict, note)


# What made a cell's numbers, compared per cell: provenance key -> label. A difference is different work.
BUILD_CHAIN = {"llama_cpp_commit": "llama.cpp commit", "source_tree_hash": "source tree hash",
               "binary_sha256": "runner binary sha256", "image_digest": "image digest"}
WORK_CONFIGS = ("prompts.yaml", "experiments.yaml")  # the configs that define the work (provenance.config_sha256)
SHOWN = {"kit_commit": "kit commit"}  # shown beside a cell, never judged
WORK_CHAIN = {**BUILD_CHAIN, **{f"config_sha256.{name}": name for name in WORK_CONFIGS}}


@dataclass(frozen=True)
class WorkResult:
    cell: str  # the metric cell, with the prompt
    model: str  # same | different
    prompt_tokens: str  # match | mismatch | not compared
    gen_tokens: str
    expected: str | None = None  # why a generated mismatch is to be expected, or None
    detail: str = ""
    build: tuple[tuple[str, str, str], ...] = ()  # (what, A's values, B's values) of each differing chain field
    shown: tuple[tuple[str, str, str], ...] = ()  # the same for facts shown, not judged

    @property
    def differs(self) -> bool:
        return "different" == self.model or "mismatch" in (self.prompt_tokens, self.gen_tokens) or bool(self.build)


def _fingerprint(records: list[dict[str, Any]], name: str) -> tuple[set[str], int]:
    """The distinct fingerprints of `name` among the records, and how many records lack one."""
    values = [r.get(name) for r in records]
    return {v for v in values if v}, sum(1 for v in values if not v)


def _match(a: list[dict[str, Any]], b: list[dict[str, Any]], name: str) -> tuple[str, str]:
    (fa, missing_a), (fb, missing_b) = _fingerprint(a, name), _fingerprint(b, name)
    if not fa or not fb:
        side = "A" if not fa else "B"
        return "not compared", f"{name}: {side} has none (records made before fingerprints, or null with a reason)"
    if fa == fb and len(fa) == 1:
        return "match", ""
    return "mismatch", f"{name}: A {sorted(x[:12] for x in fa)}, B {sorted(x[:12] for x in fb)}"


# Where a generated-token mismatch is to be expected: provenance key -> what differs.
DIVERGENCE_CAUSES = {"binary_sha256": "runner binaries", "gpu.name": "GPUs"}


def _expected_divergence(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> str | None:
    reasons = [what for what, _, _ in _chain_differences(a, b, DIVERGENCE_CAUSES)]
    return f"expected: different {' and '.join(reasons)}" if reasons else None


def compare_work(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> list[WorkResult]:
    """Per cell and prompt (repetitions pooled: greedy decoding repeats itself), the model file and
    both token fingerprints of A against B."""
    def by_prompt(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for cell, rows in _cells(records).items():
            for r in rows:
                out.setdefault(f"{cell} | {r['prompt_id']}", []).append(r)
        return out

    cells_a, cells_b = by_prompt(a), by_prompt(b)
    results = []
    for cell in sorted(set(cells_a) & set(cells_b)):
        ra, rb = cells_a[cell], cells_b[cell]
        models = ({r["provenance"].get("model_sha256") for r in ra}, {r["provenance"].get("model_sha256") for r in rb})
        model = "same" if models[0] == models[1] and len(models[0]) == 1 else "different"
        prompt, prompt_detail = _match(ra, rb, "prompt_tokens_sha256")
        gen, gen_detail = _match(ra, rb, "gen_tokens_sha256")
        detail = "; ".join(x for x in (
            f"model_sha256: A {sorted(str(m)[:12] for m in models[0])}, B {sorted(str(m)[:12] for m in models[1])}"
            if model == "different" else "", prompt_detail, gen_detail) if x)
        results.append(WorkResult(cell, model, prompt, gen,
                                  _expected_divergence(ra, rb) if gen == "mismatch" else None, detail,
                                  _chain_differences(ra, rb, WORK_CHAIN), _chain_differences(ra, rb, SHOWN)))
    return results


def _chain_differences(a: list[dict[str, Any]], b: list[dict[str, Any]], fields: dict[str, str]
                       ) -> tuple[tuple[str, str, str], ...]:
    """(label, A's values, B's values) of each provenance field whose values differ between the sides."""
    def values(records: list[dict[str, Any]], key: str) -> str:
        found = set()
        for r in records:
            value: Any = r["provenance"]
            for part in key.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            found.add(str(value))
        return ", ".join(sorted(found))

    out = []
    for key, label in fields.items():
        va, vb = values(a, key), values(b, key)
        if va != vb:
            out.append((label, va, vb))
    return tuple(out)


# --- the comparison ----------------------------------------------------------------------------------

@dataclass
class Comparison:
    a: Side
    b: Side
    artifacts: list[ArtifactResult]
    artifact_notes: list[str]
    metrics: list[MetricResult]
    record_notes: list[str]
    work: list[WorkResult] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)

    @property
    def different(self) -> list[ArtifactResult]:
        return [r for r in self.artifacts if r.status == "DIFFERENT"]

    @property
    def different_work(self) -> list[WorkResult]:
        return [w for w in self.work if w.differs]

    def work_counts(self) -> dict[str, dict[str, int]]:
        """Per fingerprint: how many cells match, mismatch or could not be compared."""
        return {name: dict(Counter(getattr(w, name) for w in self.work)) for name in ("prompt_tokens", "gen_tokens")}

    @property
    def disagreeing(self) -> list[MetricResult]:
        return [m for m in self.metrics if m.verdict == "differ"]

    @property
    def exit_code(self) -> int:
        return 1 if (self.different or self.different_work or self.disagreeing or self.chain_breaks
                     or any(d.decision == "not reproduced" for d in self.decisions)
                     or not (self.artifacts or self.metrics)) else 0

    def decision_counts(self) -> dict[str, int]:
        return dict(Counter(d.decision for d in self.decisions))

    @property
    def chain_breaks(self) -> list[str]:
        return [f"{label}: {line}" for label, side in (("A", self.a), ("B", self.b)) if side.chain
                for line in [*side.chain.breaks, *([f"badges: {side.chain.stale_badges}"]
                                                   if side.chain.stale_badges else [])]]  # unbacked: a break too

    def results_reproduced(self) -> str | None:
        """What this comparison gives the Results Reproduced badge (badges.py); None when no records were compared."""
        if self.a.records is None or self.b.records is None:
            return None
        return results_reproduced_upgrade([d.decision for d in self.decisions], len(self.different_work))

    def verdict(self) -> str:
        if not (self.artifacts or self.metrics):
            return "NOTHING COMPARED: the two sides have no artifact and no cell in common"
        if self.exit_code == 0:
            agreed = sum(m.verdict == "agree" for m in self.metrics)
            proven = sum(w.model == "same" and w.prompt_tokens == w.gen_tokens == "match" for w in self.work)
            return (f"IDENTICAL: {len(self.artifacts)} artifacts match"
                    + (f"; the same work proven in {proven} of {len(self.work)} cells (model file, prompt and "
                       "generated tokens), none different" if self.work else "")
                    + (f"; {agreed} of {len(self.metrics)} metrics agree, none differ" if self.metrics else "")
                + self._decision_tally())
        return (f"DIFFERENT: {len(self.different)} of {len(self.artifacts)} artifacts differ"
                + (f"; {len(self.chain_breaks)} breaks in a bundle's own evidence chain" if self.chain_breaks else "")
                + (f"; different work in {len(self.different_work)} of {len(self.work)} cells" if self.work else "")
                + (f"; {len(self.disagreeing)} of {len(self.metrics)} metrics differ" if self.metrics else "")
                + self._decision_tally())

    def _decision_tally(self) -> str:
        counts = self.decision_counts()
        return ("; headline ratios: " + ", ".join(f"{counts[d]} {d}" for d in DECISIONS if counts.get(d))
                if counts else "")

    def to_json(self) -> dict[str, Any]:
        def art(x: Artifact | None) -> dict[str, Any] | None:
            return None if x is None else {"digest": x.digest, "path": str(x.path) if x.path else None}

        return {"a": {"source": self.a.label, "what": self.a.what, "signers": sorted(self.a.signers),
                      "notes": self.a.notes},
                "b": {"source": self.b.label, "what": self.b.what, "signers": sorted(self.b.signers),
                      "notes": self.b.notes},
                "verdict": self.verdict(),
                "artifacts": [{"name": r.name, "status": r.status, "a": art(r.a), "b": art(r.b),
                               "diffoscope": r.diffoscope} for r in self.artifacts],
                "artifact_notes": self.artifact_notes, "ratio_method": RATIO_METHOD,
                "metrics": [{"cell": m.cell, "metric": m.metric, "n_a": m.n_a, "n_b": m.n_b, "a": list(m.a),
                             "b": list(m.b), "overlap": m.overlap, "ratio": m.ratio.ratio, "ratio_low": m.ratio.low,
                             "ratio_high": m.ratio.high, "verdict": m.verdict, "note": m.note or m.ratio.note}
                            for m in self.metrics],
                "work": [{"cell": w.cell, "model": w.model, "prompt_tokens": w.prompt_tokens,
                          "gen_tokens": w.gen_tokens, "expected": w.expected, "detail": w.detail,
                          "build": [list(x) for x in w.build], "shown": [list(x) for x in w.shown]}
                         for w in self.work],
                "chain": {label: side.chain.lines() for label, side in (("a", self.a), ("b", self.b)) if side.chain},
                "work_counts": self.work_counts(),
                "reproduction": [{"context": d.context, "vs": d.vs, "metric": d.metric,
                                  "a": list(d.a.interval()), "b": list(d.b.interval()),
                                  "runner_a": d.a.runner, "runner_b": d.b.runner,
                                  "n_pairs": [d.a.n_pairs, d.b.n_pairs], "machines": [d.a.machines, d.b.machines],
                                  "machine_kinds": [list(d.a.kinds), list(d.b.kinds)],
                                  "shift": list(d.shift), "tolerance": d.tolerance,
                                  "tolerance_source": d.tolerance_source, "decision": d.decision, "note": d.note}
                                 for d in self.decisions],
                "reproduction_rule": REPRODUCTION_RULE,
                "results_reproduced": self.results_reproduced(),
                "record_notes": self.record_notes}


def compare(path_a: Path, path_b: Path, trusted_keys: tuple[Path, ...] = (), tolerance: float | None = None
            ) -> Comparison:
    """Both sides read and checked, then compared; `trusted_keys`: public key files every attestation must be
    signed by one of; `tolerance`: the relative shift of a headline ratio that still counts as reproduced
    (default: reproduction.py's rule)."""
    trusted = frozenset(trusted_key_id(path) for path in trusted_keys)
    a, b = load_side(path_a, trusted), load_side(path_b, trusted)
    artifacts, artifact_notes = compare_artifacts(a, b)
    metrics: list[MetricResult] = []
    work: list[WorkResult] = []
    decisions: list[Decision] = []
    if a.records is None or b.records is None:
        record_notes = ["records: only bundles carry records; not compared"]
    else:
        metrics, record_notes = compare_records(a.records, b.records)
        work = compare_work(a.records, b.records)
        decisions = decide(load_config(), a.records, b.records, tolerance)
    return Comparison(a, b, artifacts, artifact_notes, metrics, record_notes, work, decisions)


# --- text --------------------------------------------------------------------------------------------

def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.4e}"


def _interval(centre: float | None, low: float | None, high: float | None) -> str:
    return _num(centre) + (f" [{_num(low)}, {_num(high)}]" if low is not None else "")


def render(result: Comparison) -> str:
    lines = [f"A: {result.a.label} ({result.a.what})", f"B: {result.b.label} ({result.b.what})", "", "artifacts:"]
    for r in result.artifacts:
        if r.status == "IDENTICAL":
            lines.append(f"  IDENTICAL  {r.name}  {r.a.digest}")  # type: ignore[union-attr]
            continue
        a = r.a.digest if r.a else "absent"
        b = r.b.digest if r.b else "absent"
        lines.append(f"  DIFFERENT  {r.name}  A {a}  B {b}")
        for side, x in (("A", r.a), ("B", r.b)):
            if x is not None and x.path is not None:
                lines.append(f"    {side} file: {x.path}")
        if r.diffoscope:
            lines += ["    diffoscope:"] + [f"      {line}" for line in r.diffoscope.splitlines()]
    lines += [f"  ({note})" for note in result.artifact_notes]
    lines += [f"  note, {side}: {note}" for side, s in (("A", result.a), ("B", result.b)) for note in s.notes]
    if result.work:
        counts = result.work_counts()
        lines += ["", "work: per cell and prompt, the model file and the token fingerprints (prompt ids, generated ids): "
                      + "; ".join(f"{name.replace('_', ' ')}: " + ", ".join(f"{n} {k}" for k, n in sorted(c.items()))
                                  for name, c in counts.items())]
        for w in result.work:
            state = "DIFFERENT " if w.differs else "same work"
            lines.append(f"  {state:<10} {w.cell}: model {w.model}, prompt tokens {w.prompt_tokens}, generated "
                         f"{w.gen_tokens}" + (f" ({w.expected})" if w.expected else "")
                         + (f"; {w.detail}" if w.detail else ""))
            lines += [f"    {what}: A {va} | B {vb}" for what, va, vb in w.build]
            lines += [f"    (shown, not judged) {what}: A {va} | B {vb}" for what, va, vb in w.shown]
    for label, side in (("A", result.a), ("B", result.b)):
        if side.chain:
            lines += [f"{label} {line}" if i == 0 else line for i, line in enumerate(side.chain.lines())]
    if result.metrics:
        lines += ["", "records: per cell and headline metric, each lab's geometric mean [95% interval, Student-t on log "
                      f"values]; B/A: {RATIO_METHOD}; a metric agrees when the two intervals overlap"]
        for m in result.metrics:
            ratio = _interval(m.ratio.ratio, m.ratio.low, m.ratio.high)
            note = m.note or m.ratio.note
            lines.append(f"  {m.verdict:<14} {m.cell} | {m.metric}: A {_interval(*m.a)} (n={m.n_a}), "
                         f"B {_interval(*m.b)} (n={m.n_b}), overlap {'-' if m.overlap is None else 'yes' if m.overlap else 'no'}, "
                         f"B/A {ratio}" + (f" ({note})" if note else ""))
    lines += [f"  ({note})" for note in result.record_notes]
    lines += render_decisions(result.decisions)
    badge = result.results_reproduced()
    lines += ([badge] if badge else []) + ["", result.verdict()]
    return "\n".join(lines)


REPRODUCTION_RULE = ("per headline ratio (MoE over each dense model), B/A with a 95% Welch interval on the log "
                     "scale: reproduced when the whole interval lies within [1/(1+t), 1+t], not reproduced when it "
                     "lies wholly outside, inconclusive otherwise (t: the tolerance beside each line)")


def render_decisions(decisions: list[Decision]) -> list[str]:
    if not decisions:
        return []
    lines = ["", f"headline ratios: {REPRODUCTION_RULE}"]
    for d in decisions:
        lines.append(f"  {d.decision:<15} {d.context} | MoE / {d.vs} | {d.metric}: A {_interval(*d.a.interval())} "
                     f"({d.a.runner}, {d.a.n_pairs} pairs, {d.a.machines} machine(s)), B {_interval(*d.b.interval())} "
                     f"({d.b.runner}, {d.b.n_pairs} pairs, {d.b.machines} machine(s)), B/A {_interval(*d.shift)}, "
                     f"tolerance {d.tolerance:.1%} ({d.tolerance_source})" + (f"; {d.note}" if d.note else ""))
    return lines


def write_verification(result: Comparison, report_dir: Path) -> Path:
    """results/verification.json, which REPORT.md's Verification section is rendered from."""
    return write_atomic(Path(report_dir) / "verification.json", json.dumps(result.to_json(), indent=2) + "\n")
