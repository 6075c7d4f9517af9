"""Is a build that differs from lock.yaml a mirror that moved on, or a recipe that is not reproducible?

Debian's mirrors serve only the newest version of a package in a suite: a point release or a
security update replaces a pinned version, and a build from the same recipe then installs another
one. That is drift of the mirror, not of the kit, and it is told apart from a real difference here:

* `identical`: the build's image ID, layers and packages are the lock's;
* `drift`: the packages differ, and every pinned version that was not installed is one the mirror
  no longer serves (read from the mirror's own Packages index); the report names each package,
  pinned -> served, and the re-pin command;
* `different`: anything else: a pinned version the mirror still serves but the build did not
  install, or the lock's packages with another image ID (the recipe itself gave other bytes).

Identity is a separate question, answered by comparing two clean builds with each other.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from moebench.config import ImagePin

# The compressions Debian publishes a Packages index in, best first, and how to open each.
INDEX_FORMATS: tuple[tuple[str, Callable[[bytes], bytes]], ...] = (
    (".xz", lzma.decompress), (".gz", gzip.decompress), (".bz2", bz2.decompress), ("", lambda data: data))


@dataclass(frozen=True)
class SourceLine:
    """One one-line-style apt source: `deb [options] URI SUITE COMPONENT...`."""

    uri: str
    suite: str
    components: tuple[str, ...]

    @classmethod
    def parse(cls, line: str) -> "SourceLine":
        words = line.split()
        if words and words[0] == "deb":
            words = words[1:]
        if words and words[0].startswith("["):
            while words and not words[0].endswith("]"):
                words = words[1:]
            words = words[1:]
        if len(words) < 3:
            raise ValueError(f"not an apt source line: {line!r}")
        return cls(uri=words[0].rstrip("/"), suite=words[1], components=tuple(words[2:]))

    def index_urls(self, architecture: str) -> list[str]:
        """The base URL of each component's Packages index for `architecture` (without compression suffix)."""
        return [f"{self.uri}/dists/{self.suite}/{component}/binary-{architecture}/Packages"
                for component in self.components]


def fetch_index(url: str, timeout_s: float = 60.0) -> bytes:
    """The uncompressed Packages index at `url`, in the first compression the mirror serves."""
    missing = []
    for suffix, decompress in INDEX_FORMATS:
        try:
            with urllib.request.urlopen(url + suffix, timeout=timeout_s) as response:
                return decompress(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise
            missing.append(url + suffix)
    raise FileNotFoundError(f"no Packages index at {', '.join(missing)}")


def parse_index(text: str, wanted: set[str]) -> dict[str, set[str]]:
    """{package: versions} of the packages in `wanted` that a Packages index lists."""
    versions: dict[str, set[str]] = {}
    package = None
    for line in text.splitlines():
        if line.startswith("Package: "):
            package = line[9:].strip()
        elif line.startswith("Version: ") and package in wanted:
            versions.setdefault(package, set()).add(line[9:].strip())
        elif not line:
            package = None
    return versions


def served_versions(mirrors: Iterable[str], architecture: str, packages: Iterable[str]) -> dict[str, set[str]]:
    """Every version of `packages` the mirrors serve for `architecture` now (an absent package: none)."""
    wanted = set(packages)
    served: dict[str, set[str]] = {name: set() for name in wanted}
    for line in mirrors:
        for url in SourceLine.parse(line).index_urls(architecture):
            for name, versions in parse_index(fetch_index(url).decode("utf-8", "replace"), wanted).items():
                served[name] |= versions
    return served


@dataclass(frozen=True)
class PackageChange:
    """One package whose built version is not the pinned one (None: not pinned / not installed)."""

    name: str
    pinned: str | None
    built: str | None
    pinned_is_served: bool | None  # None: nothing was pinned, so there is nothing to look for

    def line(self) -> str:
        served = {True: "the mirror still serves it", False: "the mirror no longer serves it",
                  None: "not in the lock"}[self.pinned_is_served]
        return f"{self.name}: {self.pinned or '-'} -> {self.built or 'not installed'} ({served})"


@dataclass(frozen=True)
class LockComparison:
    """How one build relates to its lock entry; `lines()` is what a person reads."""

    name: str
    verdict: Literal["identical", "drift", "different"]
    changes: tuple[PackageChange, ...]
    pinned_id: str | None
    built_id: str

    def repin_command(self) -> str:
        return (f"in configs/lock.yaml set images.{self.name}.packages: {{}}, then run "
                f"invoke image.build --image {self.name} && invoke image.lock --image {self.name}")

    def lines(self) -> list[str]:
        if self.verdict == "identical":
            return [f"IDENTICAL: the {self.name} image built here is images.{self.name} of lock.yaml ({self.built_id})"]
        if self.verdict == "drift":
            head = (f"DRIFT: the mirror no longer serves {sum(c.pinned_is_served is False for c in self.changes)} "
                    f"pinned package version(s) of images.{self.name}; pinned -> served:")
            gives = f"the build gives {self.built_id}, the lock pins {self.pinned_id}; " if self.built_id else ""
            tail = [f"{gives}to re-pin: {self.repin_command()}; or set the recipe's rootfs.fetch_mirrors to a "
                    "snapshot mirror of the pinned date (README, Images)"]
            return [head, *(f"  {c.line()}" for c in self.changes), *tail]
        if not self.changes:
            return [f"DIFFERENT: the {self.name} image has the lock's packages but the ID {self.built_id}, the lock pins "
                    f"{self.pinned_id}: the recipe did not give the same bytes"]
        return [f"DIFFERENT: images.{self.name}: packages differ although the mirror still serves the pinned "
                "versions:", *(f"  {c.line()}" for c in self.changes)]


def compare_with_lock(name: str, spec: ImagePin, built_id: str, built_layers: Iterable[str],
                      built_packages: dict[str, str],
                      served: Callable[[Iterable[str]], dict[str, set[str]]] | None = None) -> LockComparison:
    """Classify a build of image `name` against `spec`, its lock entry (see the module docstring).

    `served(names)` gives the versions the mirror serves; by default it reads the recipe's own mirrors.
    """
    pinned = {pkg: version for pkg, version in spec.packages.items() if version is not None}
    differing = sorted(pkg for pkg in set(pinned) | set(built_packages) if pinned.get(pkg) != built_packages.get(pkg))
    if not differing:
        same = built_id == spec.id and tuple(built_layers) == tuple(spec.layers)
        return LockComparison(name, "identical" if same else "different", (), spec.id, built_id)
    if served is None:
        assert spec.rootfs is not None, "only a rootfs recipe names its mirrors"
        rootfs = spec.rootfs
        served = lambda names: served_versions(rootfs.fetch_mirrors or rootfs.mirrors, rootfs.architecture, names)  # noqa: E731
    available = served([pkg for pkg in differing if pkg in pinned])
    changes = tuple(PackageChange(pkg, pinned.get(pkg), built_packages.get(pkg),
                                  pinned[pkg] in available.get(pkg, set()) if pkg in pinned else None)
                    for pkg in differing)
    moved = [c for c in changes if c.pinned_is_served is False]
    kept = [c for c in changes if c.pinned_is_served is True]
    # packages that appear or vanish follow the dependencies of the replaced versions, so they count
    # as drift only where some pinned version is gone and none that is still served was passed over
    verdict = "drift" if moved and not kept else "different"
    return LockComparison(name, verdict, changes, spec.id, built_id)
