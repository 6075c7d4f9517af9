"""figures.py: PNG and PDF files from summary tables; figures without data are skipped with a reason."""

from __future__ import annotations

import json
from pathlib import Path

from moebench.analysis.tables import analyze
from moebench.analysis.figures import FIGURES, MANIFEST, render_figures
from test_analyze import GEMMA, GOOD_RUN, LLAMA, MOE, QWEN, analysis_config, four_models, make_record, write_jsonl


def _render(tmp_path: Path, records: list[dict]):
    write_jsonl(tmp_path / "raw", "run.jsonl", records)
    analyze(analysis_config(), tmp_path / "raw", tmp_path / "out")
    out = tmp_path / "out"
    return render_figures(out / "summary_tables", out / "figures", out / "figures_pub"), out


def test_headline_figures_written_and_sweeps_skipped(tmp_path):
    written, out = _render(tmp_path, four_models({MOE: [9.0, 9.5, 8.5], LLAMA: [10.0, 10.4, 9.6],
                                                  QWEN: [8.0, 8.3, 7.7], GEMMA: [6.0, 6.2, 5.8]}))
    names = {p.stem for p in written}
    assert {"gen_throughput", "prefill_throughput", "peak_rss_vs_model_size", "axes_ratios"} <= names
    for path in written:
        data = path.read_bytes()
        assert len(data) > 1000
        if path.suffix == ".pdf":
            assert data.startswith(b"%PDF")
            assert path.parent.name == "figures_pub"
        else:
            assert data.startswith(b"\x89PNG")
    manifest = json.loads((out / "figures" / MANIFEST).read_text())
    assert set(manifest["skipped"]) == {"roofline_fraction", "sequence_length_sweep", "thread_sweep"}
    assert "sweep was not run" in manifest["skipped"]["thread_sweep"]
    assert "no single spec applies" in manifest["skipped"]["roofline_fraction"]  # devices.yaml cpu source text
    assert set(manifest["skipped"]) | names == set(FIGURES)


def test_sweep_and_roofline_figures_when_present(tmp_path):
    records = []
    for threads in (4, 8):
        records += [make_record(LLAMA, 10.0 + threads + i, rep=i, experiment="experiment_a_cpu_thread_sweep",
                                threads=threads, device="m2") for i in range(2)]
    for n_predict in (64, 256):
        records += [make_record(MOE, 12.0 - n_predict / 100 + i, rep=i, experiment="experiment_2_sequence_length",
                                n_predict=n_predict, device="m2") for i in range(2)]
    written, out = _render(tmp_path, records)
    names = {p.stem for p in written}
    assert {"thread_sweep", "sequence_length_sweep", "roofline_fraction"} <= names
    assert all(p.stat().st_size > 0 for p in written)


def test_figures_of_the_recorded_smoke_run(tmp_path):
    records = [json.loads(line) for line in GOOD_RUN.read_text().splitlines()]
    written, out = _render(tmp_path, records)
    names = {p.stem for p in written}
    assert {"gen_throughput", "prefill_throughput", "peak_rss_vs_model_size", "axes_ratios"} <= names
    assert all(p.stat().st_size > 1000 for p in written)
    assert {p.suffix for p in written} == {".png", ".pdf"}
    manifest = json.loads((out / "figures" / MANIFEST).read_text())
    assert set(manifest["skipped"]) == {"roofline_fraction", "sequence_length_sweep", "thread_sweep"}


def test_figures_are_the_same_bytes_when_rendered_again(tmp_path):
    written, out = _render(tmp_path, four_models({MOE: [9.0, 9.5, 8.5], LLAMA: [10.0, 10.4, 9.6]}))
    first = {p: p.read_bytes() for p in written}
    again = render_figures(out / "summary_tables", out / "figures", out / "figures_pub")
    assert sorted(again) == sorted(first) and all(p.read_bytes() == first[p] for p in again)
