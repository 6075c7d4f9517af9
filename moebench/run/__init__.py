"""The run stage: one experiment matrix through the pinned binaries. plan.py expands it into cells
(in the interleaved or the study's fixed order); engines.py runs each through llama-cli or llama-server
(children.py keeps no process alive past the harness) while monitors/ sample the process; parse.py
turns llama.cpp's text into numbers; provenance.py and records.py make each cell a validated, fsynced
JSONL record (experiment.py drives it all). Takes configs/, binaries and model files; gives records."""
