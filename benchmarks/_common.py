"""Shared by the harness benchmarks: cells run straight through moebench.run.engines and monitors."""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from moebench.run import engines
from moebench.hashing import sha256_file
from moebench.run.monitors import create_monitors
from moebench.run.plan import Cell, Knobs, cell_key

RESULTS = Path(__file__).resolve().parent / "results"
PROMPT = ("Explain, step by step, how a compiler turns source code into machine code, and why an "
          "optimizing compiler may reorder instructions.")


def args(description: str, simple_bin: bool = False, prompt_id: bool = False) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--bin-dir", type=Path, required=True, help="directory with llama-cli, llama-server, llama-bench")
    parser.add_argument("--model", type=Path, required=True, help="GGUF model (a tiny replica for a quick run)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n-predict", type=int, default=128)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--ngl", type=int, default=0, help="layers offloaded to the GPU (999: all)")
    parser.add_argument("--label", default="", help="suffix of the results file, e.g. the device")
    if simple_bin:
        parser.add_argument("--simple-bin", type=Path, help="llama-simple of the same tree (cmake --build ... "
                                                            "--target llama-simple), measured as a further reference")
    if prompt_id:
        parser.add_argument("--prompt-id", help="a prompt of configs/prompts.yaml instead of the benchmark's own")
    add_quick_and_results_dir(parser, "one repetition of 8 tokens: does the script still run? (its figures "
                                      "mean nothing)")
    a = parser.parse_args()
    if a.quick:
        a.reps, a.n_predict = 1, 8
    return a


def add_quick_and_results_dir(parser: argparse.ArgumentParser, quick_help: str) -> None:
    """--quick and --results-dir, which every benchmark takes: CI runs each script quick, into a
    temporary directory, so that none stops working unnoticed (tests/test_benchmarks.py)."""
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--results-dir", type=Path, default=RESULTS,
                        help="where the results JSON goes (default benchmarks/results)")


def knobs(a: argparse.Namespace, n_predict: int | None = None) -> Knobs:
    return Knobs(threads=a.threads, n_predict=n_predict or a.n_predict, ctx_size=2048, batch_size=2048,
                 ubatch_size=512, n_gpu_layers=a.ngl, seed=42, temperature=0.0, ignore_eos=True)


def cell(k: Knobs, rep: int, prompt_id: str = "bench") -> Cell:
    return Cell(cell_key=cell_key("bench", "model", prompt_id, rep, False, k), experiment="bench",
                model_id="model", prompt_id=prompt_id, prompt_length_class="medium", repetition=rep,
                is_warmup=False, knobs=k)


def run_cells(mode: str, a: argparse.Namespace, cells: list[Cell], monitor_names: tuple[str, ...] = ("psutil",),
              prompt: str = PROMPT) -> tuple[list[engines.Outcome], float]:
    """Outcomes of `cells` in one engine, and the wall time of the whole batch (server start included)."""
    monitors = create_monitors(monitor_names)
    hooks = engines.MonitorHooks(start=lambda pid: [m.start(pid) for m in monitors],
                                 stop=lambda: [m.stop() for m in monitors])
    outcomes = []
    with tempfile.TemporaryDirectory() as work:
        engine = engines.ENGINES[mode](a.bin_dir / engines.BINARY_FOR_MODE[mode], Path(work), 600.0)
        started = time.monotonic()
        try:
            for c in cells:
                outcome = engine.run_cell(c, a.model, prompt, hooks)
                if outcome.failure:
                    raise RuntimeError(f"{mode} cell failed: {outcome.failure}")
                outcomes.append(outcome)
        finally:
            engine.close()
        wall = time.monotonic() - started
    return outcomes, wall


def rates(outcomes: list[engines.Outcome]) -> dict[str, list[float]]:
    """The rates the runner has: the study's (llama-cli's counters) and/or the end-to-end ones
    (llama-server's slot timers, `e2e_*`), each under its own name, never one for the other."""
    m = [o.measured for o in outcomes]
    out: dict[str, list[float]] = {}
    for prefix in ("", "e2e_"):
        if all(x.get(f"{prefix}gen_ms") for x in m):
            out[f"{prefix}gen_tokens_per_s"] = [x["gen_tokens"] * 1000 / x[f"{prefix}gen_ms"] for x in m]
        if all(x.get(f"{prefix}prefill_ms") for x in m):
            out[f"{prefix}prefill_tokens_per_s"] = [x["prompt_tokens"] * 1000 / x[f"{prefix}prefill_ms"] for x in m]
    return out


def stats(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "mean": statistics.fmean(values),
            "stddev": statistics.stdev(values) if len(values) > 1 else 0.0}


def write(name: str, a: argparse.Namespace, body: dict[str, Any]) -> Path:
    a.results_dir.mkdir(parents=True, exist_ok=True)
    out = a.results_dir / f"{name}{'_' + a.label if a.label else ''}.json"
    meta = {"model": str(a.model), "model_sha256": sha256_file(a.model), "bin_dir": str(a.bin_dir),
            "llama_cli_sha256": sha256_file(a.bin_dir / "llama-cli"), "threads": a.threads,
            "n_predict": a.n_predict, "reps": a.reps, "n_gpu_layers": a.ngl, "quick": a.quick,
            "host": platform.platform(),
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    out.write_text(json.dumps({"benchmark": name, "meta": meta, **body}, indent=2) + "\n")
    print(json.dumps(body, indent=2))
    return out
