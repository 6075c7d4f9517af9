"""What does the interleaved order cost against the fixed one? The smoke matrix of experiment 1 (all
four models) through `moebench.run.experiment.run_experiment`, as `invoke run` runs it, in both orders and with
both runners, the four combinations in a shuffled order per repetition (seeded), on this host.

Model loads: llama-cli loads the model in every cell whatever the order; llama-server loads it once
per start, and the engine starts a server whenever the cell's (model, restart knobs) differs from the
previous cell's (engines.ServerEngine), so a plan's loads are counted from its order, the same rule.
Wall time: the whole run_experiment call (verification, every cell, server starts) and the sum of
the records' own wall times.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path

from _common import add_quick_and_results_dir

from moebench.run import plan as planning
from moebench.config import load_config
from moebench.run.records import read_records
from moebench.run.experiment import run_experiment

EXPERIMENT = "experiment_1_efficiency"
ORDER_SEED = 20261203


def server_starts(the_plan: planning.Plan) -> int:
    keys = [(c.model_id, c.knobs.restart_key()) for c in the_plan.cells]
    return sum(1 for i, key in enumerate(keys) if i == 0 or key != keys[i - 1])


def one_run(cfg, a, order: str, runner: str, seed: int, work: Path) -> dict:
    out = work / f"{order}-{runner}-{seed}.jsonl"
    started = time.monotonic()
    run_experiment(cfg, "cpu", EXPERIMENT, out, smoke=True, threads_override=a.threads, models_source="replica",
                   replica_scale=a.scale, pin=a.pin, runner_mode=runner, order=order,
                   order_seed=seed if order == "interleaved" else None)
    wall = time.monotonic() - started
    records = list(read_records(out))
    failed = [r["cell_key"] for r in records if r["status"] != "ok"]
    if failed:
        raise RuntimeError(f"{order}/{runner}: failed cells {failed}")
    the_plan = planning.expand(cfg, cfg.device("cpu"), EXPERIMENT, smoke=True, threads_override=a.threads, order=order,
                               seed=seed if order == "interleaved" else None)
    return {"wall_s": wall, "records_wall_s": sum(r["wall_ms"] for r in records) / 1000, "cells": len(records),
            "model_loads": len(records) if runner == "cli" else server_starts(the_plan)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", default="full", help="replica scale (tiny for a quick run)")
    parser.add_argument("--pin", default="offline")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--label", default="")
    add_quick_and_results_dir(parser, "the tiny replicas, one repetition: does the script still run?")
    a = parser.parse_args()
    if a.quick:
        a.scale, a.reps = "tiny", 1
    cfg = load_config()
    combos = [(order, runner) for order in planning.ORDERS for runner in ("cli", "server")]
    draw = random.Random(ORDER_SEED)
    runs: dict[str, list[dict]] = {f"{o}/{r}": [] for o, r in combos}
    with tempfile.TemporaryDirectory() as work:
        for rep in range(a.reps):
            for order, runner in draw.sample(combos, len(combos)):
                runs[f"{order}/{runner}"].append(one_run(cfg, a, order, runner, ORDER_SEED + rep, Path(work)))
    body: dict = {"experiment": EXPERIMENT, "smoke": True, "scale": a.scale, "pin": a.pin,
                  "order": f"the four (order, runner) combinations shuffled each rep (random.Random({ORDER_SEED})); "
                           f"interleaved seeds {ORDER_SEED}+rep", "runs": runs, "summary": {}}
    for runner in ("cli", "server"):
        fixed, mixed = runs[f"fixed/{runner}"], runs[f"interleaved/{runner}"]
        mean = lambda rows, key: statistics.fmean(r[key] for r in rows)  # noqa: E731
        body["summary"][runner] = {
            "cells": fixed[0]["cells"],
            "model_loads_fixed": fixed[0]["model_loads"],
            "model_loads_interleaved": [r["model_loads"] for r in mixed],
            "wall_s_fixed": mean(fixed, "wall_s"), "wall_s_interleaved": mean(mixed, "wall_s"),
            "wall_ratio_interleaved_over_fixed": mean(mixed, "wall_s") / mean(fixed, "wall_s"),
            "records_wall_ratio_interleaved_over_fixed": mean(mixed, "records_wall_s") / mean(fixed, "records_wall_s"),
        }
    write_results(a, body)


def write_results(a: argparse.Namespace, body: dict) -> None:
    """benchmarks/results/order_cost.json (the shared writer's meta names one model and binary; this
    benchmark runs the kit's whole resolution of four)."""
    a.results_dir.mkdir(parents=True, exist_ok=True)
    out = a.results_dir / f"order_cost{'_' + a.label if a.label else ''}.json"
    meta = {"scale": a.scale, "pin": a.pin, "threads": a.threads, "reps": a.reps, "quick": a.quick,
            "host": platform.platform(), "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    out.write_text(json.dumps({"benchmark": "order_cost", "meta": meta, **body}, indent=2) + "\n")
    print(json.dumps(body["summary"], indent=2))


if __name__ == "__main__":
    main()
