"""invoke tasks: the kit's front door. Each task parses its flags and calls one function of the
`moebench` package; the logic lives there. `invoke --list` shows them, `invoke --help TASK` explains one.

A user error (bad config, hash mismatch, missing build) prints one line and exits 2.
"""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

from invoke import Collection, Exit, task

from moebench.errors import EXIT_USER_ERROR, OutputWriteError, UserError, describe_os_error, is_write_error

ROOT = Path(__file__).resolve().parent
# analyze, report and fleet.reproduce take the same flag with the same meaning
ALLOW_MIXED_HELP = "aggregate records of different binaries/commits/model hashes into one cell (flagged)"


def user_errors_exit_2(fn):
    """Turn a UserError, or a write the disk refused (full, read-only, I/O error), into one line and
    exit code 2; other exceptions are bugs."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            raise Exit(exc.one_line(), code=EXIT_USER_ERROR) from None
        except OSError as exc:
            if not is_write_error(exc):
                raise
            error = OutputWriteError(exc.filename or fn.__name__, f"could not write ({describe_os_error(exc)})",
                                     "free space or make it writable, then run the same command again")
            raise Exit(error.one_line(), code=EXIT_USER_ERROR) from None

    return wrapper


def _config():
    from moebench.config import load_config

    return load_config()


def _csv(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else ()


def _seed(value: str | None) -> int | None:
    from moebench.errors import UserError

    if value is None:
        return None
    if not str(value).isdigit():
        raise UserError("--order-seed", f"{value!r} is not a seed", "give a non-negative integer")
    return int(value)


@task(help={
    "device": "device profile from configs/devices.yaml (cpu, cuda, jetson, m2, *_patched)",
    "pin": "llama.cpp pin from configs/lock.yaml (default: the device's default_pin)",
    "jobs": "parallel compile jobs (default: all cores)",
})
@user_errors_exit_2
def build(c, device="cpu", pin=None, jobs=None):
    """Fetch the pinned llama.cpp (hash-verified) and build it deterministically; writes a build manifest
    and records in lock.yaml the source tree hash (and archive SHA-256) it still has null."""
    from moebench.verify import record as pins
    from moebench.pins.build import build as build_llama

    cfg = _config()
    pin = pin or cfg.device(device).default_pin
    manifest = build_llama(cfg, device, pin, jobs=int(jobs) if jobs else None)
    for name, binary in manifest["binaries"].items():
        print(f"{binary['sha256']}  {name}")
    for line in pins.record_source_pins(cfg, manifest):
        print(line)


@task(help={
    "device": "device whose build to check (default cpu)",
    "pin": "llama.cpp pin (default: the device's default_pin)",
    "models": "also hash model files: replica-tiny, replica-full, real or none (default: every one present)",
    "verbose": "print the full table of checks (file, status, both hashes) even when every check passes",
    "bundle": "check this bundle's evidence chain (record -> binary -> build manifest -> tree hash and commit) "
              "and that its BADGES.md is what its members give",
})
@user_errors_exit_2
def verify(c, device="cpu", pin=None, models="present", verbose=False, bundle=None):
    """Re-hash sources, binaries and models against lock.yaml and the build manifest; one line per stage,
    the full table with --verbose or on any mismatch (then a non-zero exit). With --bundle, check that
    bundle's own evidence chain instead: every record's binary to a bundled manifest of its device and pin,
    and its BADGES.md derived again from its members."""
    if bundle:
        from moebench.evidence.bundle import check_chain, read_bundle

        checked = check_chain(read_bundle(Path(bundle)))
        print("\n".join(checked.lines()))
        if checked.breaks or checked.stale_badges:  # an unbacked record is a break too
            raise Exit(code=1)
        return
    cfg = _config()
    from moebench.verify.hashes import verify_and_report

    if not verify_and_report(cfg, device, pin or cfg.device(device).default_pin, models, verbose=verbose):
        raise Exit(code=1)


@task(positional=["what"], help={
    "what": "binaries (default) | models | replicas",
    "device": "device whose build manifest to record (binaries)",
    "pin": "llama.cpp pin (default: the device's default_pin)",
    "scale": "replica scale to record (replicas): tiny or full",
})
@user_errors_exit_2
def lock(c, what=None, device="cpu", pin=None, scale="tiny"):
    """Record verified hashes into configs/lock.yaml: built binaries, hub model metadata or replica hashes."""
    from moebench.verify.record import lock_from_measurements

    cfg = _config()
    for line in lock_from_measurements(cfg, what or "binaries", device, pin or cfg.device(device).default_pin, scale):
        print(line)


@task(help={
    "models": "comma-separated model ids (default: all four)",
    "token": "Hugging Face token (default: the standard HF config / HF_TOKEN)",
})
@user_errors_exit_2
def download(c, models=None, token=None):
    """Download the real Q4_K_M GGUFs at their pinned revisions and verify their SHA-256."""
    from moebench.models.download import download_models

    for result in download_models(_config(), _csv(models) or None, token=token):
        print(f"{result.sha256}  {result.path}")


@task(help={
    "scale": "tiny (smoke-sized, same architecture) or full (real tensor shapes)",
    "models": "comma-separated model ids (default: all four)",
    "pin": "llama.cpp pin whose gguf-py and llama-quantize write the replicas (default offline)",
    "device": "device whose build of that pin supplies llama-quantize (default cpu)",
    "jobs": "replicas written at once (default 1; the files are the same at any count)",
})
@user_errors_exit_2
def replica(c, scale="tiny", models=None, pin="offline", device="cpu", jobs=1):
    """Write architecture-faithful synthetic-weight replicas of the four models and quantize them to Q4_K_M."""
    from moebench.models.replica import make_replicas

    for result in make_replicas(_config(), scale, pin=pin, models=_csv(models) or None, device=device,
                                jobs=int(jobs)):
        print(f"{result.sha256}  {result.path}")


@task(help={
    "models": "replica (default) or real",
    "scale": "replica scale: tiny (default) or full",
    "pin": "llama.cpp pin whose llama-server tokenizes (default offline)",
    "device": "device whose build of that pin runs llama-server (default cpu)",
    "output": "write the table as JSON here (e.g. benchmarks/results/prompt_tokens.json)",
})
@user_errors_exit_2
def tokens(c, models="replica", scale="tiny", pin="offline", device="cpu", output=None):
    """Count every prompt's tokens per model through the pinned llama-server and check each tokenizer's
    test vectors; exits 1 if a prompt does not fit the context or a vector mismatches."""
    from moebench.run.prompt_tokens import count_prompt_tokens, problems, render_table

    table = count_prompt_tokens(_config(), source=models, scale=scale, pin=pin, device=device,
                                output=Path(output) if output else None)
    print(render_table(table))
    for model_id, entry in table["models"].items():
        vectors = entry.get("test_vectors")
        checked = (f"{vectors['inputs'] - vectors['mismatches']}/{vectors['inputs']} test vectors exact"
                   if vectors else "no test vectors")
        print(f"{model_id}: tokenizer {entry['tokenizer']}; {checked}")
    failed = problems(table)
    for line in failed:
        print(line, file=sys.stderr)
    if failed:
        raise Exit(code=1)


@task(help={
    "device": "device profile (cpu, cuda, jetson, m2, *_patched)",
    "experiment": "experiment from configs/experiments.yaml",
    "smoke": "run the smoke reduction of the experiment",
    "only_models": "comma-separated model ids",
    "threads_override": "run every cell with this many threads",
    "resume": "skip cells already recorded in --output",
    "output": "JSONL file (default data/raw/run_<UTC>_<device>_<experiment>.jsonl)",
    "models": "replica (synthetic weights) or real (downloaded)",
    "scale": "replica scale: tiny or full",
    "pin": "llama.cpp pin (default: the device's default_pin)",
    "allow_unverified": "run even if `invoke verify` fails (recorded in every record)",
    "in_image": "run inside the device's pinned toolchain image (lock.yaml images), through the container engine",
    "order": "interleaved (default: repetition-major, models in a seeded random order each repetition) or fixed "
             "(model-major, the study's own schedule)",
    "order_seed": "seed of the interleaved order (default: a fresh one, recorded in every record; --resume keeps it)",
})
@user_errors_exit_2
def run(c, device="cpu", experiment="experiment_1_efficiency", smoke=False, only_models=None,
        threads_override=None, resume=False, output=None, models="replica", scale="tiny", pin=None,
        allow_unverified=False, in_image=False, order="interleaved", order_seed=None):
    """Run an experiment matrix through the pinned llama.cpp; one validated JSONL record per cell."""
    from moebench.run.experiment import default_output_path, run_experiment

    cfg = _config()
    out = Path(output) if output else default_output_path(device, experiment)
    if in_image:
        args = _flags(device=device, experiment=experiment, smoke=smoke, only_models=only_models,
                      threads_override=threads_override, resume=resume, output=f"/moebench/data/raw/{out.name}",
                      models=models, scale=scale, pin=pin, allow_unverified=allow_unverified, order=order,
                      order_seed=order_seed)
        _in_image(cfg, device, pin, ["run", *args], out.resolve().parent, ROOT / "results")
        return
    summary = run_experiment(cfg, device, experiment, out, smoke=smoke, only_models=_csv(only_models) or None,
                             threads_override=int(threads_override) if threads_override else None,
                             resume=resume, allow_unverified=allow_unverified, models_source=models,
                             replica_scale=scale, pin=pin or cfg.device(device).default_pin, order=order,
                             order_seed=_seed(order_seed))
    if summary.interrupted:
        raise Exit(code=130)


@task(help={
    "raw_dir": "directory of run_*.jsonl files",
    "output_dir": "where benchmark_results.csv and summary_tables/ go",
    "allow_mixed": ALLOW_MIXED_HELP,
})
@user_errors_exit_2
def analyze(c, raw_dir="data/raw", output_dir="results", allow_mixed=False):
    """JSONL records -> results/benchmark_results.csv and results/summary_tables/*.csv."""
    from moebench.analysis.tables import analyze as analyze_records

    result = analyze_records(_config(), Path(raw_dir), Path(output_dir), allow_mixed=allow_mixed)
    print(result.describe())


@task(help={
    "raw_dir": "directory of run_*.jsonl files (made here or copied from another host)",
    "output_dir": "where the tables, figures and REPORT.md go",
    "allow_mixed": ALLOW_MIXED_HELP,
})
@user_errors_exit_2
def report(c, raw_dir="data/raw", output_dir="results", allow_mixed=False):
    """JSONL records -> tables, figures and REPORT.md: reproduce's last stages, for records already made."""
    from moebench.reproduce import report_records

    print(report_records(_config(), Path(raw_dir), Path(output_dir), allow_mixed=allow_mixed).render())


@task(help={"output_dir": "results directory holding summary_tables/"})
@user_errors_exit_2
def figures(c, output_dir="results"):
    """Render PNG figures (results/figures) and publication PDFs (results/figures_pub)."""
    from moebench.analysis.figures import render_figures

    out = Path(output_dir)
    for path in render_figures(out / "summary_tables", out / "figures", out / "figures_pub"):
        print(path)


@task(help={
    "device": "device profile (cpu, cuda, jetson, m2)",
    "smoke": "smoke reduction of every experiment",
    "pin": "llama.cpp pin (default: the device's default_pin)",
    "models": "replica (default on cpu) or real",
    "scale": "replica scale: tiny or full",
    "raw_dir": "where run JSONL files go",
    "output_dir": "where results go",
    "in_image": "run inside the device's pinned toolchain image (lock.yaml images), through the container engine",
})
@user_errors_exit_2
def reproduce(c, device="cpu", smoke=False, pin=None, models=None, scale="tiny", raw_dir="data/raw",
              output_dir="results", in_image=False):
    """build -> verify -> models -> run the device's experiments -> analyze -> figures -> report; resumable."""
    from moebench.reproduce import reproduce as reproduce_all

    cfg = _config()
    if in_image:
        args = _flags(device=device, smoke=smoke, pin=pin, models=models, scale=scale)
        _in_image(cfg, device, pin, ["reproduce", *args], Path(raw_dir).resolve(), Path(output_dir).resolve())
        return
    reproduce_all(cfg, device, smoke=smoke, pin=pin or cfg.device(device).default_pin,
                  models_source=models, replica_scale=scale, raw_dir=Path(raw_dir), output_dir=Path(output_dir))


def _flags(**values) -> list[str]:
    """invoke flags for the same task inside the image: True -> --name, None/False -> left out."""
    flags = []
    for name, value in values.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif value not in (None, False):
            flags.append(f"{flag}={value}")
    return flags


def _in_image(cfg, device, pin, task_args, raw_dir, output_dir):
    from moebench.images.launch import run_in_image

    code = run_in_image(cfg, device, pin or cfg.device(device).default_pin, task_args, raw_dir, output_dir)
    if code:
        raise Exit(code=code)


@task(help={"image": "image from lock.yaml images: cpu, cuda, jetson, standin-base, toolchain-standin",
            "no_load": "build the archive only (rootfs images); do not load it into the engine",
            "resolve": "dockerfile images: install the base's candidate versions where lock.yaml has none"})
@user_errors_exit_2
def image_build(c, image="cpu", no_load=False, resolve=False):
    """Build a toolchain image from its lock.yaml entry and load it as moebench/<image>:local."""
    from moebench.images.builder import build_image

    result = build_image(_config(), image, load=not no_load, resolve=resolve)
    timings = ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in result.seconds.items())
    print(f"image {image}: {result.id}\n  layers: {' '.join(result.layers)}\n  {timings}")
    if result.archive:
        print(f"  archive: {result.archive} (sha256 {result.archive_sha256})")


@task(help={"image": "image whose last build to record"})
@user_errors_exit_2
def image_lock(c, image="cpu"):
    """Record the last successful build of an image (ID, layers, base digest, packages, recipe hash) in lock.yaml."""
    from moebench.images.builder import loaded_result
    from moebench.pins.lockfile import record_image

    result = loaded_result(image)
    path = record_image(image, result.lock_entry())
    print(f"recorded images.{image}.id = {result.id} ({len(result.packages)} packages) in {path}")


@task(help={"image": "image to compare with lock.yaml", "rebuild": "build it again from its recipe first"})
@user_errors_exit_2
def image_verify(c, image="cpu", rebuild=False):
    """Compare the local image (ID and every layer) with lock.yaml; with --rebuild, rebuild it first."""
    from moebench.images.identity import verify_image

    print("\n".join(verify_image(_config(), image, rebuild=rebuild)))


FLEET_HELP = {
    "hosts": "comma-separated host names of the fleet file (default: every host)",
    "fleet_file": "the fleet's hosts (default configs/fleet.yaml)",
}


def _fleet(cfg, fleet_file):
    from moebench.config import load_fleet

    return load_fleet(Path(fleet_file) if fleet_file else None, cfg)


@task(help={**FLEET_HELP,
            "smoke": "smoke reduction of every experiment",
            "pin": "llama.cpp pin (default: each host's device's default_pin)",
            "models": "replica (default on cpu) or real",
            "scale": "replica scale: tiny or full",
            "raw_dir": "each host's records and build manifest come home to <raw-dir>/<host>/",
            "output_dir": "where the combined analysis and report go",
            "allow_mixed": ALLOW_MIXED_HELP})
@user_errors_exit_2
def fleet_reproduce(c, hosts=None, fleet_file=None, smoke=False, pin=None, models=None, scale="tiny",
                    raw_dir="data/raw", output_dir="results", allow_mixed=False):
    """On every fleet host at once over SSH: sync the kit at this commit, bootstrap, reproduce; fetch the
    records into <raw-dir>/<host>/ and analyze them together. A failing host is reported (exit 1), the others finish."""
    from moebench.fleet.reproduce import reproduce_fleet

    cfg = _config()
    run = reproduce_fleet(cfg, _fleet(cfg, fleet_file), _csv(hosts), smoke=smoke, pin=pin, models=models,
                          scale=scale, raw_dir=Path(raw_dir), output_dir=Path(output_dir), allow_mixed=allow_mixed,
                          fleet_file=fleet_file)
    if run.failed:
        raise Exit(f"{len(run.failed)} of {len(run.outcomes)} hosts failed: "
                   f"{', '.join(o.name for o in run.failed)}", code=1)


@task(help=FLEET_HELP)
@user_errors_exit_2
def fleet_status(c, hosts=None, fleet_file=None):
    """Each fleet host: reachable?, the kit's commit there, its venv, its last reproduction (exit 1 if one is unreachable)."""
    from moebench.fleet.inspect import fleet_status as status

    cfg = _config()
    rows = status(_fleet(cfg, fleet_file), _csv(hosts), fleet_file=fleet_file)
    if any(row[2] != "yes" for row in rows):
        raise Exit(code=1)


@task(help={**FLEET_HELP, "pin": "llama.cpp pin (default: each host's device's default_pin)"})
@user_errors_exit_2
def fleet_verify(c, hosts=None, fleet_file=None, pin=None):
    """Each host's binaries, re-hashed there, against lock.yaml's pin for its toolchain: one table, host x binary."""
    from moebench.fleet.inspect import fleet_verify as verify_hosts

    cfg = _config()
    if not verify_hosts(cfg, _fleet(cfg, fleet_file), _csv(hosts), pin=pin, fleet_file=fleet_file):
        raise Exit(code=1)


@task
@user_errors_exit_2
def nix_pins(c):
    """Write nix/pins.json (the flake's pins and cmake flags) from configs/lock.yaml and configs/devices.yaml."""
    from moebench.nix.pins import write_pins

    print(f"wrote {write_pins(_config())}")


@task
@user_errors_exit_2
def nix_check(c):
    """Offline checks of the flake: it parses, nix/pins.json matches configs/, recipe.nix gives the kit's flags."""
    from moebench.nix.pins import check

    for line in check(_config()):
        print(line, flush=True)


@task(help={
    "device": "device profile from configs/devices.yaml (m2 on macOS, cpu or cuda on Linux)",
    "pin": "llama.cpp pin from configs/lock.yaml (default: the device's default_pin)",
})
@user_errors_exit_2
def nix_build(c, device="cpu", pin=None):
    """nix build .#llama-cpp-<device>, then put its binaries and a build manifest where `invoke build` would,
    for `invoke verify` and `invoke run`."""
    from moebench.pins.build import build_dir_for
    from moebench.nix.build import nix_build as build_with_nix

    cfg = _config()
    manifest = build_with_nix(cfg, device, pin or cfg.device(device).default_pin)
    for name, binary in manifest["binaries"].items():
        print(f"{binary['sha256']}  {name}")
    print(f"{manifest['builder']['store_path']} ({manifest['toolchain_id']}) -> "
          f"{build_dir_for(manifest['device'], manifest['pin'])}/manifest.json")


@task(help={
    "device": "device whose build to attest",
    "pin": "llama.cpp pin (default: the device's default_pin)",
    "key": "Ed25519 private key, PKCS#8 PEM (default MOEBENCH_HOME/keys/attest-ed25519.pem, created on first use)",
    "output": "where the signed attestation goes (default: attestation.intoto.json in the build directory)",
    "sign_with": "ed25519 (the lab's local key) or sigstore (keyless: needs the network, refused with the command)",
})
@user_errors_exit_2
def attest(c, device="cpu", pin=None, key=None, output=None, sign_with="ed25519"):
    """Sign an in-toto Statement (SLSA provenance v1) of a build: its binaries' SHA-256s, the source archive
    and tree, the toolchain, the recipe fingerprint and the host; binaries are re-hashed first."""
    from moebench.evidence.attest import attest as attest_build

    cfg = _config()
    path, statement, keyid = attest_build(cfg, device, pin or cfg.device(device).default_pin,
                                          Path(key) if key else None, Path(output) if output else None,
                                          sign_with=sign_with)
    for subject in statement["subject"]:
        print(f"{subject['digest']['sha256']}  {subject['name']}")
    print(f"signed by {keyid}: {path}")


@task(help={
    "output": "the tarball to write (a .sha256 sidecar goes beside it)",
    "raw_dir": "the records to include (manifests fleet runs brought back beside them are found there too)",
    "results_dir": "the tables, figures and REPORT.md to include",
    "manifests": "comma-separated folders of build manifests brought from the machines that ran the records",
    "allow_unbacked": "bundle records whose binary no manifest lists, marked in UNBACKED.txt (compare and verify "
                      "then name them), instead of refusing",
})
@user_errors_exit_2
def bundle(c, output="moebench-bundle.tar.gz", raw_dir="data/raw", results_dir="results", manifests=None,
           allow_unbacked=False):
    """One reproducible tarball of this lab's evidence: lock.yaml, the build manifests and attestations of the
    binaries its records name, data/raw, results/, HARDWARE.md, BADGES.md (what they support of each ACM badge)
    and a MANIFEST of SHA-256s; the same inputs give the same bytes."""
    from moebench.evidence.bundle import make_bundle

    path, digest, members, notes = make_bundle(_config(), Path(output), Path(raw_dir), Path(results_dir),
                                               manifest_dirs=tuple(Path(p) for p in _csv(manifests)),
                                               allow_unbacked=allow_unbacked)
    for note in notes:
        print(f"note: {note}")
    print(f"{digest}  {path} ({members} members)")


@task(positional=["a", "b"], help={
    "a": "this lab's side: a bundle, a build manifest (or its build directory) or an attestation",
    "b": "the other side, of any of those kinds",
    "report_dir": "when a bundle was compared, write verification.json here and add the Verification section "
                  "to its REPORT.md (default results)",
    "json_output": "also write the whole comparison as JSON to this file",
    "trusted_keys": "comma-separated public key files (attest-ed25519.pub.pem); every attestation must be signed "
                    "by one of them (default: any key, whose id is printed)",
    "tolerance": "relative shift of a headline MoE/dense ratio that still counts as reproduced, e.g. 0.05 "
                 "(default: MLPerf's 5%, widened to the between-machine spread a bundle measured on 3 or more "
                 "machines)",
})
@user_errors_exit_2
def compare(c, a, b, report_dir="results", json_output=None, trusted_keys=None, tolerance=None):
    """IDENTICAL or DIFFERENT for each artifact (both hashes, diffoscope where both files are here) and, for two
    bundles, each headline metric's intervals and B/A ratio, and per headline MoE/dense ratio reproduced, not
    reproduced or inconclusive against a stated tolerance; exit 0 all match, 1 something differs or a ratio is
    not reproduced, 2 bad input."""
    import json

    from moebench.evidence.compare import compare as compare_sides, render, write_verification
    from moebench.analysis.report import add_verification_section

    result = compare_sides(Path(a), Path(b), tuple(Path(p) for p in _csv(trusted_keys)), _tolerance(tolerance))
    print(render(result))
    if json_output:
        Path(json_output).write_text(json.dumps(result.to_json(), indent=2) + "\n", encoding="utf-8")
    if result.a.what.startswith("bundle") or result.b.what.startswith("bundle"):
        write_verification(result, Path(report_dir))
        report = add_verification_section(Path(report_dir))
        if report is not None:
            print(f"Verification section written to {report}")
    if result.exit_code:
        raise Exit(code=result.exit_code)


def _tolerance(value: str | None) -> float | None:
    """--tolerance as a positive fraction; a bad value is a user error naming the flag."""
    if value is None:
        return None
    try:
        tolerance = float(value)
    except ValueError:
        tolerance = -1.0
    if not 0 < tolerance < 1:
        raise UserError("--tolerance", f"{value!r} is not a fraction between 0 and 1",
                        "give the allowed relative shift of a ratio, e.g. --tolerance 0.05 for 5%")
    return tolerance


@task(help={"fast": "skip the slow tests (builds, model runs)", "k": "pytest -k expression"})
def test(c, fast=False, k=None):
    """Run the test suite (the slow tests build llama.cpp and run replica models)."""
    # two workers: the image builds beside the rest (tests/conftest.py, IMAGE_BUILD_MODULES)
    args = [sys.executable, "-m", "pytest", "-ra", "--durations=15", "-n", "2", "--dist", "loadgroup"]
    if fast:
        args += ["-m", "not slow"]
    if k:
        args += ["-k", k]
    code = subprocess.call(args, cwd=ROOT)
    if code:
        raise Exit(code=code)


models_ns = Collection("models", download, replica, tokens)
ns = Collection(build, verify, lock, run, analyze, figures, report, reproduce, test)
ns.add_task(attest)
ns.add_task(bundle)
ns.add_task(compare)
ns.add_collection(models_ns)
ns.add_collection(Collection("image", build=image_build, lock=image_lock, verify=image_verify))
ns.add_collection(Collection("fleet", reproduce=fleet_reproduce, status=fleet_status, verify=fleet_verify))
ns.add_collection(Collection("nix", pins=nix_pins, check=nix_check, build=nix_build))
