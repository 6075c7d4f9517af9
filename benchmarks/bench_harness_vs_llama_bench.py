"""(a) Does the harness report the throughput llama-bench reports for the same binary build, model,
token counts and threads? Ratio = harness mean / llama-bench avg, per runner, gen and prefill.

llama-bench's tg test times n decodes; the harness's gen_tokens counts decode steps too (n_predict - 1),
so llama-bench runs with -n n_predict-1 and -p the harness's own prompt token count.
"""

from __future__ import annotations

import subprocess

from _common import args, cell, knobs, rates, run_cells, stats, write

from moebench import parse


def main() -> None:
    a = args(__doc__)
    k = knobs(a)
    body: dict = {"runners": {}}
    for mode in ("server", "cli"):
        outcomes, _ = run_cells(mode, a, [cell(k, r) for r in range(a.reps + 1)])
        outcomes = outcomes[1:]  # first cell of a fresh engine is a warm-up, as in the kit's plan
        body["runners"][mode] = {name: stats(v) for name, v in rates(outcomes).items()}
        body["runners"][mode]["prompt_tokens"] = outcomes[0].measured["prompt_tokens"]
        body["runners"][mode]["gen_tokens"] = outcomes[0].measured["gen_tokens"]
    n_prompt = body["runners"]["server"]["prompt_tokens"]
    n_gen = body["runners"]["server"]["gen_tokens"]
    argv = [str(a.bin_dir / "llama-bench"), "-m", str(a.model), "-p", str(n_prompt), "-n", str(n_gen),
            "-t", str(a.threads), "-b", str(k.batch_size), "-ub", str(k.ubatch_size), "-ngl", "0",
            "-r", str(a.reps), "-o", "json"]
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    bench = parse.parse_llama_bench_json(done.stdout)
    pp = next(r for r in bench if r.n_prompt and not r.n_gen)
    tg = next(r for r in bench if r.n_gen and not r.n_prompt)
    body["llama_bench"] = {"argv": argv, "pp_tokens_per_s": pp.avg_tokens_per_s, "pp_stddev": pp.stddev_tokens_per_s,
                           "tg_tokens_per_s": tg.avg_tokens_per_s, "tg_stddev": tg.stddev_tokens_per_s}
    body["ratios"] = {mode: {"gen": r["gen_tokens_per_s"]["mean"] / tg.avg_tokens_per_s,
                             "prefill": r["prefill_tokens_per_s"]["mean"] / pp.avg_tokens_per_s}
                      for mode, r in body["runners"].items()}
    write("harness_vs_llama_bench", a, body)


if __name__ == "__main__":
    main()
