from pathlib import Path

import pytest

from moebench import parse

OUT = Path(__file__).resolve().parent / "fixtures" / "llama_output"


def text(name: str) -> str:
    return (OUT / name).read_text(encoding="utf-8", errors="replace")


def test_cli_perf_footer():
    perf = parse.parse_cli_perf(text("cli_stderr.txt"))
    assert perf.load_ms == 7.36
    assert (perf.prompt_tokens, perf.prompt_ms) == (72, 3.99)
    assert (perf.gen_tokens, perf.gen_ms) == (31, 6.11)  # 32 predicted: the first comes from the prompt's logits
    assert perf.total_ms == 11.60
    assert (perf.sample_runs, perf.sample_ms) == (104, 0.32)


@pytest.mark.parametrize("name", ["cli_trunc_stderr.txt", "cli_missing_stderr.txt", "cli_ascap100M_stderr.txt"])
def test_load_failures_have_no_footer_and_are_recognised(name):
    with pytest.raises(parse.ParseError):
        parse.parse_cli_perf(text(name))
    assert parse.is_load_failure(text(name))


def test_normal_run_is_not_a_load_failure():
    assert not parse.is_load_failure(text("cli_stderr.txt"))


def test_server_final_chunk_timings():
    lines = text("server_stream.txt").splitlines()
    first = parse.parse_sse_line(lines[0])
    assert first["tokens_predicted"] == 1 and first["tokens"]
    timings = parse.parse_server_timings(parse.final_chunk(lines))
    assert (timings.prompt_tokens, timings.prompt_ms) == (73, 5.253)
    assert (timings.predicted_n, timings.predicted_ms) == (32, 7.668)
    assert timings.gen_tokens == 31 and timings.gen_ms == 7.668


def test_server_stream_without_final_chunk():
    lines = text("server_stream.txt").splitlines()
    with pytest.raises(parse.ParseError):
        parse.final_chunk(lines[:3])


def test_server_log_load_failure():
    assert parse.is_load_failure(text("server_trunc_stderr.txt"))


def test_llama_bench_json_and_jsonl_agree():
    as_json = parse.parse_llama_bench_json(text("bench.json"))
    as_jsonl = parse.parse_llama_bench_jsonl(text("bench.jsonl"))
    assert [(r.n_prompt, r.n_gen) for r in as_json] == [(72, 0), (0, 32)]
    assert [(r.n_prompt, r.n_gen) for r in as_jsonl] == [(72, 0), (0, 32)]
    tg = as_json[1]
    assert tg.build_commit == "f7cd133" and tg.n_threads == 2 and len(tg.samples_ns) == 3
    assert tg.avg_tokens_per_s > 0


def test_bad_json_is_a_parse_error():
    with pytest.raises(parse.ParseError):
        parse.parse_llama_bench_json("not json")
    with pytest.raises(parse.ParseError):
        parse.parse_sse_line("data: {broken")
