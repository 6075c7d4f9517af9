"""Memory-bandwidth roofline of decoding: bytes read per generated token, and the tok/s bound they imply.

Decoding one token reads every weight the token uses once plus the KV cache of the context so far.
For a MoE only `expert_used_count / expert_count` of the expert FFN tensors are read per token (the
bound that sparsity promises); all weights is the bound if every expert is touched. The token
embedding contributes one row per token unless it is tied to the output projection, in which case the
whole matrix is read by the output layer. KV reads assume llama.cpp's default F16 cache.

Weight bytes come from the model's GGUF tensor table (the pinned gguf-py) when the file and gguf-py
are available, else from the file size scaled by params_active / params_total of models.yaml; the
`weight_bytes_method` column says which.
"""

from __future__ import annotations

import functools
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from moebench.config import Bandwidth, HyperParams, ModelSpec

KV_BYTES_PER_ELEMENT = 2  # F16, llama.cpp's default --cache-type-k/-v
EXPERT_TENSOR_MARKER = "_exps."
METHOD_GGUF = "gguf tensor table (pinned gguf-py)"
METHOD_FRACTION = "file size x params_active/params_total (models.yaml)"


@dataclass(frozen=True)
class WeightBytes:
    total: int
    active: int
    method: str
    note: str | None = None


def head_dim(hp: HyperParams) -> int:
    return hp.head_dim or hp.embedding_length // hp.head_count


def kv_bytes_per_token_of_context(hp: HyperParams, context_tokens: float) -> float:
    """KV-cache bytes read to decode one token with `context_tokens` already in the cache.

    layers x kv_heads x head_dim x 2 (K and V) x bytes per element x tokens; Gemma-2's sliding-window
    layers (every other one) read at most `sliding_window` tokens.
    """
    per_token_per_layer = hp.head_count_kv * head_dim(hp) * 2 * KV_BYTES_PER_ELEMENT
    if hp.sliding_window:
        local_layers = hp.block_count // 2
        global_layers = hp.block_count - local_layers
        tokens = global_layers * context_tokens + local_layers * min(context_tokens, hp.sliding_window)
        return per_token_per_layer * tokens
    return per_token_per_layer * hp.block_count * context_tokens


# --- weight bytes ---------------------------------------------------------------------------

def find_gguf_py() -> ModuleType | None:
    """The pinned llama.cpp's gguf-py if it can be found without fetching anything, else None."""
    from moebench.models.pinned import import_gguf_from

    for directory in _gguf_py_candidates():
        if (directory / "gguf" / "__init__.py").is_file():
            try:
                return import_gguf_from(directory)
            except Exception:  # a broken tree is one candidate less, not an analysis failure
                continue
    loaded = sys.modules.get("gguf")
    return loaded if loaded is not None and hasattr(loaded, "GGUFReader") else None


def _gguf_py_candidates() -> list[Path]:
    explicit = os.environ.get("MOEBENCH_GGUF_PY")
    candidates = [Path(explicit)] if explicit else []
    try:
        from moebench.paths import sources_dir

        root = sources_dir()
        if root.is_dir():
            candidates += sorted(root.glob("*/gguf-py")) + sorted(root.glob("*/*/gguf-py"))
    except ImportError:
        pass
    return candidates


def weight_bytes_from_gguf(gguf: ModuleType, path: Path) -> tuple[int, int]:
    """(total tensor bytes, bytes read per token) from the GGUF's tensor table; a file is read once
    per size and modification time, since GGUFReader parses the whole vocabulary (seconds for a
    256k-token tokenizer) and an analysis asks once per cell."""
    stat = path.stat()
    return _weight_bytes_of_file(gguf, str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _weight_bytes_of_file(gguf: ModuleType, path: str, size: int, mtime_ns: int) -> tuple[int, int]:
    """size and mtime_ns only key the cache: a rewritten file is read again."""
    reader = gguf.GGUFReader(path, "r")
    tensors = {t.name: int(t.n_bytes) for t in reader.tensors}
    expert_count = _field_int(reader, "expert_count")
    expert_used = _field_int(reader, "expert_used_count")
    tied = "output.weight" not in tensors
    active = 0.0
    for name, n_bytes in tensors.items():
        if EXPERT_TENSOR_MARKER in name and expert_count and expert_used:
            active += n_bytes * expert_used / expert_count
        elif name == "token_embd.weight" and not tied:
            rows = _tensor_rows(reader, name)
            active += n_bytes / rows if rows else n_bytes
        else:
            active += n_bytes
    return sum(tensors.values()), int(round(active))


def _field_int(reader: Any, suffix: str) -> int | None:
    for name, field in reader.fields.items():
        if name.endswith("." + suffix):
            return int(field.parts[field.data[0]][0])
    return None


def _tensor_rows(reader: Any, name: str) -> int | None:
    tensor = next(t for t in reader.tensors if t.name == name)
    shape = [int(s) for s in tensor.shape]
    return shape[1] if len(shape) > 1 else None


def weight_bytes(spec: ModelSpec, model_path: Path | None, file_bytes: int | None,
                 gguf: ModuleType | None) -> WeightBytes | None:
    """Total and per-token weight bytes by the best method available; None when neither works."""
    if model_path is not None and model_path.is_file() and gguf is not None:
        total, active = weight_bytes_from_gguf(gguf, model_path)
        return WeightBytes(total, active, METHOD_GGUF)
    if file_bytes is None and model_path is not None and model_path.is_file():
        file_bytes = model_path.stat().st_size
    if file_bytes is None:
        return None
    why = ("model file not present here" if model_path is None or not model_path.is_file()
           else "the pinned gguf-py was not found (set MOEBENCH_GGUF_PY or fetch the source)")
    active = int(round(file_bytes * spec.params_active / spec.params_total))
    return WeightBytes(file_bytes, active, METHOD_FRACTION, note=why)


# --- the bound --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Roofline:
    weight_bytes_total: int
    weight_bytes_active: int
    weight_bytes_method: str
    mean_context_tokens: float
    kv_bytes_per_token: float
    bytes_per_token_active: float
    bytes_per_token_all_weights: float
    bandwidth_gb_per_s: float | None
    bandwidth_source: str
    bound_tok_s_active: float | None
    bound_tok_s_all_weights: float | None
    measured_gen_tok_s: float | None
    fraction_of_active_bound: float | None
    fraction_of_all_weights_bound: float | None
    note: str | None


def roofline(hp: HyperParams, weights: WeightBytes, mean_context_tokens: float, bandwidth: Bandwidth,
             measured_gen_tok_s: float | None) -> Roofline:
    kv = kv_bytes_per_token_of_context(hp, mean_context_tokens)
    per_token_active = weights.active + kv
    per_token_all = weights.total + kv
    notes = [weights.note] if weights.note else []
    if bandwidth.gb_per_s is None:
        bound_active = bound_all = None
        notes.append(f"no bandwidth figure: {bandwidth.source}")
    else:
        bound_active = bandwidth.gb_per_s * 1e9 / per_token_active
        bound_all = bandwidth.gb_per_s * 1e9 / per_token_all
    if measured_gen_tok_s is None:
        notes.append("no measured gen tok/s")
    fraction = lambda bound: (measured_gen_tok_s / bound  # noqa: E731
                              if bound is not None and measured_gen_tok_s is not None else None)
    return Roofline(
        weight_bytes_total=weights.total, weight_bytes_active=weights.active,
        weight_bytes_method=weights.method, mean_context_tokens=mean_context_tokens, kv_bytes_per_token=kv,
        bytes_per_token_active=per_token_active, bytes_per_token_all_weights=per_token_all,
        bandwidth_gb_per_s=bandwidth.gb_per_s, bandwidth_source=bandwidth.source,
        bound_tok_s_active=bound_active, bound_tok_s_all_weights=bound_all,
        measured_gen_tok_s=measured_gen_tok_s, fraction_of_active_bound=fraction(bound_active),
        fraction_of_all_weights_bound=fraction(bound_all), note="; ".join(notes) or None)
