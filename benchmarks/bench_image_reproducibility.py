"""Does `invoke image.build` give the same image twice from clean state, and what does a build cost?

Builds the image (default `cpu`) --runs times, each in a new empty work directory (MOEBENCH_HOME),
without loading it into an engine, and writes benchmarks/results/image_reproducibility.json: each
build's image ID, layer digests, archive SHA-256 and stage times, whether all builds agree, and how
each relates to lock.yaml's `images.<name>` (identical, drift of the mirror, or different; see
moebench/images/drift.py). Needs root and mmdebstrap, as the build does. --quick builds the smallest
image, standin-base (a minbase root filesystem), twice.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

from _common import add_quick_and_results_dir

from moebench.config import load_config
from moebench.images.builder import build_image, lock_comparison

QUICK_IMAGE = "standin-base"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", default="cpu")
    parser.add_argument("--runs", type=int, default=2)
    add_quick_and_results_dir(parser, f"the {QUICK_IMAGE} image, twice")
    a = parser.parse_args()
    if a.quick:
        a.image, a.runs = QUICK_IMAGE, 2
    cfg = load_config()
    spec = cfg.lock.images[a.image]
    builds = []
    for run in range(a.runs):
        with tempfile.TemporaryDirectory(prefix=f"image-build-{run}-") as home:
            os.environ["MOEBENCH_HOME"] = home
            started = time.monotonic()
            result = build_image(cfg, a.image, load=False, check_lock=False)
            comparison = lock_comparison(a.image, spec, result)
            builds.append({"work_dir": home, "id": result.id, "layers": result.layers,
                           "archive_sha256": result.archive_sha256, "seconds": result.seconds,
                           "total_seconds": round(time.monotonic() - started, 1),
                           "against_lock": comparison.verdict, "against_lock_report": comparison.lines()})
    body = {"benchmark": "image_reproducibility", "image": a.image, "host": platform.platform(),
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "quick": a.quick,
            "lock_id": spec.id,
            "identical": len({(b["id"], tuple(b["layers"]), b["archive_sha256"]) for b in builds}) == 1,
            "equal_to_lock": all(b["id"] == spec.id for b in builds), "builds": builds}
    a.results_dir.mkdir(parents=True, exist_ok=True)
    (a.results_dir / "image_reproducibility.json").write_text(json.dumps(body, indent=2) + "\n")
    print(json.dumps({k: v for k, v in body.items() if k != "builds"}, indent=2))
    for b in builds:
        print(f"{b['id']}  archive {b['archive_sha256'][:16]}  {b['total_seconds']} s")


if __name__ == "__main__":
    main()
