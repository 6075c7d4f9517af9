"""report_findings: the MoE-vs-dense table and the sentences derived from it, on the H200 run's tables."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from moebench.analysis.tables import AnalysisResult
from moebench.analysis.findings import finding_rows, section_findings

TABLES = Path(__file__).resolve().parents[1] / "fixtures" / "summary_tables_h200"
MOE = "olmoe-1b-7b-0924-instruct-q4km"
EXP1 = "experiment_1_efficiency"


def _analysis(edit=None) -> AnalysisResult:
    frames = {name: pd.read_csv(TABLES / f"{name}.csv")
              for name in ("axes_summary", "roofline_summary", "per_model_summary")}
    if edit:
        edit(frames)
    return AnalysisResult(raw_dir=TABLES, output_dir=TABLES, files=[], records=[], frame=pd.DataFrame(),
                          frames=frames)


def _exp1(frame: pd.DataFrame, **where) -> pd.Series:
    mask = frame["experiment"] == EXP1
    for column, value in where.items():
        mask &= frame[column] == value
    return mask


def _paragraph(text: str) -> str:
    paragraphs = [line for line in text.splitlines() if line.startswith(f"**{EXP1} on cuda_sm90")]
    assert len(paragraphs) == 1, text
    return paragraphs[0]


def test_h200_findings_state_the_measured_ratios_and_the_bandwidth_prediction():
    text = section_findings(_analysis())
    rows = [line for line in text.splitlines() if line.startswith("| experiment_")]
    assert len(rows) == 12 and all(r.startswith(f"| {EXP1}") for r in rows[:3])  # 3 dense x (Exp1 + 3 lengths)
    llama = next(r for r in rows[:3] if "Llama-3.2-1B-Instruct" in r)
    assert ("| active parameters, memory footprint | 33 | 0.27x [0.26, 0.28] | 2.34x [2.22, 2.46] | 1.07x | 0.93x "
            "| 2.3% / 11.1% | 7.8% |") in llama
    gemma = next(r for r in rows[:3] if "Gemma-2-2B-IT" in r)
    assert "| memory footprint | 33 |" in gemma  # Gemma's total parameters are far from OLMoE's active ones
    paragraph = _paragraph(text)
    assert ("OLMoE-1B-7B-0924-Instruct decodes slower than Gemma-2-2B-IT (0.52x [0.50, 0.54]), "
            "Llama-3.2-1B-Instruct (0.27x [0.26, 0.28]), Qwen2.5-1.5B-Instruct (0.41x [0.40, 0.43]).") in paragraph
    assert "It spends more energy per token than Gemma-2-2B-IT (1.22x [1.17, 1.27])" in paragraph
    assert ("Against Llama-3.2-1B-Instruct it reads 1.07x the bytes per token (active weights and KV cache): "
            "a bandwidth-bound decode would run at 0.93x its speed; measured 0.27x.") in paragraph
    assert "It reaches 2.3% of its active-bytes bound (11.1% counting all weights)" in paragraph
    assert "the dense models reach 6.2% to 8.9% of theirs" in paragraph
    assert "further from the bandwidth bound than every dense model's" in paragraph


def test_an_interval_holding_one_is_not_called_slower_and_a_missing_one_is_named():
    def edit(frames):
        axes = frames["axes_summary"]
        gen = axes["metric"] == "gen_tokens_per_s"
        axes.loc[_exp1(axes, denominator_model="gemma-2-2b-it-q4km") & gen, "ci95_high"] = 1.05
        no_ci = _exp1(axes, denominator_model="qwen2.5-1.5b-instruct-q4km") & gen
        axes.loc[no_ci, ["ci95_low", "ci95_high"]] = None
    paragraph = _paragraph(section_findings(_analysis(edit)))
    assert "decodes slower than Llama-3.2-1B-Instruct (0.27x [0.26, 0.28]);" in paragraph
    assert "decodes at a speed not distinguishable from Gemma-2-2B-IT (0.52x [0.50, 1.05])" in paragraph
    assert "has too few pairs for an interval against Qwen2.5-1.5B-Instruct (0.41x (n=33, no interval))" in paragraph


def test_the_moe_is_not_called_furthest_from_the_bound_when_a_dense_model_is_further():
    def edit(frames):
        roof = frames["roofline_summary"]
        roof.loc[_exp1(roof, model_id="qwen2.5-1.5b-instruct-q4km"), "fraction_of_active_bound"] = 0.01
    paragraph = _paragraph(section_findings(_analysis(edit)))
    assert "the dense models reach 1.0% to 8.9% of theirs" in paragraph
    assert "further from the bandwidth bound" not in paragraph


def test_without_a_roofline_the_ratios_stand_and_no_prediction_is_made():
    def edit(frames):
        frames["roofline_summary"] = frames["roofline_summary"].iloc[0:0]
    analysis = _analysis(edit)
    assert all(r["bytes_ratio"] is None for r in finding_rows(analysis))
    paragraph = _paragraph(section_findings(analysis))
    assert "decodes slower than" in paragraph and "bandwidth" not in paragraph


def test_no_moe_dense_pairs_no_section():
    def edit(frames):
        frames["axes_summary"] = frames["axes_summary"].iloc[0:0]
    assert section_findings(_analysis(edit)) is None
