"""The config layer: the shipped configs load, and each kind of bad input is one clear line, exit 2."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from moebench.config import CONFIG_DIR, REPO_ROOT, load_config
from moebench.errors import EXIT_USER_ERROR, ConfigError


@pytest.fixture
def config_copy(tmp_path: Path) -> Path:
    target = tmp_path / "configs"
    shutil.copytree(CONFIG_DIR, target)
    (tmp_path / "scripts").symlink_to(REPO_ROOT / "scripts")  # device patches are resolved from the kit root
    return target


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"fixture text {old!r} not found in {path.name}"
    path.write_text(text.replace(old, new, 1))


def test_shipped_configs_load_and_cross_reference():
    cfg = load_config()
    assert set(cfg.models.models) == {
        "olmoe-1b-7b-0924-instruct-q4km", "llama-3.2-1b-instruct-q4km",
        "qwen2.5-1.5b-instruct-q4km", "gemma-2-2b-it-q4km"}
    olmoe = cfg.models.models["olmoe-1b-7b-0924-instruct-q4km"]
    assert (olmoe.hparams.expert_count, olmoe.hparams.expert_used_count) == (64, 8)
    assert len(cfg.prompts.prompts) == 12
    exp1 = cfg.experiment("experiment_1_efficiency")
    assert (exp1.models, exp1.prompts, exp1.repetitions) == ("all", "all", 3)
    assert cfg.experiment("experiment_a_cpu_thread_sweep").sweep.threads == (4, 6, 8, 10)
    eager = {"CUDA_MODULE_LOADING": "EAGER"}  # CUDA kernels load at start, not inside a timed prompt
    for name in ("cpu", "cuda", "jetson", "m2"):
        cuda = cfg.device(name).backend == "cuda"
        assert cfg.device(f"{name}_patched").env == {"LLAMA_ROUTER_OVERHEAD": "1", **(eager if cuda else {})}
        assert cfg.device(name).env == (eager if cuda else {})
    # the study's metric is llama-cli's perf footer: every profile runs the cli runner
    assert {d.runner for d in cfg.devices.devices.values()} == {"cli"}
    assert cfg.pin("paper").commit == "0827b2c1da299805288abbd556d869318f2b121e"
    assert cfg.pin("offline").commit == "f7cd13301c2a88f97073fd119072b4cc92c08df1"
    assert set(cfg.file_sha256) == {"lock.yaml", "models.yaml", "prompts.yaml", "devices.yaml",
                                    "experiments.yaml", "reference.yaml"}


@pytest.mark.parametrize("filename, old, new, key, fix", [
    ("devices.yaml", "    threads: 6\n", "    threads: six\n", "devices.jetson.threads", "'physical_cores'"),
    ("experiments.yaml", "  ctx_size: 4096\n", "  ctx_size: 4096\n  colour: red\n", "generation.colour", "remove"),
    ("models.yaml", "      expert_count: 64\n", "", "models.olmoe-1b-7b-0924-instruct-q4km", "expert_count"),
    ("experiments.yaml", "    prompts: [p01_short_fact]\n    repetitions: 1",
     "    prompts: [p99_missing]\n    repetitions: 1", "experiments.smoke.prompts", "p01_short_fact"),
    ("devices.yaml", "    default_pin: offline\n", "    default_pin: nightly\n", "devices.cpu.default_pin", "offline"),
    ("lock.yaml", "commit: f7cd13301c2a88f97073fd119072b4cc92c08df1", "commit: f7cd133", "llama_cpp.offline.commit", None),
    ("devices.yaml", "    backend: cpu\n", "", "devices.cpu.backend", "add the key"),
    ("devices.yaml", "      offline: scripts/patches/router_overhead.patch\n      paper:",
     "      nightly: scripts/patches/router_overhead.patch\n      paper:", "devices.cpu_patched.patches", "offline"),
    ("devices.yaml", "      paper: scripts/patches/router_overhead_b4404.patch\n    env: {LLAMA_ROUTER_OVERHEAD: \"1\"}\n"
                     "  cuda_patched:", "      paper: scripts/patches/missing.patch\n    env: {LLAMA_ROUTER_OVERHEAD: \"1\"}\n"
                     "  cuda_patched:", "devices.cpu_patched.patches.paper", "relative to the kit's root"),
    ("devices.yaml", "  cpu_patched:\n    runner: cli  # its patch instruments llama-cli\n",
     "  cpu_patched:\n    runner: server\n", "devices.cpu_patched", None),
    ("devices.yaml", "  cpu_patched:\n    runner: cli  # its patch instruments llama-cli\n",
     "  cpu_patched:\n    runner: http\n", "devices.cpu_patched.runner", None),
])
def test_bad_input_names_file_key_and_fix(config_copy, filename, old, new, key, fix):
    edit(config_copy / filename, old, new)
    with pytest.raises(ConfigError) as caught:
        load_config(config_copy)
    message = caught.value.one_line()
    assert "\n" not in message
    assert f"{config_copy / filename}: {key}:" in message
    if fix:
        assert fix in message.split("(fix:")[1]


def test_malformed_yaml_and_missing_file(config_copy):
    (config_copy / "prompts.yaml").write_text("prompts: [unclosed\n")
    with pytest.raises(ConfigError, match=r"prompts.yaml: not valid YAML at line \d"):
        load_config(config_copy)
    (config_copy / "prompts.yaml").unlink()
    with pytest.raises(ConfigError, match="prompts.yaml: file not found"):
        load_config(config_copy)


def test_task_exits_2_with_one_line_on_bad_config(tmp_path):
    kit = tmp_path / "kit"
    shutil.copytree(REPO_ROOT, kit, ignore=shutil.ignore_patterns(".git", ".moebench", "models", ".venv", "data",
                                                                   "results", "__pycache__"))
    edit(kit / "configs" / "devices.yaml", "    threads: 6\n", "    threads: -1\n")
    result = subprocess.run([sys.executable, "-m", "invoke", "verify", "--device", "jetson"], cwd=kit,
                            capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(kit)})
    assert result.returncode == EXIT_USER_ERROR, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "devices.yaml: devices.jetson.threads:" in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_a_patched_device_refuses_a_pin_it_has_no_patch_for(config_copy):
    from moebench.pins.build import _patch_of

    edit(config_copy / "devices.yaml", "      paper: scripts/patches/router_overhead_b4404.patch\n    env: "
                                       "{LLAMA_ROUTER_OVERHEAD: \"1\"}\n  cuda_patched:",
         "    env: {LLAMA_ROUTER_OVERHEAD: \"1\"}\n  cuda_patched:")
    cfg = load_config(config_copy)
    assert _patch_of(cfg, cfg.device("cpu_patched"), "offline")[0].name == "router_overhead.patch"
    assert _patch_of(cfg, cfg.device("cpu"), "paper") == (None, None)
    with pytest.raises(ConfigError) as caught:
        _patch_of(cfg, cfg.device("cpu_patched"), "paper")
    assert "cpu_patched has no router-overhead patch for pin 'paper'" in caught.value.one_line()
    assert "build it at offline" in caught.value.one_line()
