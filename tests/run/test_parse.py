from pathlib import Path

import pytest

from moebench.run import parse

OUT = Path(__file__).resolve().parents[1] / "fixtures" / "llama_output"


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


@pytest.mark.parametrize("name", ["cli_tokens_stderr.txt", "cli_tokens_b4404_stderr.txt"])
def test_cli_token_ids_from_both_pins(name):
    """--verbose-prompt's list (a piece spanning lines among them) and the -lv 1 eval lines: the
    prompt's ids in order and the decoded generated ones, as many as the perf footer counts."""
    stderr = text(name)
    perf = parse.parse_cli_perf(stderr)
    ids = parse.parse_cli_tokens(stderr, perf.gen_tokens)
    assert ids.prompt_ids == (128000, 2519, 832, 382, 2519, 1403, 25, 330, 275, 596, 498, 2884)
    assert len(ids.prompt_ids) == perf.prompt_tokens == 12
    assert ids.gen_ids == (2884,) * 5 and perf.gen_tokens == 5


def test_cli_token_ids_refused_without_the_logs():
    with pytest.raises(parse.ParseError, match="--verbose-prompt"):
        parse.parse_cli_tokens(text("cli_stderr.txt"), 31)   # recorded without --verbose-prompt / -lv 1
    stderr = text("cli_tokens_stderr.txt")
    with pytest.raises(parse.ParseError, match="fewer than"):
        parse.parse_cli_tokens(stderr, 6)                    # more generated tokens than decodes logged
    garbled = stderr.replace("eval: [ ' done':2884 ]", "eval: [ ' done':28x4 ]", 1)
    with pytest.raises(parse.ParseError, match="not one token"):
        parse.parse_cli_tokens(garbled, 5)
