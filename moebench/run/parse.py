"""Turn llama.cpp's own output into numbers: pure functions from text to dataclasses.

Token-count convention, the same for both runners and for llama-bench's `tg` test: `gen_tokens`
is the number of decode steps that `gen_ms` timed. llama-cli reports it directly ("eval time = X ms
/ N runs"); llama-server reports `predicted_n` tokens but its `predicted_ms` starts when the first
token is sampled from the prompt's logits, so it covers `predicted_n - 1` decode steps. Dividing
`predicted_n` by `predicted_ms` would overstate the rate by n/(n-1).

Token ids follow the same convention: the generated ids a record fingerprints are the `gen_tokens`
ids llama.cpp decoded (every sampled token but the last, which is printed and never decoded).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Iterable


class ParseError(ValueError):
    """llama.cpp output lacks what the parser needs (a crash before the perf footer, a changed format)."""


@dataclass(frozen=True)
class CliPerf:
    load_ms: float
    prompt_ms: float
    prompt_tokens: int
    gen_ms: float
    gen_tokens: int
    total_ms: float
    sample_ms: float | None
    sample_runs: int | None


@dataclass(frozen=True)
class ServerTimings:
    prompt_tokens: int
    prompt_ms: float
    predicted_n: int
    predicted_ms: float
    gen_tokens: int
    gen_ms: float


@dataclass(frozen=True)
class BenchResult:
    """One llama-bench test (pp or tg) as it reports it."""

    n_prompt: int
    n_gen: int
    n_threads: int
    n_batch: int
    n_ubatch: int
    n_gpu_layers: int
    build_commit: str
    avg_ns: int
    stddev_ns: int
    avg_tokens_per_s: float
    stddev_tokens_per_s: float
    samples_ns: tuple[int, ...]


_NUM = r"([0-9]+(?:\.[0-9]+)?)"
_CONTEXT = {
    "load": re.compile(rf"llama_perf_context_print:\s+load time =\s+{_NUM} ms"),
    "prompt": re.compile(rf"llama_perf_context_print:\s+prompt eval time =\s+{_NUM} ms /\s+([0-9]+) tokens"),
    "eval": re.compile(rf"llama_perf_context_print:\s+eval time =\s+{_NUM} ms /\s+([0-9]+) runs"),
    "total": re.compile(rf"llama_perf_context_print:\s+total time =\s+{_NUM} ms"),
}
_SAMPLER = re.compile(rf"llama_perf_sampler_print:\s+sampling time =\s+{_NUM} ms /\s+([0-9]+) runs")
_LOAD_FAILURE = re.compile(
    r"failed to load model|error loading model|unable to load model|failed to create context|exiting due to model loading error")


def parse_cli_perf(stderr: str) -> CliPerf:
    """The llama_perf_context_print / llama_perf_sampler_print footer llama-cli writes on exit."""
    found = {name: pattern.findall(stderr) for name, pattern in _CONTEXT.items()}
    missing = [name for name, hits in found.items() if not hits]
    if missing:
        raise ParseError(f"llama-cli perf footer lacks: {', '.join(missing)}")
    # The last footer wins: llama-cli prints one per context, and only the generation context's counts.
    load_ms = float(found["load"][-1])
    prompt_ms, prompt_tokens = found["prompt"][-1]
    eval_ms, eval_runs = found["eval"][-1]
    sampler = _SAMPLER.findall(stderr)
    return CliPerf(
        load_ms=load_ms,
        prompt_ms=float(prompt_ms),
        prompt_tokens=int(prompt_tokens),
        gen_ms=float(eval_ms),
        gen_tokens=int(eval_runs),
        total_ms=float(found["total"][-1]),
        sample_ms=float(sampler[-1][0]) if sampler else None,
        sample_runs=int(sampler[-1][1]) if sampler else None,
    )


_PROMPT_COUNT = re.compile(r"^main: number of tokens in prompt = ([0-9]+)$", re.MULTILINE)
_PROMPT_ID = re.compile(r"^ *([0-9]+) -> '", re.MULTILINE)
_EVAL_ONE = re.compile(r"^eval: \[ '[^\n]*':([0-9]+) \]$", re.MULTILINE)
_EVAL_LINE = re.compile(r"^eval: \[ ", re.MULTILINE)


@dataclass(frozen=True)
class CliTokens:
    prompt_ids: tuple[int, ...]
    gen_ids: tuple[int, ...]


def parse_cli_tokens(stderr: str, gen_tokens: int) -> CliTokens:
    """Prompt and decoded token ids from llama-cli's own log: `--verbose-prompt` lists the prompt as
    `<id> -> '<piece>'` lines after its count; at `-lv 1` every decode logs `eval: [ '<piece>':<id>, ... ]`
    (pieces stripped of non-printable bytes, so one line each). The last `gen_tokens` eval lines are
    the generated tokens, one each (llama-cli decodes one sampled token at a time); the lines before
    them hold the prompt."""
    count = _PROMPT_COUNT.search(stderr)
    if count is None:
        raise ParseError("llama-cli printed no prompt token list (it needs --verbose-prompt)")
    n_prompt = int(count.group(1))
    prompt_ids = tuple(int(m.group(1)) for m in _PROMPT_ID.finditer(stderr, count.end()))[:n_prompt]
    if len(prompt_ids) != n_prompt:
        raise ParseError(f"llama-cli announced {n_prompt} prompt tokens and listed {len(prompt_ids)}")
    evals = [m.start() for m in _EVAL_LINE.finditer(stderr)]
    if len(evals) < gen_tokens + 1:
        raise ParseError(f"llama-cli logged {len(evals)} decodes, fewer than the prompt's and {gen_tokens} "
                         "generated ones (it needs -lv 1)")
    gen_ids = []
    for start in evals[len(evals) - gen_tokens:]:
        one = _EVAL_ONE.match(stderr, start)
        if one is None:
            raise ParseError(f"llama-cli's decode line is not one token: {stderr[start:start + 80]!r}")
        gen_ids.append(int(one.group(1)))
    return CliTokens(prompt_ids, tuple(gen_ids))


def is_load_failure(stderr: str) -> bool:
    """True when llama.cpp says it could not load the model or create its context."""
    return bool(_LOAD_FAILURE.search(stderr))


def parse_sse_line(line: str) -> dict[str, Any] | None:
    """One line of llama-server's event stream: the JSON of a `data: {...}` line, else None."""
    line = line.strip()
    if not line.startswith("data:"):
        return None
    payload = line[len("data:"):].strip()
    if not payload or payload == "[DONE]":
        return None
    try:
        return json.loads(payload)
    except json.JSONDecodeError as exc:
        raise ParseError(f"llama-server sent a data line that is not JSON: {payload[:80]!r}") from exc


def final_chunk(lines: Iterable[str]) -> dict[str, Any]:
    """The chunk with `stop: true` of a streamed /completion response."""
    last = None
    for line in lines:
        chunk = parse_sse_line(line)
        if chunk is not None and chunk.get("stop"):
            last = chunk
    if last is None:
        raise ParseError("llama-server stream ended without a final (stop: true) chunk")
    return last


def parse_server_timings(chunk: dict[str, Any]) -> ServerTimings:
    """The `timings` object of llama-server's final chunk; see the module doc for gen_tokens."""
    timings = chunk.get("timings")
    if not isinstance(timings, dict):
        raise ParseError("llama-server final chunk has no timings object")
    try:
        predicted_n = int(timings["predicted_n"])
        predicted_ms = float(timings["predicted_ms"])
        return ServerTimings(
            prompt_tokens=int(timings["prompt_n"]),
            prompt_ms=float(timings["prompt_ms"]),
            predicted_n=predicted_n,
            predicted_ms=predicted_ms,
            gen_tokens=max(predicted_n - 1, 0),
            gen_ms=predicted_ms,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ParseError(f"llama-server timings lack or garble {exc}") from exc


def _bench_result(row: dict[str, Any]) -> BenchResult:
    return BenchResult(
        n_prompt=int(row["n_prompt"]),
        n_gen=int(row["n_gen"]),
        n_threads=int(row["n_threads"]),
        n_batch=int(row["n_batch"]),
        n_ubatch=int(row["n_ubatch"]),
        n_gpu_layers=int(row["n_gpu_layers"]),
        build_commit=str(row["build_commit"]),
        avg_ns=int(row["avg_ns"]),
        stddev_ns=int(row["stddev_ns"]),
        avg_tokens_per_s=float(row["avg_ts"]),
        stddev_tokens_per_s=float(row["stddev_ts"]),
        samples_ns=tuple(int(s) for s in row["samples_ns"]),
    )


def parse_llama_bench_json(text: str) -> list[BenchResult]:
    """`llama-bench -o json`: one JSON array of tests."""
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParseError(f"llama-bench -o json output is not JSON: {exc}") from exc
    return [_bench_result(row) for row in rows]


def parse_llama_bench_jsonl(text: str) -> list[BenchResult]:
    """`llama-bench -o jsonl`: one JSON object per line."""
    try:
        return [_bench_result(json.loads(line)) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise ParseError(f"llama-bench -o jsonl line is not JSON: {exc}") from exc


def tail(text: str, max_chars: int = 2000) -> str:
    """The end of a process's stderr, for failure records."""
    return text[-max_chars:]
