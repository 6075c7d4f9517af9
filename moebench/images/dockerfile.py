"""The `dockerfile` recipe: images on a base the kit cannot build (NVIDIA CUDA, L4T JetPack).

Two things keep such an image honest. Its base is named by digest: every `FROM` of the
Dockerfile is `${BASE_IMAGE}` or an earlier stage, and BASE_IMAGE comes from lock.yaml as
name@sha256:digest (or as another image of the lock, which is then used by its recorded ID); a
tag alone, which a registry can move, is refused. Its apt packages are passed as name=version
pairs, and what the image then holds is read back with dpkg-query and compared with the lock.
A lock entry whose versions are still null builds only with `resolve`, which takes the base's
candidates and lets `invoke image.lock` record them.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path
from typing import Any

from moebench.config import Config, ImagePin
from moebench.errors import ConfigError, IntegrityError, UserError
from moebench.images import engine, rootfs

FROM_LINE = re.compile(r"^\s*FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", re.IGNORECASE | re.MULTILINE)
BASE_ARG = ("${BASE_IMAGE}", "$BASE_IMAGE")
DIGEST_REF = re.compile(r"^[^@\s]+@sha256:[0-9a-f]{64}$")


def check_from_lines(dockerfile: Path) -> None:
    """Refuse a Dockerfile with a FROM that names its base by tag instead of ${BASE_IMAGE} or a digest."""
    stages: set[str] = set()
    found = FROM_LINE.findall(dockerfile.read_text(encoding="utf-8"))
    if not found:
        raise UserError(dockerfile, "no FROM line", "start the Dockerfile with ARG BASE_IMAGE and FROM ${BASE_IMAGE}")
    for image, alias in found:
        if image not in BASE_ARG and image.lower() not in stages and not DIGEST_REF.match(image):
            raise UserError(dockerfile, f"FROM {image} names its base by tag only",
                            "write FROM ${BASE_IMAGE}; the kit passes the base as name@sha256:digest from lock.yaml")
        if alias:
            stages.add(alias.lower())


def preflight(cfg: Config, name: str, spec: ImagePin, resolve: bool) -> None:
    """Everything that can be refused from the files alone, before the engine is asked for anything."""
    assert spec.dockerfile is not None and spec.base is not None
    check_from_lines(cfg.root.parent / spec.dockerfile)
    if spec.base not in cfg.lock.images and not DIGEST_REF.match(spec.base):
        raise ConfigError(cfg.root / "lock.yaml", f"base {spec.base!r} is a tag without a digest",
                          "pin it as name@sha256:<digest> (`docker buildx imagetools inspect <tag>` prints the digest)",
                          key=f"images.{name}.base")
    apt_packages(cfg, name, spec, resolve)


def base_reference(cfg: Config, client: Any, name: str, spec: ImagePin) -> tuple[str, str]:
    """(reference for FROM, base digest): a digest reference from the lock, or another locked image."""
    assert spec.base is not None
    if spec.base in cfg.lock.images:
        base_id = cfg.lock.images[spec.base].id
        if base_id is None:
            raise ConfigError(cfg.root / "lock.yaml", f"base image {spec.base!r} has no recorded id",
                              f"run: invoke image.build --image {spec.base} && invoke image.lock --image {spec.base}",
                              key=f"images.{name}.base")
        image = engine.image_by_id(client, base_id, spec.base)
        reference = f"moebench/{spec.base}:{base_id.removeprefix('sha256:')}"  # a tag that can only mean this ID
        image.tag(reference)
        return reference, base_id
    return spec.base, spec.base.split("@", 1)[1]


def apt_packages(cfg: Config, name: str, spec: ImagePin, resolve: bool) -> str:
    unpinned = sorted(pkg for pkg, version in spec.packages.items() if version is None)
    if unpinned and not resolve:
        raise ConfigError(cfg.root / "lock.yaml", f"{len(unpinned)} package(s) have no exact version ({', '.join(unpinned)})",
                          f"on a machine that has the base: invoke image.build --image {name} --resolve && "
                          f"invoke image.lock --image {name}", key=f"images.{name}.packages")
    return " ".join(pkg if version is None else f"{pkg}={version}" for pkg, version in sorted(spec.packages.items()))


def _context(cfg: Config, spec: ImagePin, work: Path, requirements: Path, log: Path) -> Path:
    """The build context: the Dockerfile, requirements.lock and the hash-checked wheels; never the kit."""
    assert spec.dockerfile is not None and spec.python is not None and spec.platform is not None
    context = work / "context"
    if context.exists():
        shutil.rmtree(context)
    context.mkdir(parents=True)
    shutil.copy2(cfg.root.parent / spec.dockerfile, context / "Dockerfile")
    shutil.copy2(requirements, context / "requirements.lock")
    rootfs.download_wheels(requirements, spec.python, spec.platform, context / "wheels", log)
    return context


def _stream_build(client: Any, context: Path, name: str, buildargs: dict[str, str], dockerfile: Path) -> None:
    """Run the engine's build, one line per Dockerfile step; UserError with the engine's message on failure."""
    from docker.errors import APIError

    try:
        for chunk in client.api.build(path=str(context), dockerfile="Dockerfile", tag=engine.local_tag(name),
                                      buildargs=buildargs, network_mode="host", rm=True, forcerm=True, pull=False,
                                      decode=True):
            line = chunk.get("stream", "")
            if line.startswith("Step "):
                print(f"  image {name}: {line.strip()}", flush=True)
            if "error" in chunk:
                problem = chunk["error"].strip()
                fix = ("free space where the engine keeps images (docker system prune), then build again"
                       if engine.disk_full(problem) else "see the step above; a moved apt mirror is "
                                                                       "the usual cause")
                raise UserError(dockerfile, f"docker build of image {name!r} failed: {problem[-400:]}", fix)
    except APIError as exc:
        raise UserError(dockerfile, f"the engine refused the build ({exc.explanation or exc})",
                        "free disk space, or check the base image is present") from None


def installed_versions(client: Any, image_id: str, packages: list[str]) -> dict[str, str]:
    """{package: version} read with dpkg-query inside the built image."""
    output = client.containers.run(image_id, entrypoint=["dpkg-query", "-W", "-f=${Package}\t${Version}\n", *packages],
                                   remove=True, network_disabled=True)
    pairs = (line.split("\t") for line in output.decode().splitlines() if "\t" in line)
    return dict(sorted((pkg, version) for pkg, version in pairs))


def build_dockerfile_image(cfg: Config, client: Any, name: str, spec: ImagePin, work: Path, recipe_sha256: str,
                           resolve: bool, requirements: Path) -> dict[str, Any]:
    """Build, then read back what the image holds; returns the fields of an ImageBuild."""
    assert spec.dockerfile is not None
    dockerfile = cfg.root.parent / spec.dockerfile
    reference, base_digest = base_reference(cfg, client, name, spec)
    packages = apt_packages(cfg, name, spec, resolve)
    log = work / "build.log"
    log.write_text("", encoding="utf-8")
    started = time.monotonic()
    context = _context(cfg, spec, work, requirements, log)
    _stream_build(client, context, name, {"BASE_IMAGE": reference, "APT_PACKAGES": packages}, dockerfile)
    shutil.rmtree(context)
    image = engine.image_by_tag(client, name)
    installed = installed_versions(client, image.id, sorted(spec.packages))
    wrong = [f"{pkg} {version} -> {installed.get(pkg, 'not installed')}" for pkg, version in spec.packages.items()
             if version is not None and installed.get(pkg) != version]
    if wrong:
        raise IntegrityError(dockerfile, f"the image holds other versions than the lock: {'; '.join(wrong[:6])}",
                             "check the base's apt sources", key=f"images.{name}.packages")
    return {"name": name, "id": image.id, "layers": list(image.attrs["RootFS"]["Layers"]), "base_digest": base_digest,
            "packages": installed, "recipe_sha256": recipe_sha256,
            "seconds": {"docker_build": round(time.monotonic() - started, 1)}}
