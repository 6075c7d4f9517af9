"""How many tokens each prompt of the study is, per model, counted by the pinned llama.cpp itself.

The tokenizer decides the work: a prompt's token count is what prefill processes, and with the
largest n_predict of any experiment it says whether the prompt fits the context at all (llama-server
would truncate it, llama-cli refuse it). Counts come from llama-server's /tokenize on the model file
the runs use, the tokenizer a /completion request goes through, with BOS added where the model
adds it. The same server checks a replica's tokenizer against test vectors in the format of
llama.cpp's tests/test-tokenizer-0.cpp (`models/*.gguf.inp|out`): every input must give exactly the
recorded ids.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moebench.config import Config
from moebench.run.engines import ServerEngine
from moebench.files import write_atomic
from moebench.hashing import sha256_file
from moebench.run.plan import Knobs

VECTOR_SEPARATOR = "\n__ggml_vocab_test__\n"
TOKENIZE_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class TokenizerVector:
    text: str
    ids: list[int]


@dataclass(frozen=True)
class Mismatch:
    text: str
    expected: list[int]
    got: list[int]


def read_test_vectors(prefix: Path) -> list[TokenizerVector]:
    """`<prefix>.inp` and `<prefix>.out` read as test-tokenizer-0.cpp reads them."""
    raw = Path(f"{prefix}.inp").read_text(encoding="utf-8")
    texts = raw.split(VECTOR_SEPARATOR)
    if texts and texts[-1] == "":   # the file ends with a separator, which opens no further input
        texts.pop()
    lines = Path(f"{prefix}.out").read_text(encoding="utf-8").splitlines()
    if len(texts) != len(lines):
        raise ValueError(f"{prefix}.inp has {len(texts)} inputs but {prefix}.out has {len(lines)} lines")
    return [TokenizerVector(text, [int(t) for t in line.split()]) for text, line in zip(texts, lines)]


def tokenize_knobs(cfg: Config) -> Knobs:
    """The experiments' server settings: the context and batch sizes a run's llama-server starts with."""
    gen = cfg.experiments.generation
    return Knobs(threads=1, n_predict=gen.n_predict, ctx_size=gen.ctx_size, batch_size=gen.batch_size,
                 ubatch_size=gen.ubatch_size, n_gpu_layers=0, seed=gen.seed, temperature=gen.temperature,
                 ignore_eos=gen.ignore_eos)


def check_vectors(engine: ServerEngine, model: Path, knobs: Knobs, vectors: list[TokenizerVector]) -> list[Mismatch]:
    """Every vector whose text the model's tokenizer turns into other ids (no special tokens added)."""
    mismatches = []
    for vector in vectors:
        got = engine.tokenize(model, knobs, vector.text, add_special=False)
        if got != vector.ids:
            mismatches.append(Mismatch(vector.text, vector.ids, got))
    return mismatches


def largest_n_predict(cfg: Config) -> int:
    """The most tokens any experiment generates after a prompt: the room a prompt must leave."""
    values = [cfg.experiments.generation.n_predict]
    for exp in cfg.experiments.experiments.values():
        values.append(int(exp.generation.get("n_predict", cfg.experiments.generation.n_predict)))
        values += list(exp.sweep.n_predict or ())
    return max(values)


def prompt_token_table(cfg: Config, models: dict[str, Path], server_binary: Path, *,
                       model_sha256: dict[str, str] | None = None,
                       vector_files: dict[str, tuple[str, Path]] | None = None) -> dict[str, Any]:
    """Token count of every prompt for every model in `models` (id -> GGUF), and whether it fits.

    `model_sha256` gives digests already taken (a full replica is GBs to hash); `vector_files`
    (model id -> (label, .inp/.out prefix)) adds each model's test-vector result.
    """
    knobs = tokenize_knobs(cfg)
    room = largest_n_predict(cfg)
    limit = knobs.ctx_size - room
    table: dict[str, Any] = {
        "method": "llama-server POST /tokenize (add_special: true, special-token text parsed), the tokenizer a "
                  "/completion prompt goes through",
        "llama_server_sha256": sha256_file(server_binary), "ctx_size": knobs.ctx_size,
        "largest_n_predict": room, "prompt_token_limit": limit, "models": {},
    }
    with tempfile.TemporaryDirectory(prefix="moebench-tokenize-") as work:
        engine = ServerEngine(server_binary, Path(work), TOKENIZE_TIMEOUT_S)
        try:
            for model_id, path in models.items():
                spec = cfg.models.models[model_id]
                counts = {p.id: len(engine.tokenize(path, knobs, p.text, add_special=True))
                          for p in cfg.prompts.prompts}
                entry: dict[str, Any] = {
                    "tokenizer": spec.tokenizer.statement, "model_sha256": (model_sha256 or {}).get(model_id) or sha256_file(path),
                    "prompts": {p.id: {"characters": len(p.text), "tokens": counts[p.id],
                                       "fits": counts[p.id] <= limit} for p in cfg.prompts.prompts},
                    "max_tokens": max(counts.values()), "all_fit": all(n <= limit for n in counts.values()),
                }
                if vector_files and model_id in vector_files:
                    label, prefix = vector_files[model_id]
                    vectors = read_test_vectors(prefix)
                    mismatches = check_vectors(engine, path, knobs, vectors)
                    entry["test_vectors"] = {"file": label, "inputs": len(vectors), "mismatches": len(mismatches)}
                table["models"][model_id] = entry
        finally:
            engine.close()
    return table


def write_table(table: dict[str, Any], path: Path) -> Path:
    return write_atomic(path, json.dumps(table, indent=2) + "\n")


def render_table(table: dict[str, Any]) -> str:
    """Prompts down, models across: the token counts, `!` where a prompt does not fit."""
    models = list(table["models"])
    prompts = list(next(iter(table["models"].values()))["prompts"]) if models else []
    width = max([len(p) for p in prompts] + [6])
    lines = [f"{'prompt':<{width}}  " + "  ".join(f"{m[:12]:>12}" for m in models)]
    for prompt in prompts:
        cells = []
        for model in models:
            cell = table["models"][model]["prompts"][prompt]
            cells.append(f"{cell['tokens']:>11}{' ' if cell['fits'] else '!'}")
        lines.append(f"{prompt:<{width}}  " + "  ".join(cells))
    lines.append(f"limit: {table['prompt_token_limit']} tokens (ctx {table['ctx_size']} - largest n_predict "
                 f"{table['largest_n_predict']}); `!` = does not fit")
    return "\n".join(lines)


def vector_files(cfg: Config, tree: Path) -> dict[str, tuple[str, Path]]:
    """Each model's test vectors, labelled: llama.cpp's own in the pinned `tree`, else the kit's."""
    files = {}
    for model_id, spec in cfg.models.models.items():
        if spec.tokenizer.test_vectors:
            files[model_id] = (f"llama.cpp {spec.tokenizer.test_vectors}", tree / spec.tokenizer.test_vectors)
        elif spec.tokenizer.recorded_vectors:
            files[model_id] = (spec.tokenizer.recorded_vectors, cfg.root.parent / spec.tokenizer.recorded_vectors)
    return files


def count_prompt_tokens(cfg: Config, *, source: str, scale: str, pin: str, device: str,
                        output: Path | None) -> dict[str, Any]:
    """The table for the models of `source`/`scale` (hash-checked against the lock first), written to
    `output` when given; `problems` says what in it fails the study."""
    from moebench.pins.build import binary_path
    from moebench.errors import UserError
    from moebench.models import registry
    from moebench.pins.source import fetch_source

    refs = [registry.resolve(cfg, model_id, source, scale, pin) for model_id in cfg.models.models]
    missing = [ref.model_id for ref in refs if not ref.path.is_file()]
    if missing:
        hint = f"invoke models.replica --scale {scale} --pin {pin}" if source == "replica" else "invoke models.download"
        raise UserError(refs[0].path.parent, f"no model file for {', '.join(missing)}", f"run `{hint}` first")
    digests = {ref.model_id: registry.verify(ref, allow_unpinned=True) for ref in refs}
    table = prompt_token_table(cfg, {ref.model_id: ref.path for ref in refs},
                               Path(binary_path(device, pin, "llama-server")), model_sha256=digests,
                               vector_files=vector_files(cfg, fetch_source(cfg, pin, progress=False).path))
    table = {"model_source": source, "replica_scale": scale if source == "replica" else None, "llama_cpp_pin": pin,
             "device": device, **table}
    if output is not None:
        write_table(table, output)
    return table


def problems(table: dict[str, Any]) -> list[str]:
    """A line per prompt that does not fit and per model whose tokenizer missed a test vector."""
    lines = []
    for model_id, entry in table["models"].items():
        lines += [f"{model_id}: {prompt} is {cell['tokens']} tokens, over the {table['prompt_token_limit']} that "
                  f"leave room for n_predict {table['largest_n_predict']}"
                  for prompt, cell in entry["prompts"].items() if not cell["fits"]]
        vectors = entry.get("test_vectors")
        if vectors and vectors["mismatches"]:
            lines.append(f"{model_id}: {vectors['mismatches']} of {vectors['inputs']} test vectors of "
                         f"{vectors['file']} tokenize to other ids")
    return lines
