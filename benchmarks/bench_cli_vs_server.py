"""(c) Wall time of an Exp1-like matrix (prompts x repetitions, one model) with one llama-cli process
per cell against one persistent llama-server (its start included), at equal repetitions."""

from __future__ import annotations

from _common import PROMPT, args, cell, knobs, rates, run_cells, stats, write


def main() -> None:
    a = args(__doc__)
    k = knobs(a)
    cells = [cell(k, r) for r in range(a.reps)]
    body: dict = {}
    for mode in ("cli", "server"):
        outcomes, wall = run_cells(mode, a, cells, prompt=PROMPT)
        body[mode] = {"cells": len(cells), "wall_s": wall, "wall_s_per_cell": wall / len(cells),
                      **{n: stats(v) for n, v in rates(outcomes).items()}}
    body["cli_over_server_wall_ratio"] = body["cli"]["wall_s"] / body["server"]["wall_s"]
    write("cli_vs_server", a, body)


if __name__ == "__main__":
    main()
