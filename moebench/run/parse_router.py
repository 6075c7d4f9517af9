"""Parse the router-overhead line printed by llama-cli built with scripts/patches/router_overhead.patch.

With LLAMA_ROUTER_OVERHEAD=1 the patched llama-cli times every graph node and, at exit, writes one
line to stderr:

    router_overhead: format=1 decode_graphs=15 routing_ms=1.214 expert_ffn_ms=37.895 other_ms=45.497
    prefill_graphs=1 prefill_tokens=13 prefill_routing_ms=0.282 prefill_expert_ffn_ms=19.395
    prefill_other_ms=8.324

(all on one line). Times are summed node wall times in milliseconds; decode graphs hold exactly
one token, every other graph is prefill. Per-node synchronisation inflates all times, so only the
within-MoE share routing_ms / (routing_ms + expert_ffn_ms) is meant to be read, never the totals.
"""

from __future__ import annotations

LINE_PREFIX = "router_overhead:"
SUPPORTED_FORMAT = 1

COUNT_KEYS = ("decode_graphs", "prefill_graphs", "prefill_tokens")
MS_KEYS = (
    "routing_ms",
    "expert_ffn_ms",
    "other_ms",
    "prefill_routing_ms",
    "prefill_expert_ffn_ms",
    "prefill_other_ms",
)
EXPECTED_KEYS = frozenset(("format",) + COUNT_KEYS + MS_KEYS)


def parse_router_overhead(stderr_text: str) -> dict | None:
    """Return the router-overhead figures in `stderr_text`, or None when the line is absent.

    None means the run was not a router-overhead run (unpatched binary, or the env var unset).
    A line that is present but cannot be read raises ValueError: a half-written or reformatted
    line must not turn into a silent gap in the results.
    """
    lines = [line.strip() for line in stderr_text.splitlines() if line.lstrip().startswith(LINE_PREFIX)]
    if not lines:
        return None
    if len(lines) > 1:
        raise ValueError(f"{len(lines)} '{LINE_PREFIX}' lines in one stderr; expected one per run")
    fields = _split_fields(lines[0])
    result: dict = {"format": _read_format(fields)}
    for key in COUNT_KEYS:
        result[key] = _read_count(fields, key)
    for key in MS_KEYS:
        result[key] = _read_ms(fields, key)
    result["routing_share"] = _share(result["routing_ms"], result["expert_ffn_ms"])
    result["prefill_routing_share"] = _share(result["prefill_routing_ms"], result["prefill_expert_ffn_ms"])
    return result


def _split_fields(line: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for token in line[len(LINE_PREFIX):].split():
        key, sep, value = token.partition("=")
        if not sep or not key or not value:
            raise ValueError(f"router_overhead field {token!r} is not key=value: {line!r}")
        if key in fields:
            raise ValueError(f"router_overhead key {key!r} appears twice: {line!r}")
        fields[key] = value
    missing = sorted(EXPECTED_KEYS - fields.keys())
    unknown = sorted(fields.keys() - EXPECTED_KEYS)
    if missing or unknown:
        raise ValueError(f"router_overhead line has missing keys {missing} / unknown keys {unknown}: {line!r}")
    return fields


def _read_format(fields: dict[str, str]) -> int:
    fmt = _read_count(fields, "format")
    if fmt != SUPPORTED_FORMAT:
        raise ValueError(f"router_overhead format={fmt} is not supported (this parser reads format={SUPPORTED_FORMAT})")
    return fmt


def _read_count(fields: dict[str, str], key: str) -> int:
    value = fields[key]
    if not value.isdigit():
        raise ValueError(f"router_overhead {key}={value!r} is not a non-negative integer")
    return int(value)


def _read_ms(fields: dict[str, str], key: str) -> float:
    value = fields[key]
    try:
        ms = float(value)
    except ValueError:
        raise ValueError(f"router_overhead {key}={value!r} is not a number") from None
    if not ms >= 0.0 or ms == float("inf"):  # also rejects nan
        raise ValueError(f"router_overhead {key}={value!r} is not a finite non-negative time")
    return ms


def _share(routing_ms: float, expert_ffn_ms: float) -> float | None:
    """Routing share of the MoE block; None when no MoE node ran (dense model, or no graphs)."""
    moe_ms = routing_ms + expert_ffn_ms
    return routing_ms / moe_ms if moe_ms > 0.0 else None
