"""Formatting shared by the report's sections: numbers, intervals, ratios, labels and tables.

Every missing value prints as one dash, every interval in brackets after its centre, so the sections
of REPORT.md read alike whichever module writes them.
"""

from __future__ import annotations

from typing import Any, Iterable

MIB = 2 ** 20
DASH = "—"


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return DASH
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def centre(row: dict[str, Any], prefix: str) -> float | None:
    """The geometric mean (the centre of the interval), or the mean where there is none (a value <= 0)."""
    value = row.get(f"{prefix}_geomean")
    return row.get(f"{prefix}_mean") if value is None else value


def fmt_ci(row: dict[str, Any], prefix: str, scale: float = 1.0, digits: int = 1) -> str:
    value = centre(row, prefix)
    if value is None:
        return DASH
    low, high = row.get(f"{prefix}_ci95_low"), row.get(f"{prefix}_ci95_high")
    ci = f" [{low / scale:,.{digits}f}, {high / scale:,.{digits}f}]" if low is not None and high is not None else ""
    return f"{value / scale:,.{digits}f}{ci}"


def fmt_ratio(row: dict[str, Any] | None, digits: int = 2) -> str:
    """`0.88x [0.80, 0.97]`, or `0.88x (n=2, no interval)`; the interval of a paired ratio is never < 0."""
    if row is None or row["ratio"] is None:
        return DASH
    if row["ci95_low"] is None:
        return f"{row['ratio']:.{digits}f}x (n={row['n_pairs']}, no interval)"
    return f"{row['ratio']:.{digits}f}x [{row['ci95_low']:.{digits}f}, {row['ci95_high']:.{digits}f}]"


def fmt_cv(row: dict[str, Any], prefixes: tuple[str, ...]) -> str:
    return " / ".join(DASH if row.get(f"{p}_cv") is None else f"{row[f'{p}_cv']:.2f}" for p in prefixes)


def table(headers: list[str], rows: Iterable[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def short(sha: Any, n: int = 12) -> str:
    return DASH if sha is None else str(sha)[:n]


def knobs_label(row: dict[str, Any]) -> str:
    return f"t={row['threads']}, n={row['n_predict']}, {row['runner_mode']}"


def source_label(row: dict[str, Any]) -> str:
    return row["model_source"] + (f" ({row['replica_scale']})" if row.get("replica_scale") else "")
