"""Does `invoke image.build` give the same image twice from clean state, and what does a build cost?

Builds the image (default `cpu`) --runs times, each in a new empty work directory (MOEBENCH_HOME),
without loading it into an engine, and writes benchmarks/results/image_reproducibility.json: each
build's image ID, layer digests, archive SHA-256 and stage times, whether all builds agree, and
whether they equal lock.yaml's `images.<name>.id`. Needs root and mmdebstrap, as the build does.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from moebench.config import load_config
from moebench.images.builder import build_image

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", default="cpu")
    parser.add_argument("--runs", type=int, default=2)
    a = parser.parse_args()
    cfg = load_config()
    builds = []
    for run in range(a.runs):
        with tempfile.TemporaryDirectory(prefix=f"image-build-{run}-") as home:
            os.environ["MOEBENCH_HOME"] = home
            started = time.monotonic()
            result = build_image(cfg, a.image, load=False)
            builds.append({"work_dir": home, "id": result.id, "layers": result.layers,
                           "archive_sha256": result.archive_sha256, "seconds": result.seconds,
                           "total_seconds": round(time.monotonic() - started, 1)})
    pinned = cfg.lock.images[a.image].id
    body = {"benchmark": "image_reproducibility", "image": a.image, "host": platform.platform(),
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "lock_id": pinned,
            "identical": len({(b["id"], tuple(b["layers"]), b["archive_sha256"]) for b in builds}) == 1,
            "equal_to_lock": all(b["id"] == pinned for b in builds), "builds": builds}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "image_reproducibility.json").write_text(json.dumps(body, indent=2) + "\n")
    print(json.dumps({k: v for k, v in body.items() if k != "builds"}, indent=2))
    for b in builds:
        print(f"{b['id']}  archive {b['archive_sha256'][:16]}  {b['total_seconds']} s")


if __name__ == "__main__":
    main()
