"""(a) Does the harness report the throughput llama-bench reports for the same binary build, model,
token counts and threads? And where a runner differs, which suspect holds the gap? An ablation in one
interleaved run: each variant switches one thing off or on against the kit's runner as it runs, and
every variant is measured against the same llama-bench reference.

Rates compared: for llama-cli its perf footer (llama.cpp's prompt-only and decode-only counters, the
study's metric, `gen_tokens_per_s` / `prefill_tokens_per_s` in records); for llama-server its slot
timers, which hold sampling and serving too (`e2e_*` in records), since it has no other.

Variants (GPU-only ones are left out on a CPU run):
- cli: the kit's runner as it runs (llama.cpp's default sampler chain at temperature 0);
- cli, greedy sampler chain (top_k 1): sampling's share;
- cli --no-warmup: llama-cli's own warm-up decode before the prompt;
- cli, context = 512 (llama-bench sizes its context to prompt + generation; the kit uses 2048 here);
- cli, -ub 2048 (one micro-batch of 2048 instead of 512; the prompt is far shorter than either);
- cli, CUDA_MODULE_LOADING=EAGER: kernels loaded at start instead of at their first launch (CUDA);
- cli, GGML_CUDA_DISABLE_GRAPHS=1: CUDA graphs off (CUDA; llama-bench is also run so, as a second
  reference, to tell a graph effect on both from one on llama-cli alone);
- server (streamed), server greedy, server not streamed: the serving path's share;
- llama-simple (with --simple-bin: examples/simple of the same tree, kernels loaded eagerly): the
  bare decode-then-sample loop of the library (greedy, no common layer, no console, no warm-up): tells
  a remainder in llama-cli's own per-token path from one that any application sampling between
  decodes pays. It stops at an end-of-generation token, so its decode count is reported with it.

llama-bench's tg test times n decodes; gen_tokens counts decode steps (n_predict - 1), so llama-bench
runs with -n gen_tokens and -p the harness's own prompt token count. Runs alternate between the
variants and llama-bench rep by rep (one engine per variant, started once, its first cell a warm-up;
llama-bench -r 1 after its own warm-up), so a drift of the machine spreads over all of them.
"""

from __future__ import annotations

import dataclasses
import os
import random
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from _common import PROMPT, args, cell, knobs, rates, stats, write

from moebench.run import engines, parse
from moebench.config import load_config
from moebench.hashing import sha256_file
from moebench.run.monitors import create_monitors
from moebench.run.plan import Knobs

GRAPHS_OFF = {"GGML_CUDA_DISABLE_GRAPHS": "1"}
ORDER_SEED = 20261203


@dataclass(frozen=True)
class Variant:
    name: str
    runner: str
    suspect: str
    chain: str = "default"
    env: dict[str, str] = field(default_factory=dict)
    cli_args: tuple[str, ...] = ()
    knobs: dict[str, int] = field(default_factory=dict)
    stream: bool = True
    gpu_only: bool = False
    reference: str = "default"   # which llama-bench run it is compared with


VARIANTS = (
    Variant("cli", "cli", "none: the kit's runner as it runs"),
    Variant("cli greedy", "cli", "sampler chain (llama.cpp's default chain -> top_k 1)", chain="greedy"),
    Variant("cli no-warmup", "cli", "llama-cli's warm-up decode", cli_args=("--no-warmup",)),
    Variant("cli ctx 512", "cli", "context size (2048 -> 512, about llama-bench's)", knobs={"ctx_size": 512}),
    Variant("cli ubatch 2048", "cli", "micro-batch size (512 -> 2048)", knobs={"ubatch_size": 2048}),
    Variant("cli eager modules", "cli", "CUDA lazy module loading (first launch of each kernel)",
            env={"CUDA_MODULE_LOADING": "EAGER"}, gpu_only=True),
    Variant("cli eager greedy", "cli", "eager module loading and the top_k 1 chain together",
            chain="greedy", env={"CUDA_MODULE_LOADING": "EAGER"}, gpu_only=True),
    Variant("cli graphs off", "cli", "CUDA graphs (compared with llama-bench, graphs off too)", env=GRAPHS_OFF,
            gpu_only=True, reference="graphs_off"),
    Variant("server", "server", "serving path: HTTP, streaming, the server loop, sampling"),
    Variant("server greedy", "server", "serving path with the top_k 1 chain", chain="greedy"),
    Variant("server no-stream", "server", "streaming (one JSON answer instead)", stream=False),
)


def llama_bench(a, k: Knobs, n_prompt: int, n_gen: int, env: dict[str, str]) -> tuple[list[str], float, float]:
    """One llama-bench pass (-r 1, after its own warm-up): (argv, pp tok/s, tg tok/s)."""
    argv = [str(a.bin_dir / "llama-bench"), "-m", str(a.model), "-p", str(n_prompt), "-n", str(n_gen),
            "-t", str(a.threads), "-b", str(k.batch_size), "-ub", str(k.ubatch_size), "-ngl", str(a.ngl),
            "-r", "1", "-o", "json"]
    done = subprocess.run(argv, capture_output=True, text=True, check=True, env={**os.environ, **env})
    rows = parse.parse_llama_bench_json(done.stdout)
    pp = next(r for r in rows if r.n_prompt and not r.n_gen)
    tg = next(r for r in rows if r.n_gen and not r.n_prompt)
    return argv, pp.avg_tokens_per_s, tg.avg_tokens_per_s


def prompt_text(a) -> str:
    """The benchmark's own short prompt, or one of configs/prompts.yaml (--prompt-id): the batched
    path's one-off costs weigh on a 27-token prefill and vanish on a 2,000-token one."""
    if not a.prompt_id:
        return PROMPT
    return load_config().prompt(a.prompt_id).text


def llama_simple(a, n_gen: int) -> tuple[list[str], dict[str, float]]:
    """One llama-simple run (greedy, its context sized to the prompt + generation): (argv, rates)."""
    argv = [str(a.simple_bin), "-m", str(a.model), "-n", str(n_gen + 1), "-ngl", str(a.ngl), a.prompt]
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, errors="replace",
                          check=True, env={**os.environ, "CUDA_MODULE_LOADING": "EAGER"})  # the text is not UTF-8
    perf = parse.parse_cli_perf(done.stderr)
    return argv, {"gen_tokens_per_s": perf.gen_tokens * 1000 / perf.gen_ms,
                  "prefill_tokens_per_s": perf.prompt_tokens * 1000 / perf.prompt_ms,
                  "gen_tokens": perf.gen_tokens, "prompt_tokens": perf.prompt_tokens}


def make_engine(variant: Variant, a, work: Path) -> engines.Engine:
    engine_type = engines.ENGINES[variant.runner]
    engine = engine_type(a.bin_dir / engines.BINARY_FOR_MODE[variant.runner], work, 600.0,
                         env=variant.env or None, sampler_chain=variant.chain)  # the engine adds os.environ
    if isinstance(engine, engines.CliEngine):
        engine.extra_args = variant.cli_args
    if isinstance(engine, engines.ServerEngine):
        engine.stream = variant.stream
    return engine


def interleaved(a, k: Knobs, variants: tuple[Variant, ...], references: dict[str, dict[str, str]]):
    """Every variant's outcomes and each llama-bench reference's pp/tg, measured rep by rep in turn."""
    monitors = create_monitors(("psutil",))
    hooks = engines.MonitorHooks(start=lambda pid: [m.start(pid) for m in monitors],
                                 stop=lambda: [m.stop() for m in monitors])
    results: dict[str, list[engines.Outcome]] = {v.name: [] for v in variants}
    reference = {name: {"pp_tokens_per_s": [], "tg_tokens_per_s": [], "argv": []} for name in references}
    simple: dict[str, list] = {"argv": [], "runs": []}
    with tempfile.TemporaryDirectory() as work:
        running = []
        for i, variant in enumerate(variants):   # each engine's own directory (a server writes its key there)
            (Path(work) / str(i)).mkdir()
            running.append((variant, make_engine(variant, a, Path(work) / str(i))))
        order = random.Random(ORDER_SEED)
        try:
            for rep in range(a.reps + 1):
                if rep:
                    order.shuffle(running)
                for variant, engine in running:
                    vk = dataclasses.replace(k, **variant.knobs)
                    outcome = engine.run_cell(cell(vk, rep), a.model, a.prompt, hooks)
                    if outcome.failure:
                        raise RuntimeError(f"{variant.name} cell failed: {outcome.failure}")
                    if rep:
                        results[variant.name].append(outcome)
                if rep:
                    measured = results["cli"][0].measured
                    for name, env in references.items():
                        argv, pp, tg = llama_bench(a, k, measured["prompt_tokens"], measured["gen_tokens"], env)
                        reference[name]["argv"] = argv
                        reference[name]["pp_tokens_per_s"].append(pp)
                        reference[name]["tg_tokens_per_s"].append(tg)
                    if a.simple_bin:
                        simple["argv"], run = llama_simple(a, measured["gen_tokens"])
                        simple["runs"].append(run)
        finally:
            for _, engine in running:
                engine.close()
    return results, reference, simple


def main() -> None:
    a = args(__doc__, simple_bin=True, prompt_id=True)
    a.prompt = prompt_text(a)
    k = knobs(a)
    gpu = a.ngl > 0
    variants = tuple(v for v in VARIANTS if gpu or not v.gpu_only)
    if a.prompt_id:   # a study prompt needs the study's context; a smaller one cannot hold it
        k = dataclasses.replace(k, ctx_size=4096)
        variants = tuple(v for v in variants if "ctx_size" not in v.knobs)
    references = {"default": {}, **({"graphs_off": GRAPHS_OFF} if gpu else {})}
    outcomes, reference, simple = interleaved(a, k, variants, references)
    body: dict = {"prompt": a.prompt_id or "the benchmark's own (benchmarks/_common.py PROMPT)", "order": f"variants shuffled each rep (random.Random({ORDER_SEED})), llama-bench after them",
                  "llama_bench": {}, "variants": {}, "ablation": []}
    for name, ref in reference.items():
        body["llama_bench"][name] = {"argv": ref["argv"], "env": references[name],
                                     "pp_tokens_per_s": stats(ref["pp_tokens_per_s"]),
                                     "tg_tokens_per_s": stats(ref["tg_tokens_per_s"])}
    for variant in variants:
        done = outcomes[variant.name]
        measured = {n: stats(v) for n, v in rates(done).items()}
        prefix = "" if variant.runner == "cli" else "e2e_"
        ref = body["llama_bench"][variant.reference]
        gen, prefill = measured[f"{prefix}gen_tokens_per_s"], measured[f"{prefix}prefill_tokens_per_s"]
        body["variants"][variant.name] = {"runner": variant.runner, "suspect": variant.suspect,
                                          "chain": variant.chain, "env": variant.env, "cli_args": variant.cli_args,
                                          "knobs": variant.knobs, "stream": variant.stream,
                                          "rates": measured, "reference": variant.reference,
                                          "prompt_tokens": done[0].measured["prompt_tokens"],
                                          "gen_tokens": done[0].measured["gen_tokens"]}
        body["ablation"].append({"variant": variant.name, "runner": variant.runner, "metric":
                                 "llama.cpp counters (study)" if prefix == "" else "slot timers (end to end)",
                                 "gen_ratio": gen["mean"] / ref["tg_tokens_per_s"]["mean"],
                                 "prefill_ratio": prefill["mean"] / ref["pp_tokens_per_s"]["mean"]})
    if simple["runs"]:
        runs = simple["runs"]
        ref = body["llama_bench"]["default"]
        gen, prefill = (stats([r[name] for r in runs]) for name in ("gen_tokens_per_s", "prefill_tokens_per_s"))
        body["llama_simple"] = {"argv": simple["argv"], "sha256": sha256_file(a.simple_bin),
                                "env": {"CUDA_MODULE_LOADING": "EAGER"},
                                "gen_tokens": sorted({r["gen_tokens"] for r in runs}),
                                "prompt_tokens": sorted({r["prompt_tokens"] for r in runs}),
                                "rates": {"gen_tokens_per_s": gen, "prefill_tokens_per_s": prefill}}
        body["ablation"].append({"variant": "llama-simple", "runner": "llama-simple",
                                 "metric": "llama.cpp counters (study)",
                                 "gen_ratio": gen["mean"] / ref["tg_tokens_per_s"]["mean"],
                                 "prefill_ratio": prefill["mean"] / ref["pp_tokens_per_s"]["mean"]})
    base = next(r for r in body["ablation"] if r["variant"] == "cli")
    for row in body["ablation"]:
        row["gen_change_vs_cli"] = row["gen_ratio"] / base["gen_ratio"] - 1
        row["prefill_change_vs_cli"] = row["prefill_ratio"] / base["prefill_ratio"] - 1
    print(f"{'variant':<20} {'gen / llama-bench':>18} {'prefill / llama-bench':>22}")
    for row in body["ablation"]:
        print(f"{row['variant']:<20} {row['gen_ratio']:>18.4f} {row['prefill_ratio']:>22.4f}")
    write("harness_vs_llama_bench", a, body)


if __name__ == "__main__":
    main()
