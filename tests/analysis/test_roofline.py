"""roofline.py: KV and weight bytes per token, the bandwidth bound, on known hyperparameters."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from moebench.analysis import roofline as rl
from moebench.config import Bandwidth, HyperParams

LLAMA_1B = HyperParams(block_count=16, embedding_length=2048, feed_forward_length=8192, head_count=32,
                       head_count_kv=8, head_dim=64, vocab_size=128256, context_length=131072,
                       rope_freq_base=500000.0, rms_norm_eps=1e-5, tied_embeddings=True)


def test_kv_bytes_llama_1b():
    # 16 layers x 8 kv heads x 64 dims x 2 (K,V) x 2 bytes = 32 KiB per token of context
    assert rl.kv_bytes_per_token_of_context(LLAMA_1B, 1.0) == 16 * 8 * 64 * 2 * 2 == 32768
    assert rl.kv_bytes_per_token_of_context(LLAMA_1B, 1000.0) == 32768 * 1000


def test_kv_head_dim_defaults_and_sliding_window():
    hp = LLAMA_1B.model_copy(update={"head_dim": None, "head_count": 16})
    assert rl.head_dim(hp) == 128
    gemma = LLAMA_1B.model_copy(update={"sliding_window": 100, "block_count": 4})
    per_layer = 8 * 64 * 2 * 2
    assert rl.kv_bytes_per_token_of_context(gemma, 300.0) == per_layer * (2 * 300 + 2 * 100)


def test_bound_and_fraction():
    weights = rl.WeightBytes(total=4_000_000_000, active=1_000_000_000, method=rl.METHOD_FRACTION)
    result = rl.roofline(LLAMA_1B, weights, 1000.0, Bandwidth(gb_per_s=68.0, source="datasheet"), 40.0)
    kv = 32768 * 1000
    assert result.bytes_per_token_active == 1_000_000_000 + kv
    assert result.bound_tok_s_active == pytest.approx(68e9 / (1_000_000_000 + kv))
    assert result.bound_tok_s_all_weights == pytest.approx(68e9 / (4_000_000_000 + kv))
    assert result.fraction_of_active_bound == pytest.approx(40.0 / result.bound_tok_s_active)


def test_no_bandwidth_gives_null_with_source_text():
    weights = rl.WeightBytes(total=10, active=5, method=rl.METHOD_FRACTION)
    result = rl.roofline(LLAMA_1B, weights, 10.0, Bandwidth(gb_per_s=None, source="depends on the GPU"), 40.0)
    assert result.bound_tok_s_active is None and result.fraction_of_active_bound is None
    assert "depends on the GPU" in result.note


def test_weight_bytes_fraction_fallback(tmp_path):
    from moebench.config import CONFIG_DIR, Models, parse_section, read_yaml

    models = parse_section(CONFIG_DIR / "models.yaml", read_yaml(CONFIG_DIR / "models.yaml"), Models)
    spec = next(s for s in models.models.values() if s.kind == "moe")
    result = rl.weight_bytes(spec, None, 4_000_000_000, gguf=None)
    assert result.method == rl.METHOD_FRACTION
    assert result.active == round(4_000_000_000 * spec.params_active / spec.params_total)
    assert rl.weight_bytes(spec, None, None, gguf=None) is None


def test_weight_bytes_from_gguf_counts_used_experts(tmp_path):
    gguf = rl.find_gguf_py()
    if gguf is None:
        pytest.skip("the pinned gguf-py is not available (set MOEBENCH_GGUF_PY or fetch the source)")
    path = tmp_path / "moe.gguf"
    writer = gguf.GGUFWriter(str(path), "olmoe")
    writer.add_expert_count(4)
    writer.add_expert_used_count(1)
    tensors = {"token_embd.weight": (10, 8), "output.weight": (10, 8), "blk.0.attn_q.weight": (8, 8),
               "blk.0.ffn_up_exps.weight": (4, 8, 8)}
    for name, shape in tensors.items():
        writer.add_tensor(name, np.ones(shape, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    total, active = rl.weight_bytes_from_gguf(gguf, Path(path))
    f32 = 4
    assert total == (80 + 80 + 64 + 256) * f32
    # embedding: one row of 8; output fully; attention fully; experts 1 of 4
    assert active == (8 + 80 + 64 + 64) * f32


H200_IDENTITY = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "nvml" / "h200_gpu_identity.json").read_text())


def _sm90():
    from moebench.config import load_config
    return load_config().devices.devices["cuda_sm90"]


def test_gpu_bound_follows_the_gpu_the_records_name():
    from moebench.analysis.roofline_table import bandwidth_for
    h200 = bandwidth_for(_sm90(), {"gpu_name": H200_IDENTITY["name"]})
    assert h200.gb_per_s == 4800.0 and "H200" in h200.source
    assert bandwidth_for(_sm90(), {"gpu_name": "NVIDIA H100 80GB HBM3"}).gb_per_s == 3350.0
    # the datasheet figure agrees with the driver's own: 2 transfers per clock x bus width / 8 bits
    driver_gb_per_s = 2 * H200_IDENTITY["max_memory_clock_mhz"] * 1e6 * H200_IDENTITY["memory_bus_width_bits"] / 8 / 1e9
    assert driver_gb_per_s == pytest.approx(h200.gb_per_s, rel=0.01)


def test_an_unlisted_gpu_or_no_gpu_name_gets_no_bound_never_another_gpus():
    from moebench.analysis.roofline_table import bandwidth_for
    unknown = bandwidth_for(_sm90(), {"gpu_name": "NVIDIA A100-SXM4-80GB", "host_gb_per_s": 71.6, "host_gb_per_s_n": 5})
    assert unknown.gb_per_s is None
    assert "'NVIDIA A100-SXM4-80GB'" in unknown.source and "NVIDIA H200" in unknown.source
    unnamed = bandwidth_for(_sm90(), {"gpu_name": None, "host_gb_per_s": 71.6, "host_gb_per_s_n": 5})
    assert unnamed.gb_per_s is None and "NVML" in unnamed.source  # host memory is not the GPU's
