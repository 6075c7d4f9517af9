"""The greedy chain (the harness benchmark's ablation) decodes exactly the tokens of llama.cpp's
default chain, which the harness runs, so the ablation compares the same output; and it reaches
llama-cli as asked."""

from __future__ import annotations

import subprocess

import pytest

from moebench.run.engines import cli_args
from moebench.run.plan import Knobs

pytestmark = pytest.mark.slow

PROMPT = "The quick brown fox jumps over the lazy dog because"


def knobs(temperature: float = 0.0) -> Knobs:
    return Knobs(threads=1, n_predict=48, ctx_size=512, batch_size=512, ubatch_size=512, n_gpu_layers=0, seed=42,
                 temperature=temperature, ignore_eos=True)


@pytest.mark.parametrize("model_id", ["llama-3.2-1b-instruct-q4km", "olmoe-1b-7b-0924-instruct-q4km"])
def test_greedy_chain_decodes_the_default_chains_tokens(pinned_bin_dir, tiny_replica_paths, tmp_path, model_id):
    prompt = tmp_path / "prompt.txt"
    prompt.write_text(PROMPT)
    texts = {}
    for chain in ("greedy", "default"):
        args = cli_args(pinned_bin_dir / "llama-cli", tiny_replica_paths[model_id], prompt, knobs(), chain)
        assert ("--samplers" in args) == (chain == "greedy")
        done = subprocess.run(args, capture_output=True, timeout=300, stdin=subprocess.DEVNULL)
        stderr = done.stderr.decode(errors="replace")
        assert done.returncode == 0, stderr[-2000:]
        assert ("sampler chain: logits -> logit-bias -> top-k -> dist" in stderr) == (chain == "greedy")
        texts[chain] = done.stdout  # bytes: random replica weights need not decode to valid UTF-8
    assert texts["greedy"] == texts["default"] and len(texts["greedy"]) > 16


def test_a_sampling_temperature_keeps_the_default_chain(pinned_bin_dir, tiny_replica_paths, tmp_path):
    args = cli_args(pinned_bin_dir / "llama-cli", tiny_replica_paths["llama-3.2-1b-instruct-q4km"],
                    tmp_path / "p.txt", knobs(temperature=0.8), "greedy")
    assert "--samplers" not in args
