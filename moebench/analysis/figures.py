"""Summary tables -> figures: PNGs for browsing (results/figures) and vector PDFs (results/figures_pub).

Every figure is drawn from results/summary_tables/*.csv only, so it can be re-rendered without the raw
data. Values are the tables' geometric means and error bars their 95% intervals (a t-interval on log
values, so a bar never reaches below zero); a value without an interval (n < 3) is drawn without one. A
figure whose data is absent is skipped with the reason, listed in figures/figures.json and printed.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RC_PARAMS = {
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "pdf.fonttype": 42,  # TrueType in PDFs: text stays text, fonts embedded
    "ps.fonttype": 42,
    "svg.fonttype": "none",
    "figure.dpi": 100,
    "savefig.bbox": "tight",
}
PNG_DPI = 150
MANIFEST = "figures.json"


class FigureSet(list):
    """The written paths; `skipped` maps each figure not drawn to the reason."""

    def __init__(self) -> None:
        super().__init__()
        self.skipped: dict[str, str] = {}


def read_table(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        return [{k: _value(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def _value(text: str) -> Any:
    if text == "":
        return None
    try:
        number = float(text)
    except ValueError:
        return text
    return int(number) if number.is_integer() and "." not in text and "e" not in text.lower() else number


def _label(row: dict[str, Any]) -> str:
    source = row["model_source"] + (f"-{row['replica_scale']}" if row.get("replica_scale") else "")
    return f"{row['device']} · {source} · t={row['threads']} n={row['n_predict']}"


def _centre(row: dict[str, Any], prefix: str) -> float:
    """The geometric mean the interval is centred on; the mean for tables without one."""
    value = row.get(f"{prefix}_geomean")
    return row[f"{prefix}_mean"] if value is None else value


def _errors(rows: list[dict[str, Any]], prefix: str, scale: float = 1.0) -> list[list[float]]:
    low, high = [], []
    for row in rows:
        centre, lo, hi = _centre(row, prefix), row[f"{prefix}_ci95_low"], row[f"{prefix}_ci95_high"]
        low.append(0.0 if lo is None else max(0.0, (centre - lo) / scale))
        high.append(0.0 if hi is None else max(0.0, (hi - centre) / scale))
    return [low, high]


def _grouped_bars(ax, rows: list[dict[str, Any]], prefix: str, scale: float = 1.0) -> None:
    """Bars per model, one colour per context (device, weights, knobs), CI error bars."""
    rows = [r for r in rows if r[f"{prefix}_mean"] is not None]
    models = list(dict.fromkeys(r["display_name"] for r in rows))
    contexts = defaultdict(list)
    for row in rows:
        contexts[_label(row)].append(row)
    width = 0.8 / max(1, len(contexts))
    for i, (label, ctx_rows) in enumerate(contexts.items()):
        xs = [models.index(r["display_name"]) + (i - (len(contexts) - 1) / 2) * width for r in ctx_rows]
        ax.bar(xs, [_centre(r, prefix) / scale for r in ctx_rows], width, label=label,
               yerr=_errors(ctx_rows, prefix, scale), capsize=3)
    ax.set_xticks(range(len(models)), models, rotation=15, ha="right")
    ax.legend(frameon=False)


def _headline(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of the efficiency experiment if present, else of every unswept experiment."""
    chosen = [r for r in rows if r["experiment"] == "experiment_1_efficiency"]
    return chosen or rows


def fig_throughput(tables: dict[str, list[dict]], metric: str, ylabel: str, title: str):
    rows = [r for r in _headline(tables["per_model_summary"]) if r[f"{metric}_mean"] is not None]
    if not rows:
        return None, f"no measured {metric} in per_model_summary.csv"
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    _grouped_bars(ax, rows, metric)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return fig, None


def fig_rss_vs_size(tables):
    rows = [r for r in _headline(tables["per_model_summary"])
            if r["peak_rss_bytes_mean"] is not None and isinstance(r["model_file_bytes"], (int, float))]
    if not rows:
        return None, "no rows with both peak RSS and model file size"
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    mib = 2 ** 20
    for row in rows:
        ax.errorbar(row["model_file_bytes"] / mib, _centre(row, "peak_rss_bytes") / mib,
                    yerr=_errors([row], "peak_rss_bytes", mib),
                    fmt="o", capsize=3, label=f"{row['display_name']} ({_label(row)})")
    ax.set_xlabel("model file size (MiB)")
    ax.set_ylabel("peak RSS, geometric mean (MiB)")
    ax.set_title("Peak resident memory vs model file size (95% CI)")
    ax.legend(frameon=False, fontsize=7)
    return fig, None


def fig_axes(tables):
    rows = [r for r in tables["axes_summary"] if r.get("ratio") is not None]
    rows = [r for r in rows if r["experiment"] == "experiment_1_efficiency"] or rows
    if not rows:
        return None, "no ratios in axes_summary.csv"
    labels = [f"{r['axis'].replace('_', ' ')}: {r['metric']} vs {r['denominator_model']} ({r['device']}, "
              f"{r['model_source']})" for r in rows]
    fig, ax = plt.subplots(figsize=(7.0, 0.3 * len(rows) + 1.2))
    ys = list(range(len(rows)))
    err = [[0.0 if r["ci95_low"] is None else r["ratio"] - r["ci95_low"] for r in rows],
           [0.0 if r["ci95_high"] is None else r["ci95_high"] - r["ratio"] for r in rows]]
    ax.errorbar([r["ratio"] for r in rows], ys, xerr=err, fmt="o", capsize=3)
    ax.axvline(1.0, color="grey", linestyle="--", linewidth=0.8)
    ax.set_yticks(ys, labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("MoE / dense, geometric mean of paired ratios (log scale; 95% t-interval on log ratios)")
    ax.set_title("Active-parameter and memory-footprint axes")
    return fig, None


def fig_roofline(tables):
    rows = [r for r in tables["roofline_summary"] if r.get("fraction_of_active_bound") is not None]
    if not rows:
        notes = {r.get("note") for r in tables["roofline_summary"] if r.get("note")}
        return None, "no bandwidth-bound fraction (" + ("; ".join(sorted(notes)) or "no roofline rows") + ")"
    # horizontal bars: one label per cell stays readable however many cells (models x lengths) there are
    fig, ax = plt.subplots(figsize=(6.4, 0.32 * len(rows) + 1.4))
    ys = range(len(rows))
    ax.barh([y - 0.2 for y in ys], [r["fraction_of_active_bound"] for r in rows], 0.4, label="of active-weights bound")
    ax.barh([y + 0.2 for y in ys], [r["fraction_of_all_weights_bound"] for r in rows], 0.4, label="of all-weights bound")
    ax.set_yticks(list(ys), [f"{r['display_name']} ({r['device']}, n={r['n_predict']})" for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("measured gen tok/s / bandwidth bound")
    ax.set_title("Decode throughput as a fraction of the memory-bandwidth bound")
    ax.legend(frameon=False, fontsize=7)
    return fig, None


def _lines(tables, table: str, x: str, xlabel: str, title: str, extra: Callable[[dict], str] = lambda r: ""):
    rows = [r for r in tables[table] if r["gen_tokens_per_s_mean"] is not None]
    if not rows:
        source = "sequence_length_summary" if table == "seq" else table
        return None, f"{source}.csv has no measured gen tok/s (the sweep was not run)"
    series = defaultdict(list)
    for row in rows:
        series[f"{row['display_name']} ({row['device']}, {row['model_source']}{extra(row)})"].append(row)
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for label, points in series.items():
        points.sort(key=lambda r: r[x])
        ax.errorbar([p[x] for p in points], [_centre(p, "gen_tokens_per_s") for p in points],
                    yerr=_errors(points, "gen_tokens_per_s"), marker="o", capsize=3, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("generation throughput (tok/s)")
    ax.set_title(title)
    ax.legend(frameon=False, fontsize=7)
    return fig, None


def _sequence_rows(tables):
    """sequence_length_summary pooled over prompt classes is per_model_summary of the same experiment."""
    experiments = {r["experiment"] for r in tables["sequence_length_summary"]}
    return {"seq": [r for r in tables["per_model_summary"] if r["experiment"] in experiments]}


FIGURES: dict[str, Callable] = {
    "gen_throughput": lambda t: fig_throughput(t, "gen_tokens_per_s", "generation throughput (tok/s)",
                                               "Generation throughput per model (geometric mean, 95% CI)"),
    "prefill_throughput": lambda t: fig_throughput(t, "prefill_tokens_per_s", "prefill throughput (tok/s)",
                                                   "Prefill throughput per model (geometric mean, 95% CI)"),
    "peak_rss_vs_model_size": fig_rss_vs_size,
    "axes_ratios": fig_axes,
    "roofline_fraction": fig_roofline,
    "sequence_length_sweep": lambda t: _lines(_sequence_rows(t), "seq", "n_predict", "generated tokens (n_predict)",
                                              "Generation throughput vs generation length (95% CI)"),
    "thread_sweep": lambda t: _lines(t, "cpu_thread_sweep_summary", "threads", "CPU threads",
                                     "Generation throughput vs CPU threads (95% CI)"),
}
TABLE_NAMES = ("per_model_summary", "sequence_length_summary", "cpu_thread_sweep_summary", "axes_summary",
               "roofline_summary")


def render_figures(summary_dir: Path, figures_dir: Path, figures_pub_dir: Path) -> FigureSet:
    """Draw every figure whose data exists: <name>.png in figures_dir, <name>.pdf in figures_pub_dir."""
    summary_dir, figures_dir, figures_pub_dir = Path(summary_dir), Path(figures_dir), Path(figures_pub_dir)
    tables = {name: read_table(summary_dir / f"{name}.csv") for name in TABLE_NAMES}
    figures_dir.mkdir(parents=True, exist_ok=True)
    figures_pub_dir.mkdir(parents=True, exist_ok=True)
    written = FigureSet()
    with plt.rc_context(RC_PARAMS):
        for name, draw in FIGURES.items():
            fig, why = draw(tables)
            if fig is None:
                written.skipped[name] = why
                print(f"skipped figure {name}: {why}")
                continue
            try:
                fig.savefig(figures_dir / f"{name}.png", dpi=PNG_DPI)
                fig.savefig(figures_pub_dir / f"{name}.pdf", metadata={"CreationDate": None})  # same bytes each run
            finally:
                plt.close(fig)
            written += [figures_dir / f"{name}.png", figures_pub_dir / f"{name}.pdf"]
    manifest = {"written": [str(p.relative_to(figures_dir.parent)) if p.is_relative_to(figures_dir.parent) else str(p)
                            for p in written], "skipped": written.skipped}
    (figures_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return written
