"""A package cache shared by image builds: a second build of the same package set downloads nothing.

With MOEBENCH_APT_CACHE set, every rootfs build takes its .debs from `<cache>/<architecture>` and
adds what it downloaded. apt itself accepts a file in /var/cache/apt/archives by its name and size
alone, so the cache is never handed to apt unchecked: a setup hook of mmdebstrap runs
`apt-get update` (whose indexes apt verifies against the suite's signed Release file), then copies
in only the cached files whose SHA-256 is the one that index gives for their name
(`python -m moebench.images.aptcache CACHE ROOT`). Any other file stays out, and apt downloads
that package again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from moebench.hashing import sha256_file

ARCHIVES = "var/cache/apt/archives"


def package_cache(architecture: str) -> Path | None:
    """MOEBENCH_APT_CACHE/<architecture>, or None where no cache is set."""
    root = os.environ.get("MOEBENCH_APT_CACHE")
    return Path(root) / architecture if root else None


def _quote(text: str, unsafe: str) -> str:
    """apt's QuoteString: `%xx` for each character of `unsafe`, '%', blanks and non-ASCII."""
    return "".join(f"%{ord(c):02x}" if c in unsafe or c == "%" or ord(c) <= 0x20 or ord(c) >= 0x7F else c
                   for c in text)


def archive_name(package: str, version: str, architecture: str) -> str:
    """The file name apt gives a downloaded package in /var/cache/apt/archives (epoch ':' as %3a)."""
    return f"{_quote(package, '_:')}_{_quote(version, '_:')}_{_quote(architecture, '_:.')}.deb"


def expected_hashes(available: str) -> dict[str, str]:
    """{archive file name: SHA-256} from `apt-cache dumpavail` output (apt's verified indexes)."""
    hashes: dict[str, str] = {}
    for stanza in available.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line and not line[0].isspace())
        if {"Package", "Version", "Architecture", "SHA256"} <= fields.keys():
            hashes[archive_name(fields["Package"], fields["Version"], fields["Architecture"])] = fields["SHA256"]
    return hashes


def copy_verified(cache: Path, archives: Path, expected: dict[str, str]) -> tuple[list[str], list[str]]:
    """Copy each cached .deb whose hash is `expected`'s for its name into `archives`: (used, refused)."""
    used, refused = [], []
    for deb in sorted(cache.glob("*.deb")):
        if expected.get(deb.name) == sha256_file(deb):
            shutil.copyfile(deb, archives / deb.name)
            used.append(deb.name)
        else:
            refused.append(deb.name)
    return used, refused


def hook_args(cache: Path, fetched: Path) -> list[str]:
    """mmdebstrap options: update, then the verified copy-in (setup), and the copy-out of every
    package of the build into `fetched` (customize, before mmdebstrap's cleanup empties the directory)."""
    return ["--skip=essential/unlink",
            '--setup-hook=APT_CONFIG="$MMDEBSTRAP_APT_CONFIG" apt-get update --error-on=any -q',
            f'--setup-hook={sys.executable} -m moebench.images.aptcache {cache} "$1"',
            f"--customize-hook=sync-out /{ARCHIVES} {fetched}"]


def keep(fetched: Path, cache: Path) -> None:
    """Put every package of a finished build into the cache, each through a private temporary name,
    so that a build reading the cache at the same time sees a whole file or none."""
    for deb in sorted(fetched.glob("*.deb")):
        fd, partial = tempfile.mkstemp(dir=cache, prefix=f".{deb.name}.")
        os.close(fd)
        try:
            shutil.copyfile(deb, partial)
            os.replace(partial, cache / deb.name)
        finally:
            Path(partial).unlink(missing_ok=True)


def main(argv: list[str]) -> int:
    """The setup hook: CACHE ROOT, run by mmdebstrap after the hook that ran `apt-get update`."""
    cache, root = Path(argv[0]), Path(argv[1])
    env = {**os.environ, "APT_CONFIG": os.environ["MMDEBSTRAP_APT_CONFIG"]}
    available = subprocess.run(["apt-cache", "dumpavail"], env=env, capture_output=True, text=True, check=True).stdout
    (root / ARCHIVES).mkdir(parents=True, exist_ok=True)
    used, refused = copy_verified(cache, root / ARCHIVES, expected_hashes(available))
    print(f"I: package cache {cache}: {len(used)} package(s) match apt's verified index and are used"
          + (f"; refused (not in the index, or another SHA-256): {', '.join(refused)}" if refused else ""), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
