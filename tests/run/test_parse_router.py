from pathlib import Path

import pytest

from moebench.run.parse_router import parse_router_overhead

OUT = Path(__file__).resolve().parents[1] / "fixtures" / "router_overhead"


def text(name: str) -> str:
    return (OUT / name).read_text(encoding="utf-8", errors="replace")


def router_line(name: str) -> str:
    (line,) = [line for line in text(name).splitlines() if line.startswith("router_overhead:")]
    return line


def test_olmoe_run_with_env_var():
    ro = parse_router_overhead(text("olmoe_env_stderr.txt"))
    assert ro["format"] == 1
    assert ro["decode_graphs"] == 15  # -n 16: the first token comes from the prompt's logits
    assert (ro["routing_ms"], ro["expert_ffn_ms"], ro["other_ms"]) == (1.035, 44.537, 8.185)
    assert (ro["prefill_graphs"], ro["prefill_tokens"]) == (1, 13)
    assert (ro["prefill_routing_ms"], ro["prefill_expert_ffn_ms"], ro["prefill_other_ms"]) == (0.366, 11.809, 1.540)
    assert ro["routing_share"] == pytest.approx(1.035 / (1.035 + 44.537))
    assert ro["prefill_routing_share"] == pytest.approx(0.366 / (0.366 + 11.809))


def test_dense_model_has_no_moe_time_and_no_share():
    ro = parse_router_overhead(text("dense_env_stderr.txt"))
    assert ro["decode_graphs"] == 15 and ro["prefill_tokens"] == 13
    assert (ro["routing_ms"], ro["expert_ffn_ms"], ro["other_ms"]) == (0.0, 0.0, 27.618)
    assert ro["routing_share"] is None and ro["prefill_routing_share"] is None


def test_run_without_env_var_has_no_line():
    assert parse_router_overhead(text("olmoe_noenv_stderr.txt")) is None
    assert parse_router_overhead("") is None


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda line: line[: len(line) // 2],  # cut off mid-line
        lambda line: line.replace("routing_ms=1.035", "routing_ms=1.0x5"),
        lambda line: line.replace("decode_graphs=15", "decode_graphs=-15"),
        lambda line: line.replace("format=1", "format=2"),
        lambda line: line.replace(" other_ms=", " other_ms "),
        lambda line: line + " routing_ms=1.035",  # duplicate key
        lambda line: line + " shared_expert_ms=0.1",  # unknown key
        lambda line: line.replace("expert_ffn_ms=44.537", "expert_ffn_ms=nan"),
    ],
)
def test_corrupted_line_raises(corrupt):
    line = router_line("olmoe_env_stderr.txt")
    stderr = text("olmoe_env_stderr.txt").replace(line, corrupt(line))
    with pytest.raises(ValueError):
        parse_router_overhead(stderr)


def test_two_lines_in_one_stderr_raise():
    stderr = text("olmoe_env_stderr.txt")
    with pytest.raises(ValueError):
        parse_router_overhead(stderr + router_line("olmoe_env_stderr.txt") + "\n")
