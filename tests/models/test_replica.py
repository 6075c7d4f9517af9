"""Tiny replicas of all four models: written, quantized, read back, run in the pinned llama.cpp."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
from pathlib import Path

import pytest

from moebench.config import REPO_ROOT
from moebench.errors import IntegrityError, UserError
from moebench.models import replica
from moebench.models.pinned import load_pinned_gguf, quantize_binary

pytestmark = pytest.mark.slow

PIN = "offline"
DEVICE = "cpu"


@pytest.fixture(scope="module")
def tools(module_cfg):
    """The pinned gguf-py and the pinned build's binaries (built first if this checkout has none)."""
    from moebench.pins.build import binary_path, build

    try:
        binary_path(DEVICE, PIN, "llama-quantize")
    except UserError:  # no build in this checkout yet: make it (minutes)
        build(module_cfg, DEVICE, PIN)
    return {"gguf": load_pinned_gguf(module_cfg, PIN), "quantize": quantize_binary(DEVICE, PIN),
            "cli": Path(binary_path(DEVICE, PIN, "llama-cli")), "bench": Path(binary_path(DEVICE, PIN, "llama-bench"))}


@pytest.fixture(scope="module")
def tiny(module_cfg, tools, tmp_path_factory) -> dict[str, replica.ReplicaResult]:
    out = tmp_path_factory.mktemp("replica-tiny")
    return {m: replica.make_replica(module_cfg, m, "tiny", out, tools["quantize"], pin=PIN, gguf=tools["gguf"])
            for m in module_cfg.models.models}


MODELS = ["olmoe-1b-7b-0924-instruct-q4km", "llama-3.2-1b-instruct-q4km", "qwen2.5-1.5b-instruct-q4km",
          "gemma-2-2b-it-q4km"]


def field(reader, key: str):
    f = reader.fields[key]
    kind = f.types[0].name
    if kind == "STRING":
        return bytes(f.parts[f.data[0]]).decode()
    if kind == "ARRAY":
        return len(f.data)
    return f.parts[f.data[0]][0].item()


def assert_matches_hparams(gguf, path: Path, arch: str, hp) -> None:
    """The GGUF's KV pairs and tensor shapes are those of `hp` (configs/models.yaml)."""
    reader = gguf.GGUFReader(path)
    assert field(reader, "general.architecture") == arch
    assert field(reader, "general.file_type") == gguf.LlamaFileType.MOSTLY_Q4_K_M
    expected = {"block_count": hp.block_count, "embedding_length": hp.embedding_length,
                "feed_forward_length": hp.feed_forward_length, "context_length": hp.context_length,
                "attention.head_count": hp.head_count, "attention.head_count_kv": hp.head_count_kv}
    if hp.expert_count:
        expected |= {"expert_count": hp.expert_count, "expert_used_count": hp.expert_used_count}
    if hp.head_dim:
        expected |= {"attention.key_length": hp.head_dim, "attention.value_length": hp.head_dim}
    if arch == "llama":
        expected |= {"vocab_size": hp.vocab_size, "rope.dimension_count": replica.head_dim(hp)}
    for key, value in expected.items():
        assert field(reader, f"{arch}.{key}") == value, key
    assert field(reader, "tokenizer.ggml.tokens") == hp.vocab_size
    assert field(reader, f"{arch}.rope.freq_base") == pytest.approx(hp.rope_freq_base)
    tensors = {t.name: tuple(int(n) for n in t.shape) for t in reader.tensors}
    planned = {t.name: tuple(reversed(t.shape)) for t in replica.tensor_specs(arch, hp)}
    assert tensors == planned
    if arch == "olmoe":
        assert {f"blk.0.ffn_{x}_exps.weight" for x in ("gate", "up", "down")} <= tensors.keys()
        assert tensors["blk.0.ffn_gate_inp.weight"] == (hp.embedding_length, hp.expert_count)
    if arch == "llama":
        rope_freqs = next(t for t in reader.tensors if t.name == "rope_freqs.weight")
        assert list(rope_freqs.data) == pytest.approx(list(replica.llama3_rope_factors(hp)))
    if arch == "gemma2":
        assert field(reader, "gemma2.attn_logit_softcapping") == pytest.approx(hp.attn_logit_softcapping)
        assert "blk.0.post_ffw_norm.weight" in tensors


@pytest.mark.parametrize("model_id", MODELS)
def test_metadata_and_tensors_match_models_yaml(module_cfg, tools, tiny, model_id):
    spec = module_cfg.models.models[model_id]
    assert_matches_hparams(tools["gguf"], tiny[model_id].path, spec.architecture, spec.tiny_hparams)


def assert_generates(cli: Path, model: Path, timeout_s: int = 120) -> None:
    """Eight greedy tokens after a short prompt in the pinned llama-cli, each one a real eval.

    The prompt is several tokens in every model's tokenizer: llama.cpp counts a one-token batch as
    an eval, so a one-token prompt ("hello" for OLMoE) would add a run to the eval count."""
    argv = [str(cli), "-m", str(model), "-n", "8", "-p", "hello there, how are you", "--temp", "0",
            "--seed", "1", "-t", "2", "--ignore-eos", "-c", "256"]
    done = subprocess.run(argv, capture_output=True, text=True, errors="replace", timeout=timeout_s,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("hello there") and len(done.stdout.strip()) > len("hello there, how are you")
    # The first generated token comes from the prompt's logits; each later one costs one eval run.
    runs = re.search(r"^llama_perf_context_print:\s+eval time =.*/\s*(\d+) runs", done.stderr, re.M)
    assert runs and int(runs.group(1)) + 1 == 8, done.stderr[-2000:]


@pytest.mark.parametrize("model_id", MODELS)
def test_generates_in_llama_cli(tools, tiny, model_id):
    assert_generates(tools["cli"], tiny[model_id].path)


@pytest.mark.parametrize("model_id", MODELS)
def test_runs_in_llama_bench(tools, tiny, model_id, module_cfg):
    argv = [str(tools["bench"]), "-m", str(tiny[model_id].path), "-p", "16", "-n", "8", "-r", "1", "-t", "2",
            "-o", "json"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(done.stdout)
    assert [(r["n_prompt"], r["n_gen"]) for r in rows] == [(16, 0), (0, 8)]
    assert all(r["avg_ts"] > 0 for r in rows)
    assert rows[0]["model_type"].startswith(module_cfg.models.models[model_id].architecture)


@pytest.fixture(scope="module")
def server(module_cfg, tools) -> Path:
    from moebench.pins.build import binary_path

    return Path(binary_path(DEVICE, PIN, "llama-server"))


def test_tokenizers_give_llama_cpps_test_vectors_exactly_and_every_prompt_fits(module_cfg, tiny, server):
    """Every model's replica, through the pinned llama-server, turns each test input into exactly the
    recorded ids (llama.cpp's own vectors, or for Gemma those of Hugging Face tokenizers), and every
    prompt of the study leaves room for the largest n_predict in the 4,096 context."""
    from moebench.run.prompt_tokens import problems, prompt_token_table, vector_files
    from moebench.pins.source import fetch_source

    files = vector_files(module_cfg, fetch_source(module_cfg, PIN, progress=False).path)
    assert set(files) == set(MODELS)
    table = prompt_token_table(module_cfg, {m: r.path for m, r in tiny.items()}, server, vector_files=files)
    assert problems(table) == []
    for model_id in MODELS:
        entry = table["models"][model_id]
        assert entry["test_vectors"]["inputs"] >= 46 and entry["test_vectors"]["mismatches"] == 0, model_id
        assert entry["tokenizer"] == module_cfg.models.models[model_id].tokenizer.statement
        # English prose runs 3.5-5.5 characters a token in these tokenizers (the synthetic ones gave ~2)
        for prompt_id in ("p10_very_long_council_transcript_qa", "p12_very_long_incident_review_summary"):
            cell = entry["prompts"][prompt_id]
            assert 3.5 < cell["characters"] / cell["tokens"] < 5.5, (model_id, prompt_id, cell)
    assert table["largest_n_predict"] == 1024 and table["prompt_token_limit"] == 3072


def test_the_checks_fail_for_another_tokenizer_and_a_smaller_context(module_cfg, tiny, server):
    """Llama's replica against Qwen's vectors mismatches; with a 1,536-token context the long prompts no
    longer fit: both are named by `problems`."""
    from moebench.run.prompt_tokens import problems, prompt_token_table
    from moebench.pins.source import fetch_source

    llama = "llama-3.2-1b-instruct-q4km"
    qwen_vectors = fetch_source(module_cfg, PIN, progress=False).path / "models" / "ggml-vocab-qwen2.gguf"
    small = module_cfg.experiments.model_copy(update={
        "generation": module_cfg.experiments.generation.model_copy(update={"ctx_size": 1536})})
    cfg = dataclasses.replace(module_cfg, experiments=small)
    table = prompt_token_table(cfg, {llama: tiny[llama].path}, server,
                               vector_files={llama: ("llama.cpp models/ggml-vocab-qwen2.gguf", qwen_vectors)})
    failed = problems(table)
    assert table["models"][llama]["test_vectors"]["mismatches"] > 0
    assert any("test vectors of" in line and "ggml-vocab-qwen2.gguf" in line for line in failed)
    assert any("p12_very_long_incident_review_summary is" in line and "over the 512" in line for line in failed)
    assert table["models"][llama]["prompts"]["p01_short_fact"]["fits"]


def test_same_inputs_same_bytes_for_any_thread_count(module_cfg, tools, tiny, tmp_path):
    for model_id, first in tiny.items():
        again = replica.make_replica(module_cfg, model_id, "tiny", tmp_path, tools["quantize"], pin=PIN,
                                     gguf=tools["gguf"], threads=1)
        assert (again.sha256, again.f16_sha256, again.size_bytes) == (first.sha256, first.f16_sha256,
                                                                       first.size_bytes), model_id
    assert not list(tmp_path.glob("*.F16.gguf")) and not list(tmp_path.glob(".*"))


def test_generated_replicas_match_the_lock(module_cfg, tiny):
    pins = module_cfg.lock.replicas.get(f"tiny/{PIN}", {})
    for model_id, result in tiny.items():
        if model_id in pins:
            assert result.sha256 == pins[model_id], model_id


def _with_pins(cfg, pins: dict[str, str]):
    lock = cfg.lock.model_copy(update={"replicas": {**cfg.lock.replicas, f"tiny/{PIN}": pins}})
    return dataclasses.replace(cfg, lock=lock)


def test_make_replicas_skips_pinned_files_and_refuses_a_mismatch(module_cfg, tools, tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("MOEBENCH_MODELS", str(tmp_path))
    model_id = "llama-3.2-1b-instruct-q4km"
    good = tiny[model_id].sha256
    cfg = _with_pins(module_cfg, {model_id: good})
    made = replica.make_replicas(cfg, "tiny", pin=PIN, models=[model_id], device=DEVICE)
    target = tmp_path / "replica-tiny" / f"{model_id}.Q4_K_M.gguf"
    assert [(r.path, r.sha256, r.reused) for r in made] == [(target, good, False)]
    again = replica.make_replicas(cfg, "tiny", pin=PIN, models=[model_id], device=DEVICE)
    assert again[0].reused and again[0].f16_sha256 == tiny[model_id].f16_sha256

    wrong = "0" * 64
    with pytest.raises(IntegrityError) as caught:
        replica.make_replicas(_with_pins(module_cfg, {model_id: wrong}), "tiny", pin=PIN, models=[model_id],
                              device=DEVICE)
    message = caught.value.one_line()
    assert good in message and wrong in message and model_id in message
    assert target.is_file() and replica.sha256_file(target) == good  # the existing file is left as it was


def test_replicas_written_at_once_are_the_locked_files(module_cfg, tools, tmp_path, monkeypatch):
    """All four tiny replicas, four at a time: the lock's hashes (a mismatch raises), in the order asked,
    and nothing left in .incoming; the stale list is empty afterwards."""
    monkeypatch.setenv("MOEBENCH_MODELS", str(tmp_path))
    models = list(module_cfg.models.models)
    assert replica.stale_replicas(module_cfg, "tiny", PIN, models) == models
    made = replica.make_replicas(module_cfg, "tiny", pin=PIN, models=models, device=DEVICE, jobs=4)
    assert [r.model_id for r in made] == models and not any(r.reused for r in made)
    assert [r.sha256 for r in made] == [module_cfg.lock.replicas[f"tiny/{PIN}"][m] for m in models]
    assert not (tmp_path / "replica-tiny" / ".incoming").exists()
    assert replica.stale_replicas(module_cfg, "tiny", PIN, models) == []


# --- full scale: the replicas `invoke models.replica --scale full` wrote (minutes and GBs to make, so
# these check the files in models/replica-full and skip a model that has none) -----------------------

# Q4_K_M picks its per-tensor types from names and shapes, so a replica of the real architecture is
# the real file's size give or take the tokenizer metadata.
REAL_SIZE_TOLERANCE = 0.01
# Where models.yaml has no hub size yet (no hub access), the real files' byte counts with their sources.
REPLICA_SIZES = REPO_ROOT / "benchmarks" / "results" / "replica_sizes.json"


def real_file_bytes(cfg, model_id: str) -> int:
    hub = cfg.models.models[model_id].hub.size_bytes
    if hub is not None:
        return hub
    recorded = {m["model"]: m["real_file"]["bytes"] for m in json.loads(REPLICA_SIZES.read_text())["models"]}
    assert model_id in recorded, f"{REPLICA_SIZES} has no real file size for {model_id}"
    return recorded[model_id]


def full_replica(model_id: str) -> Path:
    path = replica.replica_dir("full") / replica.replica_filename(model_id)
    if not path.is_file():
        pytest.skip(f"no full replica at {path} (invoke models.replica --scale full --models {model_id})")
    return path


@pytest.mark.parametrize("model_id", MODELS)
def test_full_replica_matches_models_yaml(module_cfg, tools, model_id):
    spec = module_cfg.models.models[model_id]
    assert_matches_hparams(tools["gguf"], full_replica(model_id), spec.architecture, spec.hparams)


@pytest.mark.parametrize("model_id", MODELS)
def test_full_replica_is_the_real_files_size(module_cfg, model_id):
    path, real = full_replica(model_id), real_file_bytes(module_cfg, model_id)
    assert abs(path.stat().st_size / real - 1) < REAL_SIZE_TOLERANCE


@pytest.mark.parametrize("model_id", MODELS)
def test_full_replica_generates_in_llama_cli(tools, model_id):
    assert_generates(tools["cli"], full_replica(model_id), timeout_s=600)
