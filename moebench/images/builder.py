"""`invoke image.build`: make a toolchain image from its lock entry, load it, and describe the result.

Two recipes (lock.yaml `images.<name>.recipe`):

* `rootfs`: the kit builds the image itself, reproducibly: a Debian root filesystem at the lock's
  package versions (rootfs.py) becomes the OS layer, the venv of configs/requirements.lock the
  second layer (layers.py), and archive.py puts them in an archive whose image ID is computed
  before the engine loads it. The engine must report the same ID, or the build fails.
* `dockerfile`: `docker build` of a Dockerfile FROM a base named by digest (NVIDIA's CUDA and
  L4T images, which cannot be rebuilt from source). The engine's builder stamps build times into
  such an image, so its ID pins one build; identity across builds is claimed only for `rootfs`.

The result is written to `<work>/images/<name>/build.json`; `invoke image.lock` records it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from moebench import paths
from moebench.pins.build import SOURCE_DATE_EPOCH
from moebench.config import REPO_ROOT, Config, ImagePin
from moebench.errors import ConfigError, IntegrityError, UserError
from moebench.hashing import sha256_file
from moebench.images import archive, drift, engine, layers, rootfs
from moebench.images.dockerfile import build_dockerfile_image, preflight

REQUIREMENTS = REPO_ROOT / "configs" / "requirements.lock"
RECIPE_VERSION = 1
MIN_FREE_BYTES = 6 * 1024**3  # a rootfs (~0.7 GB), its layer tars and the archive, with room to spare


@dataclass
class ImageBuild:
    """What one image build produced: everything `image.lock` records, and how long it took."""

    name: str
    id: str
    layers: list[str]
    base_digest: str | None
    packages: dict[str, str]
    recipe_sha256: str
    archive: str | None = None
    archive_sha256: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    def lock_entry(self) -> dict[str, Any]:
        return {"packages": self.packages, "recipe_sha256": self.recipe_sha256, "base_digest": self.base_digest,
                "layers": list(self.layers), "id": self.id}


def image_dir(name: str) -> Path:
    return paths.work_dir() / "images" / name


def result_path(name: str) -> Path:
    return image_dir(name) / "build.json"


def load_result(name: str) -> ImageBuild:
    path = result_path(name)
    if not path.is_file():
        raise UserError(path, f"no build of image {name!r} to record", f"run: invoke image.build --image {name}")
    return ImageBuild(**json.loads(path.read_text(encoding="utf-8")))


def loaded_result(name: str) -> ImageBuild:
    """The last build of `name`, refused unless the engine still holds exactly that image: the lock
    must only ever pin an image that was built and loaded."""
    result = load_result(name)
    local = engine.image_by_tag(engine.connect(), name)
    if local.id != result.id:
        raise IntegrityError(engine.local_tag(name), f"the engine holds {local.id}, the last build of {name!r} recorded "
                                                     f"{result.id}", f"run: invoke image.build --image {name}")
    return result


def image_spec(cfg: Config, name: str) -> ImagePin:
    if name not in cfg.lock.images:
        raise ConfigError(cfg.root / "lock.yaml", f"unknown image {name!r}", f"use one of: {', '.join(cfg.lock.images)}",
                          key="images")
    return cfg.lock.images[name]


def recipe_sha256(cfg: Config, name: str, spec: ImagePin) -> str:
    """SHA-256 over every input of the build: the lock entry's inputs, the requirements and the recipe code;
    not `rootfs.fetch_mirrors`, which says where the same packages are downloaded from."""
    inputs = spec.model_dump(include={"recipe", "rootfs", "dockerfile", "base", "python", "platform", "packages"},
                             exclude={"rootfs": {"fetch_mirrors"}})
    files = [Path(module.__file__) for module in (layers, rootfs, archive)]  # type: ignore[arg-type]
    if spec.dockerfile:
        files.append(cfg.root.parent / spec.dockerfile)
    if spec.python:
        files.append(REQUIREMENTS)
    data = {"recipe_version": RECIPE_VERSION, "name": name, "inputs": inputs, "source_date_epoch": SOURCE_DATE_EPOCH,
            "files": {path.name: sha256_file(path) for path in files}}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _check_disk(where: Path) -> None:
    where.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(where).free
    if free < MIN_FREE_BYTES:
        raise UserError(where, f"{free / 1024**3:.1f} GiB free, an image build needs {MIN_FREE_BYTES / 1024**3:.0f} GiB",
                        "free disk space, or set MOEBENCH_HOME to a larger disk")


def lock_comparison(name: str, spec: ImagePin, result: "ImageBuild") -> drift.LockComparison:
    """How a finished build relates to its lock entry: identical, drift of the mirror, or different."""
    return drift.compare_with_lock(name, spec, result.id, result.layers, result.packages)


def _check_packages(name: str, spec: ImagePin, installed: dict[str, str]) -> None:
    """The build's packages must be exactly the lock's (once the lock records them); a difference
    says which pinned versions the mirror no longer serves and how to re-pin."""
    if not any(v is not None for v in spec.packages.values()):
        return
    comparison = drift.compare_with_lock(name, spec, "", (), installed)
    if comparison.changes:
        raise IntegrityError(f"images.{name}.packages", " ".join(line.strip() for line in comparison.lines()),
                             comparison.repin_command() if comparison.verdict == "drift" else
                             "report this: apt did not honour the lock's pins", key="packages")


def build_image(cfg: Config, name: str, *, load: bool = True, resolve: bool = False,
                check_lock: bool = True) -> ImageBuild:
    """Build image `name` as its lock entry describes; loads it into the engine unless `load` is False.

    With `check_lock` False a rootfs build whose packages are not the lock's still completes, for a
    caller that compares it with another build and with the lock itself (`lock_comparison`)."""
    spec = image_spec(cfg, name)
    if spec.recipe == "dockerfile":
        preflight(cfg, name, spec, resolve)  # a tag-only base or an unpinned package: refused before any work
    client = engine.connect() if load or spec.recipe == "dockerfile" else None  # fail before minutes of work
    work = image_dir(name)
    _check_disk(work)
    if spec.recipe == "rootfs":
        result = _build_rootfs_image(cfg, name, spec, work, check_lock)
        if client is not None:
            started = time.monotonic()
            loaded = engine.load_archive(client, Path(result.archive))  # type: ignore[arg-type]
            result.seconds["load"] = round(time.monotonic() - started, 1)
            if loaded != result.id:
                raise IntegrityError(result.archive, f"the engine loaded image {loaded}, the archive's config is "
                                                     f"{result.id}", "report this: the engine rewrote the image")
    else:
        result = ImageBuild(**build_dockerfile_image(cfg, client, name, spec, work, recipe_sha256(cfg, name, spec),
                                                     resolve, REQUIREMENTS))
    result_path(name).write_text(json.dumps(asdict(result), indent=2) + "\n", encoding="utf-8")
    return result


def _build_rootfs_image(cfg: Config, name: str, spec: ImagePin, work: Path, check_lock: bool) -> ImageBuild:
    assert spec.rootfs is not None
    sde = int(SOURCE_DATE_EPOCH)
    seconds: dict[str, float] = {}
    tree, log = work / "rootfs", work / "build.log"
    if tree.exists():
        shutil.rmtree(tree)
    log.write_text("", encoding="utf-8")
    started = time.monotonic()
    rootfs.debootstrap(name, spec, tree, sde, log)
    rootfs.drop_run_dependent_state(tree)
    installed = rootfs.installed_packages(tree)
    if check_lock:
        _check_packages(name, spec, installed)
    seconds["rootfs"] = round(time.monotonic() - started, 1)
    made = [_layer(tree, work / "layer-os.tar", sde, None, f"Debian {spec.rootfs.suite} {spec.rootfs.architecture} "
                                                               f"root filesystem, {len(installed)} packages")]
    if spec.python:
        started = time.monotonic()
        assert spec.platform is not None
        wheels = paths.work_dir() / "images" / "wheels" / f"cp{spec.python.replace('.', '')}-{spec.platform}"
        rootfs.download_wheels(REQUIREMENTS, spec.python, spec.platform, wheels, log)
        rootfs.install_python_deps(tree, REQUIREMENTS, wheels, sde, log)
        made.append(_layer(tree, work / "layer-python.tar", sde, "opt/moebench",
                           "Python dependencies of configs/requirements.lock in /opt/moebench/venv"))
        seconds["python"] = round(time.monotonic() - started, 1)
    started = time.monotonic()
    config = archive.image_config(name, spec.rootfs.architecture, [(d, what) for d, _, what in made], sde,
                                  {"org.opencontainers.image.title": f"moebench-{name}",
                                   "org.opencontainers.image.description": spec.description},
                                  with_kit_entrypoint=spec.python is not None)
    target = work / "image.tar"
    archive.write_archive(target, config, [(d, path) for d, path, _ in made], engine.local_tag(name), sde)
    for _, path, _ in made:
        path.unlink()
    shutil.rmtree(tree)
    seconds["archive"] = round(time.monotonic() - started, 1)
    return ImageBuild(name=name, id=archive.image_id(config), layers=[d for d, _, _ in made], base_digest=made[0][0],
                      packages=installed, recipe_sha256=recipe_sha256(cfg, name, spec), archive=str(target),
                      archive_sha256=sha256_file(target), seconds=seconds)


def _layer(tree: Path, path: Path, sde: int, only: str | None, what: str) -> tuple[str, Path, str]:
    with open(path, "wb") as sink:
        diff_id, _ = layers.write_layer(tree, sink, sde, only)
    return diff_id, path, what
