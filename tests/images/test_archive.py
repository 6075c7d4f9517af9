"""The image ID is computed from the config before any engine sees it, and the archive is byte-stable."""

from __future__ import annotations

import hashlib
import json
import tarfile

from moebench.images.archive import image_config, image_id, write_archive

SDE = 315532800
LAYERS = [("sha256:" + "a" * 64, "os"), ("sha256:" + "b" * 64, "python")]


def test_config_has_no_build_time_and_its_digest_is_the_id():
    config = image_config("cpu", "amd64", LAYERS, SDE, {"title": "x"}, with_kit_entrypoint=True)
    data = json.loads(config)
    assert data["created"] == "1980-01-01T00:00:00Z"
    assert {entry["created"] for entry in data["history"]} == {"1980-01-01T00:00:00Z"}
    assert data["rootfs"]["diff_ids"] == [digest for digest, _ in LAYERS]
    assert data["config"]["Entrypoint"][-2:] == ["--search-root", "/moebench"]
    assert image_id(config) == "sha256:" + hashlib.sha256(config).hexdigest()
    assert config == image_config("cpu", "amd64", LAYERS, SDE, {"title": "x"}, with_kit_entrypoint=True)
    assert image_id(image_config("cpu", "amd64", LAYERS[:1], SDE, {"title": "x"}, True)) != image_id(config)


def test_archive_is_byte_identical_and_loadable_layout(tmp_path):
    layer = tmp_path / "layer.tar"
    layer.write_bytes(b"\0" * 1024)
    config = image_config("cpu", "amd64", LAYERS[:1], SDE, {}, with_kit_entrypoint=False)
    digests = []
    for name in ("one.tar", "two.tar"):
        write_archive(tmp_path / name, config, [(LAYERS[0][0], layer)], "moebench/cpu:local", SDE)
        digests.append(hashlib.sha256((tmp_path / name).read_bytes()).hexdigest())
    assert digests[0] == digests[1]
    with tarfile.open(tmp_path / "one.tar") as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())
        assert manifest == [{"Config": image_id(config).removeprefix("sha256:") + ".json",
                             "RepoTags": ["moebench/cpu:local"], "Layers": ["a" * 64 + "/layer.tar"]}]
        assert tar.extractfile(manifest[0]["Config"]).read() == config
