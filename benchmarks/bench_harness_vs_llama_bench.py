"""(a) Does the harness report the throughput llama-bench reports for the same binary build, model,
token counts and threads? Ratio = harness mean / llama-bench avg, per runner and sampler chain, gen
and prefill: an ablation in one run, so each suspect of a gap is measured against the same reference.

- runner: server (one streamed HTTP request per cell) against cli (one process, no HTTP) isolates the
  HTTP/streaming path;
- sampler chain: `default` is llama.cpp's own chain at temperature 0 (what the harness sent before),
  `greedy` the top_k=1 chain the harness sends now; llama-bench samples nothing at all.

llama-bench's tg test times n decodes; the harness's gen_tokens counts decode steps too (n_predict - 1),
so llama-bench runs with -n n_predict-1 and -p the harness's own prompt token count. Runs alternate
between the configurations and llama-bench rep by rep (one engine per configuration, started once,
its first cell a warm-up; llama-bench -r 1 after its own warm-up), so a drift of the machine during
the run spreads over all of them.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from _common import PROMPT, args, cell, knobs, rates, stats, write

from moebench import engines, parse
from moebench.monitors import create_monitors

CONFIGS = (("server", "greedy"), ("server", "default"), ("cli", "greedy"), ("cli", "default"))


def llama_bench(a, k, n_prompt: int, n_gen: int) -> tuple[list[str], float, float]:
    """One llama-bench pass (-r 1, after its own warm-up): (argv, pp tok/s, tg tok/s)."""
    argv = [str(a.bin_dir / "llama-bench"), "-m", str(a.model), "-p", str(n_prompt), "-n", str(n_gen),
            "-t", str(a.threads), "-b", str(k.batch_size), "-ub", str(k.ubatch_size), "-ngl", str(a.ngl),
            "-r", "1", "-o", "json"]
    rows = parse.parse_llama_bench_json(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)
    pp = next(r for r in rows if r.n_prompt and not r.n_gen)
    tg = next(r for r in rows if r.n_gen and not r.n_prompt)
    return argv, pp.avg_tokens_per_s, tg.avg_tokens_per_s


def interleaved(a, k) -> tuple[dict[tuple[str, str], list[engines.Outcome]], dict[str, list[float]], list[str]]:
    """Every configuration's outcomes and llama-bench's pp/tg, measured rep by rep in turn (the first
    harness cell of each engine is a warm-up); llama-bench gets the harness's own token counts."""
    monitors = create_monitors(("psutil",))
    hooks = engines.MonitorHooks(start=lambda pid: [m.start(pid) for m in monitors],
                                 stop=lambda: [m.stop() for m in monitors])
    results: dict[tuple[str, str], list[engines.Outcome]] = {c: [] for c in CONFIGS}
    reference: dict[str, list[float]] = {"pp_tokens_per_s": [], "tg_tokens_per_s": []}
    argv: list[str] = []
    with tempfile.TemporaryDirectory() as work:
        for config in CONFIGS:  # each engine's own directory, where a server writes its API key at once
            (Path(work) / "-".join(config)).mkdir()
        running = {c: engines.ENGINES[c[0]](a.bin_dir / engines.BINARY_FOR_MODE[c[0]], Path(work) / "-".join(c), 600.0,
                                            sampler_chain=c[1]) for c in CONFIGS}
        try:
            for rep in range(a.reps + 1):
                for config, engine in running.items():
                    outcome = engine.run_cell(cell(k, rep), a.model, PROMPT, hooks)
                    if outcome.failure:
                        raise RuntimeError(f"{config} cell failed: {outcome.failure}")
                    if rep:
                        results[config].append(outcome)
                if rep:
                    measured = results[CONFIGS[0]][0].measured
                    argv, pp, tg = llama_bench(a, k, measured["prompt_tokens"], measured["gen_tokens"])
                    reference["pp_tokens_per_s"].append(pp)
                    reference["tg_tokens_per_s"].append(tg)
        finally:
            for engine in running.values():
                engine.close()
    return results, reference, argv


def main() -> None:
    a = args(__doc__)
    k = knobs(a)
    body: dict = {"runners": {}}
    outcomes, reference, argv = interleaved(a, k)
    for (mode, chain), done in outcomes.items():
        entry = {name: stats(v) for name, v in rates(done).items()}
        entry.update(prompt_tokens=done[0].measured["prompt_tokens"], gen_tokens=done[0].measured["gen_tokens"])
        body["runners"][f"{mode}/{chain}"] = entry
    pp, tg = stats(reference["pp_tokens_per_s"]), stats(reference["tg_tokens_per_s"])
    body["llama_bench"] = {"argv": argv, "pp_tokens_per_s": pp, "tg_tokens_per_s": tg}
    body["ablation"] = [{"runner": name.split("/")[0], "sampler_chain": name.split("/")[1],
                         "gen_ratio": r["gen_tokens_per_s"]["mean"] / tg["mean"],
                         "prefill_ratio": r["prefill_tokens_per_s"]["mean"] / pp["mean"]}
                        for name, r in body["runners"].items()]
    print(f"{'runner':<8} {'chain':<8} {'gen / llama-bench':>18} {'prefill / llama-bench':>22}")
    for row in body["ablation"]:
        print(f"{row['runner']:<8} {row['sampler_chain']:<8} {row['gen_ratio']:>18.4f} {row['prefill_ratio']:>22.4f}")
    write("harness_vs_llama_bench", a, body)


if __name__ == "__main__":
    main()
