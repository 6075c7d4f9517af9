import json
import subprocess
import sys

import pytest

from moebench.errors import UserError
from moebench.run.records import MEASUREMENT_FIELDS, RecordError, RecordWriter, read_records, validate_record

PROV = {
    "allow_unverified": False, "binary_name": "llama-cli", "binary_sha256": "ab" * 32, "build_flags": ["-DGGML_NATIVE=OFF"],
    "clocks": None, "command_line": ["invoke", "run"], "compiler": "cc", "config_sha256": {"lock.yaml": "00"},
    "host": {"cpu_model": "x"}, "image_digest": None, "kit_commit": "c" * 40, "kit_dirty": False,
    "llama_cpp_commit": "f" * 40, "llama_cpp_pin": "offline", "model_path": "/m.gguf", "model_sha256": "d" * 64,
    "model_source": "replica", "null_reasons": {"clocks": "none", "image_digest": "not in a container"},
    "power_mode": "15W", "source_channel": "pypi_sdist", "source_tree_hash": "e" * 40,
    "started_at": "2026-11-22T21:00:00.000Z", "toolchain_id": "gcc-12", "verified": True,
}


def record(key="k1", **over):
    rec = {name: 1.0 for name in MEASUREMENT_FIELDS}
    rec.update({"prompt_tokens": 10, "gen_tokens": 20, "peak_rss_bytes": 100, "model_file_bytes": 5})
    rec.update({
        "schema_version": 1, "record_id": "0123456789abcdef", "run_id": "r", "cell_key": key, "experiment": "e",
        "device": "cpu", "model_id": "m", "model_source": "replica", "replica_scale": "tiny", "prompt_id": "p",
        "prompt_length_class": "short", "repetition": 0, "is_warmup": False, "runner_mode": "server",
        "knobs": {"threads": 2, "n_predict": 16, "ctx_size": 512, "batch_size": 512, "ubatch_size": 512,
                  "n_gpu_layers": 0, "seed": 42, "temperature": 0.0, "ignore_eos": True},
        "status": "ok", "failure": None, "null_reasons": {}, "monitors": {}, "started_at": "2026-11-22T21:00:00Z",
        "provenance": dict(PROV),
    })
    rec.update(over)
    return rec


def test_valid_record_passes():
    validate_record(record())


def test_null_without_reason_is_rejected():
    with pytest.raises(RecordError, match="energy_joules is null without"):
        validate_record(record(energy_joules=None))
    validate_record(record(energy_joules=None, null_reasons={"energy_joules": "no power probe"}))


def test_provenance_null_without_reason_is_rejected():
    prov = dict(PROV, kit_commit=None)
    with pytest.raises(RecordError, match="provenance.kit_commit"):
        validate_record(record(provenance=prov))


def test_schema_violations_are_rejected():
    with pytest.raises(RecordError):
        validate_record(record(status="failed"))  # failed needs a failure object
    with pytest.raises(RecordError):
        validate_record(record(unknown_field=1))
    with pytest.raises(RecordError):
        validate_record(record(gen_tokens_per_s=-1.0))


def test_writer_appends_and_indexes(tmp_path):
    out = tmp_path / "run.jsonl"
    with RecordWriter(out, resume=False) as writer:
        writer.append(record("a"))
        writer.append(record("b"))
        with pytest.raises(RecordError):
            writer.append(record("c", energy_joules=None))
    assert [r["cell_key"] for r in read_records(out)] == ["a", "b"]


def test_existing_output_needs_resume(tmp_path):
    out = tmp_path / "run.jsonl"
    with RecordWriter(out, resume=False) as writer:
        writer.append(record("a"))
    with pytest.raises(UserError, match="--resume"):
        RecordWriter(out, resume=False)
    with RecordWriter(out, resume=True) as writer:
        assert writer.done_keys == {"a"}


def test_torn_last_line_is_dropped_on_resume(tmp_path):
    out = tmp_path / "run.jsonl"
    out.write_text(json.dumps(record("a")) + "\n" + '{"cell_key": "b", "trunc')
    with RecordWriter(out, resume=True) as writer:
        assert writer.done_keys == {"a"}
        writer.append(record("b"))
    assert [r["cell_key"] for r in read_records(out)] == ["a", "b"]


def test_second_writer_is_refused_even_from_another_process(tmp_path):
    out = tmp_path / "run.jsonl"
    with RecordWriter(out, resume=False):
        with pytest.raises(UserError, match="another run"):
            RecordWriter(out, resume=True)
        code = ("import sys; from pathlib import Path; from moebench.run.records import RecordWriter\n"
                "from moebench.errors import UserError\n"
                f"try:\n    RecordWriter(Path({str(out)!r}), resume=True)\nexcept UserError as e:\n    print(e); sys.exit(3)")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert done.returncode == 3 and "another run" in done.stdout
    with RecordWriter(out, resume=True):
        pass
