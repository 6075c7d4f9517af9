"""The container engine, through the Docker Engine API (the `docker` package).

Every engine call goes through here so that the ways it fails (no engine, an image that is not
there, a full disk) reach the user as one line that says what to do. Podman's Docker-compatible
socket answers the same API: point DOCKER_HOST at it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from moebench.errors import UserError

ENGINE = "container engine"
ENGINE_FIX = ("start one: `sudo dockerd &` or `sudo systemctl start docker` (Debian: apt-get install docker.io), "
              "or podman's socket (`systemctl --user start podman.socket`) with DOCKER_HOST pointing at it")


def local_tag(name: str) -> str:
    """The tag a kit-built image carries in the local engine."""
    return f"moebench/{name}:local"


def connect() -> Any:
    """A client of a running engine; UserError when there is none."""
    try:
        import docker
        from docker.errors import DockerException
    except ImportError:
        raise UserError("docker", "the `docker` Python package is missing", "run scripts/bootstrap.sh") from None
    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except DockerException as exc:
        raise UserError(ENGINE, f"no engine answers ({_short(exc)})", ENGINE_FIX) from None
    return client


def _short(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) < 200 else text[:200] + "..."


def disk_full(message: str) -> bool:
    """Whether the engine's message says its disk is full (it reports that as text, not as an errno)."""
    return "no space left on device" in message.lower()


def load_archive(client: Any, archive: Path) -> str:
    """`docker load` the archive; returns the ID the engine gives the image."""
    from docker.errors import APIError

    try:
        with open(archive, "rb") as handle:
            images = client.images.load(handle)
    except APIError as exc:
        if disk_full(str(exc)):
            raise UserError(archive, "the engine ran out of disk space loading the image",
                            "free space where the engine keeps images (docker system prune), then build again") from None
        raise UserError(archive, f"the engine refused the image archive ({_short(exc)})",
                        "delete the archive and build again") from None
    return images[0].id


def image_by_tag(client: Any, name: str) -> Any:
    """The locally built image `name`; UserError when the engine has none."""
    from docker.errors import ImageNotFound

    try:
        return client.images.get(local_tag(name))
    except ImageNotFound:
        raise UserError(local_tag(name), f"image {name!r} is not in the local engine",
                        f"run: invoke image.build --image {name}") from None


def image_by_id(client: Any, image_id: str, what: str) -> Any:
    from docker.errors import ImageNotFound

    try:
        return client.images.get(image_id)
    except ImageNotFound:
        raise UserError(what, f"image {image_id} is not in the local engine",
                        f"build it first: invoke image.build --image {what}") from None
