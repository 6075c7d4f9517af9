"""moebench.run.bandwidth: a real measurement of this host, reported with its passes and method."""

from moebench.run.bandwidth import measure_memory_bandwidth


def test_measures_every_pass_and_keeps_the_best():
    result = measure_memory_bandwidth(threads=2, buffer_bytes=8 * 2 ** 20, repeats=3)
    assert len(result["passes_gb_per_s"]) == 3 and all(p > 0 for p in result["passes_gb_per_s"])
    assert result["gb_per_s"] == max(result["passes_gb_per_s"])
    assert result["threads"] == 2 and result["buffer_bytes_per_thread"] == 8 * 2 ** 20
    assert "read + write" in result["method"]
