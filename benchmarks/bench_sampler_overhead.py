"""(b) What does the psutil sampler (20 Hz, in the harness process) cost llama.cpp's throughput?
Cells of the cli runner (the kit's runner) alternate sampling on / off, so both see the same machine
state; the rate is llama-cli's decode-only counter, the study's metric."""

from __future__ import annotations

import tempfile
from pathlib import Path

from _common import PROMPT, args, cell, knobs, rates, stats, write

from moebench.run import engines
from moebench.run.monitors import create_monitors


def main() -> None:
    a = args(__doc__)
    k = knobs(a)
    on, off = [], []
    with tempfile.TemporaryDirectory() as work:
        engine = engines.CliEngine(a.bin_dir / "llama-cli", Path(work), 600.0)
        try:
            for rep in range(2 * a.reps + 1):
                monitors = create_monitors(("psutil",) if rep % 2 else ())
                hooks = engines.MonitorHooks(start=lambda pid: [m.start(pid) for m in monitors],
                                             stop=lambda: [m.stop() for m in monitors])
                outcome = engine.run_cell(cell(k, rep), a.model, PROMPT, hooks)
                if rep == 0:
                    continue  # warm-up
                (on if rep % 2 else off).append(outcome)
        finally:
            engine.close()
    r_on, r_off = rates(on), rates(off)
    body = {"sampling_on": {n: stats(v) for n, v in r_on.items()},
            "sampling_off": {n: stats(v) for n, v in r_off.items()}}
    body["gen_overhead_percent"] = 100 * (1 - body["sampling_on"]["gen_tokens_per_s"]["mean"]
                                          / body["sampling_off"]["gen_tokens_per_s"]["mean"])
    write("sampler_overhead", a, body)


if __name__ == "__main__":
    main()
