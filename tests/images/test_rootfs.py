"""Exact apt versions, wheel platforms and the requirements lock that every image installs."""

from __future__ import annotations

import re
import tomllib

from moebench.config import REPO_ROOT
from moebench.images.rootfs import apt_pins, wheel_platforms


def test_apt_pins_force_each_recorded_version_and_skip_unrecorded():
    text = apt_pins({"libc6": "2.36-9+deb12u14", "cmake": None, "apt": "2.6.1"})
    assert text == ("Package: apt\nPin: version 2.6.1\nPin-Priority: 1001\n\n"
                    "Package: libc6\nPin: version 2.36-9+deb12u14\nPin-Priority: 1001\n")


def test_wheel_platforms_cover_every_older_glibc_and_the_legacy_aliases():
    tags = wheel_platforms("manylinux_2_36_aarch64")
    assert tags[0] == "manylinux_2_36_aarch64" and tags[-4] == "manylinux_2_5_aarch64"
    assert tags[-3:] == ["manylinux2014_aarch64", "manylinux2010_aarch64", "manylinux1_aarch64"]
    assert "manylinux2014_x86_64" in wheel_platforms("manylinux_2_17_x86_64")


def test_requirements_lock_pins_every_dependency_of_pyproject_with_hashes():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    lock = (REPO_ROOT / "configs" / "requirements.lock").read_text()
    pinned = dict(re.findall(r"^([A-Za-z0-9_.-]+)==([^ ;\\\n]+)", lock, re.MULTILINE))
    normalise = lambda name: re.sub(r"[-_.]+", "-", name).lower()  # noqa: E731
    pinned = {normalise(name): version for name, version in pinned.items()}
    wanted = [*project["dependencies"], *project["optional-dependencies"]["test"]]
    for requirement in wanted:
        name, version = requirement.split("==")
        assert pinned.get(normalise(name)) == version.strip(), f"{requirement} is not what requirements.lock pins"
    blocks = re.split(r"\n(?=[A-Za-z0-9])", lock.split("\n", 4)[-1])
    assert all("--hash=sha256:" in block for block in blocks if "==" in block)


def test_the_test_runner_s_tools_are_pinned_apart_from_what_images_install():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    ci = (REPO_ROOT / "configs" / "requirements-ci.lock").read_text()
    pinned = dict(re.findall(r"^([A-Za-z0-9_.-]+)==([^ ;\\\n]+)", ci, re.MULTILINE))
    for requirement in project["optional-dependencies"]["ci"]:
        name, version = requirement.split("==")
        assert pinned.get(name) == version, f"{requirement} is not what requirements-ci.lock pins"
        assert name not in (REPO_ROOT / "configs" / "requirements.lock").read_text()
    assert all(len(re.findall(rf"^{re.escape(name)}==[^\n]*(?:\n    --hash=sha256:[0-9a-f]{{64}}[ \\]*)+", ci,
                              re.MULTILINE)) == 1 for name in pinned)


def test_the_os_build_sees_a_fixed_environment_not_the_caller_s(monkeypatch):
    """A caller's PYTHONDONTWRITEBYTECODE (or its absence) once changed the OS layer's .pyc files."""
    from moebench.images.rootfs import mmdebstrap_environment

    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
    monkeypatch.setenv("PYTHONHASHSEED", "7")
    monkeypatch.setenv("LANG", "de_DE.UTF-8")
    monkeypatch.setenv("http_proxy", "http://proxy.example:3128")
    env = mmdebstrap_environment(315532800)
    assert env == {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
                   "LC_ALL": "C.UTF-8", "TZ": "UTC", "SOURCE_DATE_EPOCH": "315532800", "PYTHONDONTWRITEBYTECODE": "1",
                   "http_proxy": "http://proxy.example:3128"}
