"""stats.py: log-scale intervals against scipy, paired ratios by hand, CV and first-run outlier warnings."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
from scipy import stats as scipy_stats

from moebench.analysis.stats import (CV_WARN_THRESHOLD, PAIRED_RATIO_METHOD, POSITIVE_CI_METHOD, coefficient_of_variation,
                            first_run_outlier, intervals_overlap, paired_ratio, positive_interval, run_warnings)

SMOKE = Path(__file__).resolve().parents[1] / "fixtures" / "raw" / "run_cpu_experiment_1_efficiency_smoke.jsonl"


def test_positive_interval_is_scipy_t_interval_on_log_values():
    values = [10.2, 9.8, 11.1, 10.5, 9.9, 10.7]
    result = positive_interval(values)
    logs = [math.log(v) for v in values]
    low, high = scipy_stats.t.interval(0.95, len(values) - 1, loc=sum(logs) / len(logs), scale=scipy_stats.sem(logs))
    assert result.n == 6 and result.mean == pytest.approx(sum(values) / 6)
    assert result.stddev == pytest.approx(scipy_stats.tstd(values))
    assert result.cv == pytest.approx(scipy_stats.tstd(values) / (sum(values) / 6))
    assert result.geomean == pytest.approx(scipy_stats.gmean(values))
    assert result.ci_low == pytest.approx(math.exp(low)) and result.ci_high == pytest.approx(math.exp(high))
    assert result.note is None and result.method == POSITIVE_CI_METHOD and "log" in result.method


def test_interval_never_below_zero_where_a_t_interval_on_raw_values_is():
    # shaped like the smoke run's noisiest cell (prefill tok/s of one model, 30818 then 6663) plus a third run
    values = [30818.2784, 6663.0926, 14718.3218]
    naive_low = scipy_stats.t.interval(0.95, 2, loc=sum(values) / 3, scale=scipy_stats.sem(values))[0]
    assert naive_low < 0, "the Student-t interval on raw values crosses zero here"
    result = positive_interval(values)
    assert 0 < result.ci_low < result.geomean < result.ci_high


@pytest.mark.parametrize("seed", range(20))
def test_interval_positive_and_around_the_geometric_mean_for_wild_samples(seed):
    rng = random.Random(seed)
    values = [rng.lognormvariate(rng.uniform(-5, 10), rng.uniform(0.01, 3.0)) for _ in range(rng.randint(3, 40))]
    result = positive_interval(values)
    assert 0 < result.ci_low <= result.geomean <= result.ci_high


def test_recorded_smoke_values_have_no_interval_and_say_why():
    records = [json.loads(line) for line in SMOKE.read_text().splitlines()]
    measured = [r["prefill_tokens_per_s"] for r in records if not r["is_warmup"] and r["model_id"].startswith("llama")]
    result = positive_interval(measured)
    assert result.n == 2 and result.ci_low is None and result.ci_high is None
    assert result.note == "n=2: an interval needs at least 3 values"
    assert result.geomean == pytest.approx(math.sqrt(measured[0] * measured[1]))
    assert result.cv == pytest.approx(scipy_stats.tstd(measured) / (sum(measured) / 2))


def test_small_and_non_positive_samples_say_why():
    empty = positive_interval([])
    assert empty.n == 0 and empty.mean is None and empty.note == "no measured values"
    one = positive_interval([5.0])
    assert one.mean == 5.0 and one.stddev is None and one.ci_low is None and "n=1" in one.note
    zero = positive_interval([0.0, 1.0, 2.0])
    assert zero.mean == 1.0 and zero.geomean is None and zero.ci_low is None and "<= 0" in zero.note


def test_constant_values_collapse_to_the_value():
    result = positive_interval([4.0, 4.0, 4.0])
    assert result.stddev == 0 and result.cv == 0
    assert result.ci_low == pytest.approx(4.0) and result.ci_high == pytest.approx(4.0)


def test_paired_ratio_by_hand():
    # per-pair ratios 2, 4, 1: geometric mean (2*4*1)^(1/3) = 2; log ratios ln2 * (1, 2, 0), stddev ln2
    result = paired_ratio([2.0, 8.0, 4.0], [1.0, 2.0, 4.0])
    assert result.n_pairs == 3 and result.ratio == pytest.approx(2.0)
    half = 4.302652729911275 * math.log(2) / math.sqrt(3)  # t(0.975, df=2)
    assert result.ci_low == pytest.approx(2.0 * math.exp(-half))
    assert result.ci_high == pytest.approx(2.0 * math.exp(half))
    assert result.method == PAIRED_RATIO_METHOD and "same prompt and repetition" in result.method


def test_pairing_cancels_the_prompts_own_cost():
    # three prompts of very different speed, the MoE 0.9x the dense model on each: a pooled ratio of
    # means with its interval would mix the prompts' spread in; the paired ratio is 0.9 exactly
    dense = [10.0, 100.0, 1000.0]
    result = paired_ratio([0.9 * d for d in dense], dense)
    assert result.ratio == pytest.approx(0.9)
    assert result.ci_low == pytest.approx(0.9) and result.ci_high == pytest.approx(0.9)


def test_paired_ratio_too_few_or_bad_pairs():
    two = paired_ratio([3739.7158, 3520.3004], [4242.0814, 4150.5257])
    assert two.n_pairs == 2 and two.ci_low is None
    assert two.ratio == pytest.approx(math.sqrt(3739.7158 / 4242.0814 * 3520.3004 / 4150.5257))
    assert two.note == "n=2: an interval needs at least 3 pairs"
    assert paired_ratio([], []).ratio is None and paired_ratio([], []).note
    assert paired_ratio([1.0, 0.0, 2.0], [1.0, 1.0, 1.0]).ratio is None
    with pytest.raises(ValueError):
        paired_ratio([1.0, 2.0], [1.0])


def test_coefficient_of_variation():
    assert coefficient_of_variation([1.0, 2.0, 3.0]) == pytest.approx(0.5)
    assert coefficient_of_variation([1.0]) is None


def test_cv_warning_fires_and_does_not():
    noisy = run_warnings([("p01", 10.0), ("p01", 13.0), ("p01", 10.5)])
    assert len(noisy) == 1 and f"> {CV_WARN_THRESHOLD:.2f}" in noisy[0] and "p01" in noisy[0]
    assert run_warnings([("p01", 10.0), ("p01", 10.3), ("p01", 9.9)]) == []
    # two prompts of very different speed, each steady: the pooled CV is large, no warning
    assert run_warnings([("short", 100.0), ("long", 10.0), ("short", 101.0), ("long", 10.1)]) == []
    many = run_warnings([("a", 10.0), ("b", 5.0), ("a", 15.0), ("b", 5.1), ("c", 1.0), ("c", 2.0)])
    assert len(many) == 1 and "2 of 3 prompts, highest c" in many[0]


def test_first_run_outlier_fires_and_does_not():
    cold = first_run_outlier(6.0, [10.0, 10.2, 9.9])
    assert cold and "first measured run 6" in cold and "40%" in cold
    assert first_run_outlier(10.1, [10.0, 10.2, 9.9]) is None  # within the others' spread
    assert first_run_outlier(6.0, [10.0]) is None  # one other run: nothing to judge against
    # the others agree to 0.001%: the first is many MADs away but only 0.5% off, below the relative floor
    assert first_run_outlier(10.05, [10.0, 10.0001, 10.0]) is None
    # far off in relative terms but inside wide run-to-run noise
    assert first_run_outlier(14.0, [10.0, 18.0, 12.0]) is None


def test_run_warnings_judge_the_first_run_against_its_own_prompt():
    runs = [("p01", 6.0), ("p02", 50.0), ("p01", 10.0), ("p02", 51.0), ("p01", 10.2), ("p02", 50.5)]
    assert any("first measured run" in w for w in run_warnings(runs))
    steady = [("p01", 10.1), ("p02", 50.0), ("p01", 10.0), ("p02", 51.0), ("p01", 10.2), ("p02", 50.5)]
    assert run_warnings(steady) == []


def test_overlap():
    assert intervals_overlap(0.85, 0.95, 0.9, 1.0)
    assert not intervals_overlap(0.5, 0.6, 0.64, 0.74)
