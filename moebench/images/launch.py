"""`--in-image`: run an invoke task of the kit inside the device's pinned toolchain image.

The image holds the toolchain only; the launcher mounts the kit's checkout at /moebench (so
builds happen under one fixed path wherever a lab cloned the kit), the kit's work directory and
models, and the run's data/ and results/ directories. It reads the image ID from the engine and
passes it in as MOEBENCH_IMAGE_DIGEST: provenance stamps it on every record, and `verify`
inside refuses to go on when it is not the lock's. The launcher refuses first, before the
container starts, so a mismatch costs nothing.

The source and the tokenizer packages are fetched and hash-checked on the host before the
container starts: the image needs no network for a replica run. The container runs as the calling
user (files in the checkout stay the user's), with an init process that forwards Ctrl-C to the kit
and reaps its children, and it is removed on every exit path.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from moebench import paths
from moebench.config import REPO_ROOT, Config
from moebench.errors import ConfigError, UserError
from moebench.images import engine
from moebench.images.archive import KIT_MOUNT
from moebench.images.builder import build_image
from moebench.images.identity import pinned_id, refuse_unless_pinned
from moebench.models.tokenizer_source import fetch_packages
from moebench.pins.source import fetch_source

WORK_MOUNT = "/moebench-work"
MODELS_MOUNT = "/moebench-models"
# Jetson tools are the host's (they talk to its kernel and power rails); the image only mounts them.
JETSON_HOST_FILES = ("/usr/bin/tegrastats", "/usr/sbin/nvpmodel", "/etc/nvpmodel.conf", "/usr/bin/jetson_clocks")


def image_for(cfg: Config, device: str) -> str:
    name = cfg.device(device).image
    if name is None:
        raise ConfigError(cfg.root / "devices.yaml", f"device {device!r} names no toolchain image",
                          "set devices.<device>.image to an image of lock.yaml, or run without --in-image",
                          key=f"devices.{device}.image")
    return name


def pinned_image(cfg: Config, client: Any, name: str) -> Any:
    """The local image `name`, refused unless its ID is the lock's; a rootfs image that is absent is built."""
    spec, pinned = cfg.lock.images[name], pinned_id(cfg, name)
    try:
        image = engine.image_by_tag(client, name)
    except UserError:
        if spec.recipe != "rootfs":
            raise
        # a rootfs image rebuilds bit for bit from the lock, so building it here yields the pinned image
        print(f"image {name} is not in the local engine: building it from lock.yaml", flush=True)
        build_image(cfg, name)
        image = engine.image_by_tag(client, name)
    refuse_unless_pinned(name, image.id, pinned)
    return image


def _volumes(raw_dir: Path, output_dir: Path) -> dict[str, dict[str, str]]:
    mounts = {REPO_ROOT: KIT_MOUNT, paths.work_dir(): WORK_MOUNT, paths.models_dir(): MODELS_MOUNT,
              raw_dir: f"{KIT_MOUNT}/data/raw", output_dir: f"{KIT_MOUNT}/results"}
    for host in mounts:
        Path(host).mkdir(parents=True, exist_ok=True)
    return {str(Path(host).resolve()): {"bind": inside, "mode": "rw"} for host, inside in mounts.items()}


def _device_options(cfg: Config, device: str) -> dict[str, Any]:
    """GPUs for CUDA devices; the NVIDIA runtime and the host's Jetson tools for tegrastats devices."""
    from docker.types import DeviceRequest

    dev = cfg.device(device)
    options: dict[str, Any] = {}
    if "tegrastats" in dev.monitors:
        options["runtime"] = "nvidia"
        options["extra_volumes"] = {path: {"bind": path, "mode": "ro"} for path in JETSON_HOST_FILES
                                    if Path(path).exists()}
    elif dev.backend == "cuda":
        options["device_requests"] = [DeviceRequest(count=-1, capabilities=[["gpu"]])]
    return options


def container_environment(name: str, image_id: str) -> dict[str, str]:
    """The kit's environment inside image `name`: the mounts' paths, the image's identity for provenance and
    `verify`, and the caller's MOEBENCH_* settings (a run's knobs, a declared monitor replay)."""
    passed = {key: value for key, value in os.environ.items()
              if key.startswith("MOEBENCH_") and key not in ("MOEBENCH_HOME", "MOEBENCH_MODELS")}
    return {**passed, "MOEBENCH_IMAGE": name, "MOEBENCH_IMAGE_DIGEST": image_id, "MOEBENCH_HOME": WORK_MOUNT,
            "MOEBENCH_MODELS": MODELS_MOUNT, "HOME": "/tmp",
            # the checkout belongs to the host user; git must still read the kit's commit from it
            "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "safe.directory", "GIT_CONFIG_VALUE_0": KIT_MOUNT}


def run_in_image(cfg: Config, device: str, pin: str, task_args: list[str], raw_dir: Path, output_dir: Path) -> int:
    """Run `invoke <task_args>` in the device's image; streams its output, returns its exit code."""
    name = image_for(cfg, device)
    client = engine.connect()
    image = pinned_image(cfg, client, name)
    fetch_source(cfg, pin)
    fetch_packages(cfg)
    options = _device_options(cfg, device)
    volumes = {**_volumes(raw_dir, output_dir), **options.pop("extra_volumes", {})}
    print(f"in image {name} ({image.id}): invoke {' '.join(task_args)}", flush=True)
    return run_container(client, image.id, task_args, volumes, container_environment(name, image.id),
                         user=f"{os.getuid()}:{os.getgid()}", **options)


def run_container(client: Any, image_id: str, task_args: list[str], volumes: dict[str, dict[str, str]],
                  environment: dict[str, str], **options: Any) -> int:
    """`invoke <task_args>` in image `image_id`, its output streamed; returns its exit code. The one way the
    kit runs itself in a container (the launcher, and the aarch64 benchmark with its own mounts)."""
    container = client.containers.run(image_id, command=task_args, detach=True, init=True, volumes=volumes,
                                      environment=environment, working_dir=KIT_MOUNT, **options)
    try:
        for chunk in container.logs(stream=True, follow=True):
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
        return int(container.wait()["StatusCode"])
    except KeyboardInterrupt:
        container.kill(signal="SIGINT")  # the kit stops after the current cell and says how to resume
        for chunk in container.logs(stream=True, follow=True):
            sys.stdout.buffer.write(chunk)
        return int(container.wait(timeout=120)["StatusCode"])
    finally:
        container.remove(force=True)
