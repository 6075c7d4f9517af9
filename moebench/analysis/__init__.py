"""The analysis stage: records to results. frame.py loads them into one DataFrame; stats.py (intervals
that respect the quantity), axes.py (paired MoE/dense ratios), roofline.py and roofline_table.py,
warmup.py and tables.py make the summary tables; figures.py draws them; report.py (with findings.py
and format.py) writes REPORT.md. Takes JSONL records; gives results/."""
