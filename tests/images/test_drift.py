"""Drift of the mirror told apart from a build that is not the lock's, on Debian's real Packages
indexes served from a local mirror; mmdebstrap's own reason in the kit's error, on its recorded output."""

from __future__ import annotations

import gzip
import lzma
from pathlib import Path

import pytest

from moebench.config import load_config
from moebench.errors import IntegrityError, UserError
from moebench.images import drift, rootfs
from moebench.images.builder import _check_packages

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
MAIN = (FIXTURES / "apt" / "bookworm_main_binary-amd64_Packages").read_text()
SECURITY = (FIXTURES / "apt" / "bookworm-security_main_binary-amd64_Packages").read_text()
FOUR = {"ca-certificates", "git", "libssl3", "tzdata"}


def test_source_lines_with_and_without_options():
    line = drift.SourceLine.parse("deb [check-valid-until=no arch=amd64] http://snapshot.debian.org/archive/debian/"
                                  "20261201T000000Z/ bookworm main contrib")
    assert (line.uri, line.suite, line.components) == (
        "http://snapshot.debian.org/archive/debian/20261201T000000Z", "bookworm", ("main", "contrib"))
    assert line.index_urls("arm64")[1] == ("http://snapshot.debian.org/archive/debian/20261201T000000Z/dists/"
                                           "bookworm/contrib/binary-arm64/Packages")
    with pytest.raises(ValueError, match="not an apt source line"):
        drift.SourceLine.parse("deb http://deb.debian.org/debian")


def test_versions_read_from_the_real_indexes():
    assert drift.parse_index(MAIN, FOUR) == {"ca-certificates": {"20230311+deb12u1"}, "git": {"1:2.39.5-0+deb12u3"},
                                             "libssl3": {"3.0.20-1~deb12u2"}, "tzdata": {"2026b-0+deb12u1"}}
    assert drift.parse_index(SECURITY, {"tzdata", "bash"}) == {"tzdata": {"2026f-0+deb12u1"}}


@pytest.fixture
def local_mirror(http_dir):
    """The two recorded indexes served as two suites of one mirror, one xz- and one gzip-compressed
    (the compressions apt itself reads first); `security_text` replaces the security suite's index."""
    root, url = http_dir

    def publish(security_text: str = SECURITY) -> tuple[str, ...]:
        main = root / "dists" / "bookworm" / "main" / "binary-amd64"
        security = root / "dists" / "bookworm-security" / "main" / "binary-amd64"
        main.mkdir(parents=True, exist_ok=True)
        security.mkdir(parents=True, exist_ok=True)
        (main / "Packages.xz").write_bytes(lzma.compress(MAIN.encode()))
        (security / "Packages.gz").write_bytes(gzip.compress(security_text.encode()))
        return (f"deb {url}/ bookworm main", f"deb [trusted=yes] {url} bookworm-security main")

    return publish


def test_served_versions_join_every_suite_of_the_mirror(local_mirror):
    served = drift.served_versions(local_mirror(), "amd64", [*FOUR, "moebench-absent"])
    assert served["tzdata"] == {"2026b-0+deb12u1", "2026f-0+deb12u1"}
    assert served["moebench-absent"] == set()


def test_a_missing_index_names_every_address_tried(http_dir):
    with pytest.raises(FileNotFoundError, match=r"Packages\.xz, .*Packages\.gz"):
        drift.served_versions([f"deb {http_dir[1]} bookworm main"], "amd64", ["tzdata"])


def _cpu_with_mirrors(mirrors: tuple[str, ...]):
    spec = load_config().lock.images["cpu"]
    return spec.model_copy(update={"rootfs": spec.rootfs.model_copy(update={"mirrors": mirrors})})


def test_a_replaced_pinned_version_is_drift_with_each_package_and_the_repin_command(local_mirror):
    # Debian publishes tzdata 2026g: the security suite's stanza now carries it, 2026f is gone
    mirrors = local_mirror(SECURITY.replace("Version: 2026f-0+deb12u1", "Version: 2026g-0+deb12u1"))
    spec = _cpu_with_mirrors(mirrors)
    built = {**spec.packages, "tzdata": "2026g-0+deb12u1"}
    comparison = drift.compare_with_lock("cpu", spec, "sha256:" + "1" * 64, spec.layers, built)
    assert comparison.verdict == "drift"
    assert [c.line() for c in comparison.changes] == [
        "tzdata: 2026f-0+deb12u1 -> 2026g-0+deb12u1 (the mirror no longer serves it)"]
    text = "\n".join(comparison.lines())
    assert text.startswith("DRIFT: the mirror no longer serves 1 pinned package version(s) of images.cpu")
    assert f"the build gives sha256:{'1' * 64}, the lock pins {spec.id}" in text
    assert "invoke image.build --image cpu && invoke image.lock --image cpu" in text
    assert "rootfs.fetch_mirrors" in text


def test_a_served_pinned_version_that_was_not_installed_is_different(local_mirror):
    spec = _cpu_with_mirrors(local_mirror())
    built = {**spec.packages, "ca-certificates": "20230311+deb12u1"}  # main's, where the lock pins security's
    comparison = drift.compare_with_lock("cpu", spec, "sha256:" + "2" * 64, spec.layers, built)
    assert comparison.verdict == "different"
    assert comparison.lines()[1].strip() == ("ca-certificates: 20250419~deb12u2 -> 20230311+deb12u1 "
                                             "(the mirror still serves it)")


def test_gone_and_kept_versions_together_are_different_not_drift(local_mirror):
    mirrors = local_mirror(SECURITY.replace("Version: 2026f-0+deb12u1", "Version: 2026g-0+deb12u1"))
    spec = _cpu_with_mirrors(mirrors)
    built = {**spec.packages, "tzdata": "2026g-0+deb12u1", "libssl3": "3.0.20-1~deb12u2"}
    assert drift.compare_with_lock("cpu", spec, "", spec.layers, built).verdict == "different"


def test_the_lock_s_packages_decide_identical_or_a_recipe_that_gave_other_bytes():
    spec = load_config().lock.images["cpu"]
    same = drift.compare_with_lock("cpu", spec, spec.id, spec.layers, dict(spec.packages), served=lambda _: {})
    assert same.verdict == "identical" and same.lines() == [
        f"IDENTICAL: the cpu image built here is images.cpu of lock.yaml ({spec.id})"]
    other = drift.compare_with_lock("cpu", spec, "sha256:" + "3" * 64, spec.layers, dict(spec.packages),
                                    served=lambda _: {})
    assert other.verdict == "different" and "the recipe did not give the same bytes" in other.lines()[0]


def test_a_build_refused_for_drift_says_what_moved_and_how_to_repin(local_mirror):
    mirrors = local_mirror(SECURITY.replace("Version: 2026f-0+deb12u1", "Version: 2026g-0+deb12u1"))
    spec = _cpu_with_mirrors(mirrors)
    with pytest.raises(IntegrityError) as caught:
        _check_packages("cpu", spec, {**spec.packages, "tzdata": "2026g-0+deb12u1"})
    line = caught.value.one_line()
    assert "tzdata: 2026f-0+deb12u1 -> 2026g-0+deb12u1 (the mirror no longer serves it)" in line
    assert "images.cpu.packages: {}" in line and "\n" not in line


def test_the_fetch_mirrors_are_asked_when_the_recipe_names_them(local_mirror):
    spec = _cpu_with_mirrors(("deb http://moebench.invalid/debian bookworm main",))
    spec = spec.model_copy(update={"rootfs": spec.rootfs.model_copy(update={"fetch_mirrors": local_mirror()})})
    built = {**spec.packages, "tzdata": "2026b-0+deb12u1"}  # served by the fetch mirrors' main suite
    comparison = drift.compare_with_lock("cpu", spec, "", spec.layers, built)
    assert comparison.verdict == "different" and comparison.changes[0].pinned_is_served is True


@pytest.mark.parametrize(("log", "reason", "fix"), [
    ("no_arch_test.log", "E: install arch-test for foreign architecture support", "apt-get install arch-test"),
    ("unknown_package.log", "E: Unable to locate package moebench-no-such-package", "check rootfs.mirrors"),
])
def test_mmdebstrap_s_own_reason_is_in_the_error(tmp_path, log, reason, fix):
    recorded = (FIXTURES / "mmdebstrap" / log).read_text()
    assert rootfs.failure_reason(recorded)[0] == reason
    replay = tmp_path / "mmdebstrap-replay"
    output = recorded.split("\n", 1)[1].rsplit("exit ", 1)[0]
    (tmp_path / "output").write_text(output)
    replay.write_text(f"#!/bin/sh\ncat {tmp_path / 'output'}\nexit 25\n")
    replay.chmod(0o755)
    with pytest.raises(UserError) as caught:
        rootfs.run_logged([str(replay)], tmp_path / "build.log", "mmdebstrap")
    line = caught.value.one_line()
    assert f"mmdebstrap failed (exit 25): {reason}" in line and fix in line
    assert "moved mirror" not in line
