"""`invoke bundle`: one reproducible tarball of a lab's evidence, and reading one back, checked.

Members, all under `moebench-bundle/`: `lock.yaml`; `builds/<build>/manifest.json` and the build's
`attestation.intoto.json` where it has one: the builds of exactly the binaries the records name
(chain.py: found by SHA-256 among the local builds, the manifests fleet runs bring back beside their
records and the folders given with `manifest_dirs`; builds no record used stay out); `data/raw/...`
(the records); `results/...` (tables, figures, REPORT.md); `HARDWARE.md`; `UNBACKED.txt` only when
told to bundle records whose binary no manifest lists (one line per binary); `BADGES.md`, what those
members support of each ACM artifact badge (badges.py, derived from them); and `MANIFEST`, one
`sha256  name` line per other member, BADGES.md included. The binaries themselves stay out: their
SHA-256s are in the manifests and attestations. Without that permission a record whose binary has no
manifest stops the bundle (exit 2), naming the binary and the records.

Reproducible: members sorted by name, regular files only (no directory entries), mtime
SOURCE_DATE_EPOCH (315532800), uid/gid 0 with empty owner names, mode 0644 (0755 when the file is
executable), GNU tar format, compressed with gzip at mtime 0 with no file name; so two bundles of the
same files are byte-identical. Beside it, `<bundle>.sha256` in `sha256sum` format.

`read_bundle` refuses (IntegrityError) a bundle whose sidecar or MANIFEST does not match its bytes,
naming the member and both hashes; `check_chain` also names a BADGES.md that is not what the members
give (edited after, or made by another kit version).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import stat
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Iterable

from moebench import paths
from moebench.evidence import badges, chain
from moebench.evidence.attest import ATTESTATION_NAME, read_attestation
from moebench.pins.build import SOURCE_DATE_EPOCH
from moebench.config import REPO_ROOT, Config
from moebench.errors import IntegrityError, UserError
from moebench.files import write_atomic

PREFIX = "moebench-bundle"
MANIFEST_NAME = "MANIFEST"
SKIPPED_SUFFIXES = (".lock", ".partial", ".tmp")


@dataclass(frozen=True)
class Bundle:
    """A bundle read back: its SHA-256, whether a sidecar vouched for it, and its members (name -> bytes)."""
    path: Path
    sha256: str
    sidecar: str  # what the sidecar said: "matches" or why it was not checked
    members: dict[str, bytes]

    def under(self, folder: str) -> dict[str, bytes]:
        return {name: data for name, data in self.members.items() if name.startswith(folder.rstrip("/") + "/")}

    def extract(self, folder: str, target: Path) -> Path:
        """Write the members under `folder` below `target`; returns target/folder."""
        for name, data in self.under(folder).items():
            path = target / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        return target / folder


# --- collecting --------------------------------------------------------------------------------------

def _files_under(root: Path) -> Iterable[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink() and not p.name.endswith(SKIPPED_SUFFIXES))


def _builds(work_dir: Path) -> dict[str, Path]:
    """Every build directory of the work directory (bare host and images) that holds a manifest."""
    root = work_dir / "build"
    return {manifest.parent.relative_to(root).as_posix(): manifest.parent
            for manifest in sorted(root.glob("*/manifest.json")) + sorted(root.glob("image-*/*/manifest.json"))}


def _checked_attestation(build_dir: Path, manifest_bytes: bytes) -> Path | None:
    """The build's attestation, when it verifies and names exactly the manifest's binaries."""
    path = build_dir / ATTESTATION_NAME
    if not path.is_file():
        return None
    data, _ = read_attestation(path)
    manifest = json.loads(manifest_bytes)
    attested = {s["name"]: s["digest"]["sha256"] for s in data["subject"]}
    built = {name: entry["sha256"] for name, entry in manifest["binaries"].items()}
    if attested != built:
        differ = sorted(n for n in set(attested) | set(built) if attested.get(n) != built.get(n))
        raise IntegrityError(path, f"attests other binaries than {build_dir / 'manifest.json'} records "
                                   f"({', '.join(differ)})",
                             f"attest the build again: invoke attest --device {manifest['device']} --pin {manifest['pin']}")
    return path


UNBACKED_NAME = "UNBACKED.txt"


def _records(raw_dir: Path) -> list[tuple[dict[str, Any], str]]:
    """The records under `raw_dir` with where each sits (`<file>:<line>`), schema-validated like
    `invoke analyze` does; none when it holds no JSONL."""
    from moebench.analysis.frame import load_records

    if not any(Path(raw_dir).rglob("*.jsonl")):
        return []
    return [(item.record, item.origin) for item in load_records(Path(raw_dir))[1]]


def collect(cfg: Config, raw_dir: Path, results_dir: Path, work_dir: Path | None = None,
            hardware: Path | None = None, manifest_dirs: tuple[Path, ...] = (),
            allow_unbacked: bool = False) -> tuple[dict[str, Path | bytes], list[str]]:
    """(member name -> file or bytes, notes) of everything a bundle holds, MANIFEST aside."""
    files: dict[str, Path | bytes] = {"lock.yaml": cfg.root / "lock.yaml"}
    notes = []
    local = [build_dir / "manifest.json" for build_dir in _builds(Path(work_dir) if work_dir else paths.work_dir()).values()]
    brought = [p for folder in (Path(raw_dir), *map(Path, manifest_dirs)) for p in Path(folder).rglob("*.json")]
    back = chain.backing(_records(Path(raw_dir)), chain.read_manifests([*local, *brought]))
    if back.unbacked and not allow_unbacked:
        lines = back.unbacked_lines()
        raise UserError(raw_dir, f"{len(lines)} binaries the records name have no build manifest here: {lines[0]}"
                        + (f" (and {len(lines) - 1} more)" if len(lines) > 1 else ""),
                        "bring the manifests from the machine that ran them (invoke bundle --manifests DIR), or "
                        "pass --allow-unbacked to bundle them marked as unbacked")
    if back.unbacked:
        files[UNBACKED_NAME] = "".join(f"{line}\n" for line in back.unbacked_lines()).encode()
        notes.append(f"{len(back.unbacked)} binaries the records name have no build manifest: listed in {UNBACKED_NAME}")
    for name, manifest in back.manifests.items():
        files[f"builds/{name}/manifest.json"] = manifest
        attestation = _checked_attestation(manifest.parent, manifest.read_bytes())
        if attestation is None:
            notes.append(f"build {name} has no attestation (run: invoke attest for it)")
        else:
            files[f"builds/{name}/{ATTESTATION_NAME}"] = attestation
    for folder, root in (("data/raw", Path(raw_dir)), ("results", Path(results_dir))):
        found = list(_files_under(root))
        if not found:
            notes.append(f"{root} holds no files")
        files.update({f"{folder}/{p.relative_to(root).as_posix()}": p for p in found})
    hardware = Path(hardware) if hardware else REPO_ROOT / "HARDWARE.md"
    if hardware.is_file():
        files["HARDWARE.md"] = hardware
    else:
        notes.append(f"{hardware} not found")
    assessed = badges.assess({name: _bytes(member) for name, member in files.items()})
    files[badges.BADGES_NAME] = badges.render(assessed).encode()
    notes.append(f"{badges.BADGES_NAME}: {badges.summary(assessed)}")
    return files, notes


def _bytes(member: Path | bytes) -> bytes:
    return member if isinstance(member, bytes) else member.read_bytes()


# --- writing -----------------------------------------------------------------------------------------

def manifest_text(members: dict[str, bytes]) -> bytes:
    return "".join(f"{hashlib.sha256(data).hexdigest()}  {name}\n" for name, data in sorted(members.items())).encode()


def _tar_info(name: str, size: int, executable: bool) -> tarfile.TarInfo:
    info = tarfile.TarInfo(f"{PREFIX}/{name}")
    info.size, info.mtime, info.type = size, int(SOURCE_DATE_EPOCH), tarfile.REGTYPE
    info.mode = 0o755 if executable else 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_bundle(files: dict[str, Path | bytes], output: Path) -> tuple[Path, str]:
    """Write the tarball and its `.sha256` sidecar; (path, sha256)."""
    output = Path(output)
    contents = {name: _bytes(member) for name, member in files.items()}
    executable = {name for name, path in files.items()
                  if not isinstance(path, bytes) and path.stat().st_mode & stat.S_IXUSR}
    contents[MANIFEST_NAME] = manifest_text(contents)
    raw = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for name in sorted(contents):
                data = contents[name]
                tar.addfile(_tar_info(name, len(data), name in executable), io.BytesIO(data))
    data = raw.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    write_atomic(output, data)
    write_atomic(sidecar_path(output), f"{digest}  {output.name}\n")
    return output, digest


def sidecar_path(bundle: Path) -> Path:
    return bundle.with_name(bundle.name + ".sha256")


def make_bundle(cfg: Config, output: Path, raw_dir: Path, results_dir: Path, work_dir: Path | None = None,
                hardware: Path | None = None, manifest_dirs: tuple[Path, ...] = (),
                allow_unbacked: bool = False) -> tuple[Path, str, int, list[str]]:
    """`invoke bundle`: (path, sha256, members, notes)."""
    files, notes = collect(cfg, raw_dir, results_dir, work_dir, hardware, manifest_dirs, allow_unbacked)
    path, digest = write_bundle(files, output)
    return path, digest, len(files) + 1, notes


# --- reading -----------------------------------------------------------------------------------------

def _member_name(bundle: Path, member: tarfile.TarInfo) -> str:
    pure = PurePosixPath(member.name)
    if not member.isfile() or pure.is_absolute() or ".." in pure.parts or pure.parts[:1] != (PREFIX,) \
            or len(pure.parts) < 2:
        raise IntegrityError(f"{bundle}: {member.name}", "not a regular file under moebench-bundle/ (a bundle holds "
                                                         "nothing else)", "ask its lab for the bundle invoke bundle wrote")
    return PurePosixPath(*pure.parts[1:]).as_posix()


def _check_sidecar(path: Path, digest: str) -> str:
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        return f"no {sidecar.name} beside it: only MANIFEST was checked"
    words = sidecar.read_text(encoding="utf-8", errors="replace").split()
    recorded = words[0] if words else ""
    if recorded != digest:
        raise IntegrityError(path, f"sha256 is {digest}, {sidecar.name} records {recorded or 'nothing'}",
                             "the bundle changed after it was written (or the sidecar is another bundle's); "
                             "ask its lab for both files again")
    return "matches"


def read_bundle(path: Path) -> Bundle:
    """Every member of a bundle, after its sidecar and its MANIFEST are checked against its bytes."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(path, f"cannot read the bundle ({exc})", "give the .tar.gz that invoke bundle wrote") from None
    digest = hashlib.sha256(data).hexdigest()
    sidecar = _check_sidecar(path, digest)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            members = {}
            for member in tar.getmembers():
                name = _member_name(path, member)
                handle = tar.extractfile(member)
                assert handle is not None  # a regular file, checked above
                members[name] = handle.read()
    except (OSError, tarfile.TarError, EOFError, gzip.BadGzipFile) as exc:
        raise UserError(path, f"cannot read the bundle ({exc})", "give the .tar.gz that invoke bundle wrote") from None
    _check_manifest(path, members)
    return Bundle(path, digest, sidecar, members)


def _check_manifest(path: Path, members: dict[str, bytes]) -> None:
    if MANIFEST_NAME not in members:
        raise IntegrityError(path, "has no MANIFEST", "ask its lab for the bundle invoke bundle wrote")
    listed: dict[str, str] = {}
    for line in members[MANIFEST_NAME].decode("utf-8", errors="replace").splitlines():
        digest, _, name = line.partition("  ")
        listed[name] = digest
    for name, body in sorted(members.items()):
        if name == MANIFEST_NAME:
            continue
        actual = hashlib.sha256(body).hexdigest()
        if name not in listed:
            raise IntegrityError(f"{path}: {name}", f"member is not listed in MANIFEST (sha256 {actual})",
                                 "the bundle was altered after it was written; ask its lab for the original")
        if listed[name] != actual:
            raise IntegrityError(f"{path}: {name}", f"sha256 is {actual}, MANIFEST records {listed[name]}",
                                 "the member was altered after the bundle was written; ask its lab for the original")
    missing = sorted(set(listed) - set(members))
    if missing:
        raise IntegrityError(f"{path}: {missing[0]}", "listed in MANIFEST but not in the bundle",
                             "the bundle was altered after it was written; ask its lab for the original")


def bundle_records(bundle: Bundle) -> list[tuple[dict[str, Any], str]]:
    """The bundle's records with where each sits (`data/raw/<file>:<line>`), schema-validated like
    `invoke analyze` does (an error names the member)."""
    if not bundle.under("data/raw"):
        return []
    with tempfile.TemporaryDirectory(prefix="moebench-bundle-") as tmp:
        try:
            loaded = _records(bundle.extract("data/raw", Path(tmp)))
        except UserError as exc:
            raise UserError(f"{bundle.path}: {exc.where.replace(tmp + '/', '')}", exc.problem, exc.fix) from None
    return [(record, f"data/raw/{origin}") for record, origin in loaded]


def load_bundle_records(bundle: Bundle) -> list[dict[str, Any]]:
    return [record for record, _ in bundle_records(bundle)]


def bundle_manifests(bundle: Bundle) -> dict[str, dict[str, Any]]:
    """builds/<folder>/manifest.json of the bundle, folder -> manifest."""
    return {name.split("/", 1)[1].removesuffix("/manifest.json"): json.loads(data)
            for name, data in sorted(bundle.under("builds").items()) if name.endswith("/manifest.json")}


@dataclass(frozen=True)
class ChainCheck:
    records: int
    builds: int
    breaks: list[str]
    unbacked: list[str]  # UNBACKED.txt's lines: records bundled without a manifest, on purpose
    stale_badges: str | None = None  # why BADGES.md is not what the members give; None when it is

    def lines(self) -> list[str]:
        state = (f"ok, every record's binary is in a bundled manifest of its device and pin, with its tree hash "
                 f"and commit" if not self.breaks else f"{len(self.breaks)} breaks")
        out = [f"chain: {state} ({self.records} records, {self.builds} builds)"]
        out += [f"  break: {line}" for line in self.breaks]
        out += [f"  unbacked (bundled without a manifest): {line}" for line in self.unbacked]
        out += [f"badges: {self.stale_badges}"] if self.stale_badges else []
        return out


def check_chain(bundle: Bundle) -> ChainCheck:
    """Inside one bundle: every record's binary to a bundled manifest, and that manifest's tree hash
    and commit to the record's (chain.breaks); records listed in UNBACKED.txt break it too, named so; and
    whether BADGES.md is what the members give."""
    records = bundle_records(bundle)
    manifests = bundle_manifests(bundle)
    unbacked = bundle.members.get(UNBACKED_NAME, b"").decode().splitlines()
    return ChainCheck(len(records), len(manifests), chain.breaks(records, manifests), unbacked,
                      badges.stale(bundle.members))
