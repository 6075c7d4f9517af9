"""reproduction.py: a headline ratio reproduced, not reproduced or inconclusive against a stated tolerance."""

from __future__ import annotations

import math
import shutil

import pytest
from test_analyze import LLAMA, MOE, make_record, write_jsonl
from test_attest import one_error_line, run_invoke
from test_bundle import Evidence, made_by

from moebench.evidence.bundle import make_bundle
from moebench.evidence.compare import compare

from moebench.config import load_config
from moebench.evidence.reproduction import DEFAULT_TOLERANCE, SideRatio, _shift, decide, decide_shift
from moebench.analysis.stats import t_quantile


def side_from_interval(centre: float, low: float, high: float, n: int = 36) -> SideRatio:
    """A side as its report prints it: ratio [low, high] from n pairs."""
    se = (math.log(high) - math.log(low)) / 2 / t_quantile(n - 1)
    return SideRatio(n, 1, math.log(centre), se, n - 1, None, "cli")


@pytest.mark.parametrize("tolerance, expected", [(0.05, "not reproduced"), (0.15, "inconclusive"),
                                                 (0.20, "reproduced")])
def test_the_readme_example(tolerance, expected):
    """0.27x [0.26, 0.28] on one H200, 0.30x [0.29, 0.31] on another: B/A = 1.11 [1.06, 1.17]."""
    shift = _shift(side_from_interval(0.27, 0.26, 0.28), side_from_interval(0.30, 0.29, 0.31))
    assert shift[0] == pytest.approx(1.111, abs=1e-3)
    assert shift[1] == pytest.approx(1.06, abs=0.01) and shift[2] == pytest.approx(1.165, abs=0.01)
    assert decide_shift(shift, tolerance) == expected


def test_a_shift_below_one_is_judged_on_the_reciprocal_band():
    assert decide_shift((0.9, 0.85, 0.94), 0.05) == "not reproduced"
    assert decide_shift((0.97, 0.955, 0.99), 0.05) == "reproduced"  # 1/1.05 = 0.952
    assert decide_shift((1.0, None, None), 0.05) == "inconclusive"


def lab(moe_tps: float, *, host: str = "h1", runner: str = "server", noise: float = 0.01,
        gpu: str | None = None) -> list[dict]:
    out = []
    for p, prompt in enumerate(("p01", "p02", "p03", "p04")):
        for rep in range(3):
            jitter = 1 + noise * ((p + 2 * rep) % 5 - 2)
            for model, tps in ((MOE, moe_tps * jitter), (LLAMA, 20.0)):
                r = make_record(model, tps, rep=rep, prompt=prompt)
                r["runner_mode"] = runner
                r["provenance"]["host"].update(host_id=host, boot_id="b")
                if gpu:
                    r["provenance"]["gpu"] = {"name": gpu}
                out.append(r)
    return out


def gen_decision(decisions, vs=LLAMA):
    return next(d for d in decisions if d.metric == "gen_tokens_per_s" and d.vs == vs)


def test_decisions_on_records_follow_the_tolerance():
    cfg = load_config()
    a, b = lab(10.0), lab(11.0)  # B's MoE/Llama ratio 10% above A's
    strict = gen_decision(decide(cfg, a, b))
    assert strict.tolerance == DEFAULT_TOLERANCE and "MLPerf" in strict.tolerance_source
    assert strict.decision == "not reproduced" and strict.shift[0] == pytest.approx(1.1, rel=1e-3)
    assert gen_decision(decide(cfg, a, b, tolerance=0.3)).decision == "reproduced"
    assert gen_decision(decide(cfg, a, lab(10.0))).decision == "reproduced"
    noisy = gen_decision(decide(cfg, lab(10.0, noise=0.2), lab(10.6, noise=0.2)))
    assert noisy.decision == "inconclusive"


def test_measured_between_machine_spread_widens_the_default_tolerance():
    cfg = load_config()
    three_machines = lab(10.0, host="h1") + lab(10.8, host="h2") + lab(11.4, host="h4")
    d = gen_decision(decide(cfg, three_machines, lab(10.4, host="h3")))
    assert d.a.machines == 3 and d.a.tau > 0
    assert d.tolerance_source.startswith("measured between-machine spread of A (3 machines")
    assert d.tolerance == pytest.approx(math.expm1(1.96 * math.sqrt(2) * d.a.tau)) and d.tolerance > 0.05


def test_machines_that_agree_or_are_too_few_keep_mlperfs_five_percent():
    cfg = load_config()
    agreeing = lab(10.0, host="h1") + lab(10.01, host="h2") + lab(10.0, host="h4")
    d = gen_decision(decide(cfg, agreeing, lab(10.0, host="h3")))
    assert d.a.machines == 3 and d.tolerance == DEFAULT_TOLERANCE
    assert "the measured between-machine spread of A (3 machines" in d.tolerance_source and "is narrower" in \
        d.tolerance_source
    two = gen_decision(decide(cfg, lab(10.0, host="h1") + lab(10.8, host="h2"), lab(10.4, host="h3")))
    assert two.a.machines == 2 and two.a.tau > 0 and two.tolerance == DEFAULT_TOLERANCE
    assert "2 machines are too few to measure the spread between machines (it counts from 3)" in two.tolerance_source


def test_another_machine_kind_is_judged_with_a_note_and_mixed_kinds_measure_no_tolerance():
    cfg = load_config()
    d = gen_decision(decide(cfg, lab(10.0), lab(10.0, gpu="GPU B")))
    assert d.decision == "reproduced" and d.a.kinds == ("test cpu",) and d.b.kinds == ("GPU B on test cpu",)
    assert "machines of another kind: A test cpu, B GPU B on test cpu" in d.note
    assert gen_decision(decide(cfg, lab(10.0), lab(10.0))).note is None
    mixed = lab(10.0, host="h1") + lab(10.8, host="h2") + lab(13.0, host="h4", gpu="GPU B")
    m = gen_decision(decide(cfg, mixed, lab(10.4, host="h3")))
    assert m.a.machines == 3 and m.a.tau > 0 and m.tolerance == DEFAULT_TOLERANCE
    assert "the 3 machines of A are of 2 kinds" in m.tolerance_source


def test_different_runners_are_shown_not_judged():
    d = gen_decision(decide(load_config(), lab(10.0, runner="server"), lab(10.0, runner="cli")))
    assert d.decision == "not comparable" and "runner server in A, cli in B" in d.note


def test_a_tolerance_that_is_no_fraction_is_refused(tmp_path):
    line = one_error_line(run_invoke("compare", "a", "b", "--tolerance", "5", home=tmp_path))
    assert "--tolerance" in line and "0.05" in line


def test_compare_of_two_bundles_decides_each_ratio_and_the_badge(tmp_path):
    """Two labs' bundles of the same build and work, B's MoE 10% faster: every decode ratio is judged
    against MLPerf's 5%, so Results Reproduced is not upgraded; with a 30% tolerance it is."""
    paths = []
    for name, moe in (("a", 10.0), ("b", 11.0)):
        evidence = Evidence(tmp_path / name, tmp_path / "key.pem")
        shutil.rmtree(evidence.raw)
        write_jsonl(evidence.raw, "run_a.jsonl", [made_by(r, evidence.build_dir) for r in lab(moe)])
        paths.append(make_bundle(load_config(), tmp_path / name / "bundle.tar.gz", evidence.raw, evidence.results,
                                 evidence.home, evidence.hardware)[0])
    strict = compare(*paths)
    gen = [d for d in strict.decisions if d.metric == "gen_tokens_per_s"]
    assert gen and all(d.decision == "not reproduced" for d in gen) and strict.exit_code == 1
    assert strict.results_reproduced().startswith("Results Reproduced: not upgraded")
    loose = compare(*paths, tolerance=0.3)
    assert {d.decision for d in loose.decisions if d.metric == "gen_tokens_per_s"} == {"reproduced"}
    assert "headline ratios:" in loose.verdict()
