"""Same work, provably: token fingerprints in real records of both runners, compare's per-cell
verdict on them, and the run order (interleaved and fixed) with resume. Real runs of the kit's
pinned cpu build on its tiny replicas (runner_support)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from moebench.run import engines
from moebench.evidence.compare import compare_work
from moebench.config import load_config
from moebench.errors import UserError
from moebench.hashing import token_ids_sha256
from moebench.run.plan import Knobs
from moebench.run.records import read_records
from runner_support import MODEL, run_smoke, swap_model

pytestmark = pytest.mark.slow
OTHER = "qwen2.5-1.5b-instruct-q4km"


def measured(path: Path) -> list[dict]:
    return [r for r in read_records(path) if not r["is_warmup"]]


def test_both_runners_fingerprint_the_same_tokens(kit, tmp_path):
    """llama-cli's log and llama-server's answer give the same prompt ids (checked against the server's
    /tokenize) and, one thread on one backend, the same greedy sequence."""
    cfg_dir, bin_dir, model = kit
    by_mode = {}
    for mode in ("cli", "server"):
        run_smoke(cfg_dir, tmp_path / f"{mode}.jsonl", mode)
        by_mode[mode] = measured(tmp_path / f"{mode}.jsonl")
        assert all(r["status"] == "ok" and r["prompt_tokens_sha256"] for r in by_mode[mode])
    cli, server = by_mode["cli"], by_mode["server"]
    assert all(r["gen_tokens_sha256"] for r in cli)
    assert {r["prompt_tokens_sha256"] for r in cli} == {r["prompt_tokens_sha256"] for r in server}
    assert len({r["gen_tokens_sha256"] for r in cli}) == 1  # greedy repeats itself
    streamed = [r for r in server if r["gen_tokens_sha256"]]
    assert all(r["gen_tokens_sha256"] == cli[0]["gen_tokens_sha256"] for r in streamed)
    for r in server:
        if not r["gen_tokens_sha256"]:  # a token held back mid UTF-8 character: said, not guessed
            assert "generated token ids" in r["null_reasons"]["gen_tokens_sha256"]
    engine = engines.ServerEngine(bin_dir / "llama-server", tmp_path, 60.0)
    try:
        text = load_config(cfg_dir).prompt(cli[0]["prompt_id"]).text.rstrip("\n")
        ids = engine.tokenize(model, Knobs(**cli[0]["knobs"]), text, add_special=True)
    finally:
        engine.close()
    assert token_ids_sha256(ids) == cli[0]["prompt_tokens_sha256"] and len(ids) == cli[0]["prompt_tokens"]


def test_compare_tells_the_same_work_from_a_changed_prompt_and_another_model(kit, tmp_path, monkeypatch,
                                                                             tiny_replica_paths):
    cfg_dir, _, _ = kit
    run_smoke(cfg_dir, tmp_path / "a.jsonl", "cli")
    run_smoke(cfg_dir, tmp_path / "b.jsonl", "cli")
    same = compare_work(measured(tmp_path / "a.jsonl"), measured(tmp_path / "b.jsonl"))
    assert same and all(w.model == "same" and w.prompt_tokens == w.gen_tokens == "match" for w in same)
    assert not any(w.differs for w in same)

    prompts = cfg_dir / "prompts.yaml"   # the same prompt id with other text: other prompt tokens
    data = yaml.safe_load(prompts.read_text())
    data["prompts"][0]["text"] = "What is the capital of Portugal? Answer in one word."
    prompts.write_text(yaml.safe_dump(data, sort_keys=False))
    run_smoke(cfg_dir, tmp_path / "c.jsonl", "cli", allow_unverified=True)
    changed = compare_work(measured(tmp_path / "a.jsonl"), measured(tmp_path / "c.jsonl"))
    assert [w.prompt_tokens for w in changed] == ["mismatch"] and changed[0].differs
    assert changed[0].model == "same" and "prompt_tokens_sha256" in changed[0].detail

    swap_model(monkeypatch, tiny_replica_paths[OTHER])  # another model file under the same model id
    run_smoke(cfg_dir, tmp_path / "d.jsonl", "cli", allow_unverified=True)
    other = compare_work(measured(tmp_path / "b.jsonl"), measured(tmp_path / "d.jsonl"))
    assert [w.model for w in other] == ["different"] and other[0].differs
    assert other[0].gen_tokens == "mismatch" and other[0].expected is None  # same binary: not to be expected


def test_compare_says_a_divergence_on_another_binary_is_expected(kit, tmp_path):
    cfg_dir, _, _ = kit
    run_smoke(cfg_dir, tmp_path / "a.jsonl", "cli")
    a = measured(tmp_path / "a.jsonl")
    b = json.loads(json.dumps(a))
    for r in b:  # what another lab's GPU build would record: its own binary, its own greedy sequence
        r["provenance"]["binary_sha256"] = "0" * 64
        r["gen_tokens_sha256"] = token_ids_sha256([1, 2, 3])
    [result] = compare_work(a, b)
    assert result.gen_tokens == "mismatch" and result.expected == "expected: different runner binaries"


@pytest.mark.parametrize("order", ["interleaved", "fixed"])
def test_both_orders_complete_resume_and_record_their_order(kit, tmp_path, order):
    cfg_dir, _, _ = kit
    out = tmp_path / f"{order}.jsonl"
    run_smoke(cfg_dir, out, "cli", model=[MODEL, OTHER], order=order, order_seed=11 if order == "interleaved" else None)
    records = list(read_records(out))
    assert len(records) == 6 and {r["order"]["mode"] for r in records} == {order}
    assert [r["order"]["position"] for r in records] == list(range(6))
    assert {r["order"]["seed"] for r in records} == ({11} if order == "interleaved" else {None})
    models = [r["model_id"] for r in records if not r["is_warmup"]]
    if order == "fixed":
        assert models == [MODEL, MODEL, OTHER, OTHER]
    else:
        assert [r["repetition"] for r in records if not r["is_warmup"]] == [0, 0, 1, 1]
    lines = out.read_bytes().splitlines(keepends=True)
    out.write_bytes(b"".join(lines[:3]))  # an interrupted run: three records saved
    summary = run_smoke(cfg_dir, out, "cli", model=[MODEL, OTHER], order=order, resume=True)  # no seed given
    assert summary.cells_skipped == 3 and summary.cells_written == 3
    resumed = list(read_records(out))
    assert [r["cell_key"] for r in resumed] == [r["cell_key"] for r in records]
    assert [r["order"] for r in resumed] == [r["order"] for r in records]


def test_a_resume_in_another_order_is_refused(kit, tmp_path):
    cfg_dir, _, _ = kit
    out = tmp_path / "run.jsonl"
    run_smoke(cfg_dir, out, "cli", order_seed=5)
    with pytest.raises(UserError, match="order-seed=5"):
        run_smoke(cfg_dir, out, "cli", resume=True, order_seed=6)
    with pytest.raises(UserError, match="--order=interleaved"):
        run_smoke(cfg_dir, out, "cli", resume=True, order="fixed")
