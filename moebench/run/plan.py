"""Expand one experiment of experiments.yaml into the ordered list of cells to run.

A cell is model x prompt x repetition x sweep knobs. Two orders:
- `interleaved` (the default): repetition-major. Each repetition runs every (model, knob set) once,
  in an order drawn anew per repetition from a seeded generator, prompts inside; a model's warm-up
  cells come right before its first cell. A drift of the machine over a long run (heat, clocks, a
  neighbour) then spreads over all models instead of landing on the ones that ran last, so paired
  MoE/dense ratios do not inherit it. The seed is in every record, so the order can be replayed.
- `fixed`: model-major, the study's own schedule (one server start per model and knob set), each
  model's warm-ups first; inside, repetitions outer and prompts inner.
`cell_key` is stable across invocations and orders and is what `--resume` matches on; a cell's
position is its index in the planned order.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import psutil

from moebench.config import Config, Device, Generation
from moebench.errors import ConfigError, UserError


@dataclass(frozen=True)
class Knobs:
    threads: int
    n_predict: int
    ctx_size: int
    batch_size: int
    ubatch_size: int
    n_gpu_layers: int
    seed: int
    temperature: float
    ignore_eos: bool

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    def restart_key(self) -> tuple[int, ...]:
        """Knobs a persistent llama-server fixes at start; a change needs a new server."""
        return (self.threads, self.ctx_size, self.batch_size, self.ubatch_size, self.n_gpu_layers)


@dataclass(frozen=True)
class Cell:
    cell_key: str
    experiment: str
    model_id: str
    prompt_id: str
    prompt_length_class: str
    repetition: int
    is_warmup: bool
    knobs: Knobs


ORDERS = ("interleaved", "fixed")


@dataclass(frozen=True)
class Plan:
    experiment: str
    device: str
    smoke: bool
    cells: tuple[Cell, ...]
    order: str = "fixed"
    seed: int | None = None  # the interleaved order's generator seed; None for the fixed order

    @property
    def measured(self) -> tuple[Cell, ...]:
        return tuple(c for c in self.cells if not c.is_warmup)

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c.model_id for c in self.cells))


def device_threads(setting: int | str) -> int:
    if setting == "physical_cores":
        cores = psutil.cpu_count(logical=False)
        if not cores:
            raise UserError("configs/devices.yaml", "this host does not report its physical core count",
                            "set threads to a number for this device, or pass --threads-override", key="threads")
        return cores
    return int(setting)


def _names(value: Any, every: list[str]) -> list[str]:
    return list(every) if value == "all" else list(value)


def cell_key(experiment: str, model_id: str, prompt_id: str, repetition: int, is_warmup: bool, knobs: Knobs) -> str:
    kind = "warmup" if is_warmup else "rep"
    return (f"{experiment}|{model_id}|{prompt_id}|{kind}{repetition}|t{knobs.threads}|n{knobs.n_predict}"
            f"|c{knobs.ctx_size}|b{knobs.batch_size}|ub{knobs.ubatch_size}|ngl{knobs.n_gpu_layers}|s{knobs.seed}")


def expand(cfg: Config, dev: Device, experiment: str, *, smoke: bool = False,
           only_models: tuple[str, ...] | list[str] | None = None, threads_override: int | None = None,
           order: str = "fixed", seed: int | None = None) -> Plan:
    """All cells of `experiment` on the device profile `dev`, after the smoke reduction and the
    command-line filters, in `order` (see the module doc; `interleaved` needs its `seed`)."""
    if order not in ORDERS:
        raise UserError("--order", f"unknown order {order!r}", f"use one of: {', '.join(ORDERS)}")
    if order == "interleaved" and seed is None:
        raise UserError("--order-seed", "the interleaved order needs a seed", "give --order-seed N")
    exp = cfg.experiment(experiment)
    gen = Generation.model_validate({**cfg.experiments.generation.model_dump(), **exp.generation})
    models = _names(exp.models, list(cfg.models.models))
    prompts = _names(exp.prompts, [p.id for p in cfg.prompts.prompts])
    repetitions, warmups = exp.repetitions, exp.warmup_runs
    thread_values = list(exp.sweep.threads or [device_threads(dev.threads)])
    predict_values = list(exp.sweep.n_predict or [gen.n_predict])
    if smoke:
        reduction = cfg.experiments.smoke
        prompts = [p for p in reduction.prompts]
        repetitions, warmups = reduction.repetitions, reduction.warmup_runs
        thread_values = thread_values[:reduction.sweep_values]
        predict_values = predict_values[:reduction.sweep_values] if exp.sweep.n_predict else [reduction.n_predict]
    if threads_override is not None:
        if threads_override < 1:
            raise UserError("--threads-override", f"{threads_override} threads", "give a positive number")
        thread_values = [threads_override]
    if only_models:
        unknown = [m for m in only_models if m not in models]
        if unknown:
            raise ConfigError(cfg.root / "experiments.yaml", f"--only-models names {unknown[0]!r}, which "
                              f"{experiment} does not run", f"use some of: {', '.join(models)}",
                              key=f"experiments.{experiment}.models")
        models = [m for m in models if m in only_models]

    groups = [(model_id, Knobs(threads=threads, n_predict=n_predict, ctx_size=gen.ctx_size, batch_size=gen.batch_size,
                               ubatch_size=gen.ubatch_size, n_gpu_layers=dev.n_gpu_layers, seed=gen.seed,
                               temperature=gen.temperature, ignore_eos=gen.ignore_eos))
              for model_id in models for threads in thread_values for n_predict in predict_values]
    # a model's warm-ups run its first knob set on the first prompt, whichever order follows
    warmup_cells = {model_id: [_cell(cfg, experiment, model_id, prompts[0], i, True, knobs) for i in range(warmups)]
                    for model_id, knobs in reversed(groups)}
    cells: list[Cell] = []
    if order == "fixed":
        for model_id, knobs in groups:
            cells += warmup_cells.pop(model_id, [])
            cells += [_cell(cfg, experiment, model_id, prompt_id, rep, False, knobs)
                      for rep in range(repetitions) for prompt_id in prompts]
    else:
        draw = random.Random(seed)
        for rep in range(repetitions):
            for model_id, knobs in draw.sample(groups, len(groups)):
                cells += warmup_cells.pop(model_id, [])
                cells += [_cell(cfg, experiment, model_id, prompt_id, rep, False, knobs) for prompt_id in prompts]
    return Plan(experiment=experiment, device=dev.name, smoke=smoke, cells=tuple(cells), order=order,
                seed=seed if order == "interleaved" else None)


def _cell(cfg: Config, experiment: str, model_id: str, prompt_id: str, repetition: int, is_warmup: bool,
          knobs: Knobs) -> Cell:
    return Cell(cell_key=cell_key(experiment, model_id, prompt_id, repetition, is_warmup, knobs),
                experiment=experiment, model_id=model_id, prompt_id=prompt_id,
                prompt_length_class=cfg.prompt(prompt_id).length_class, repetition=repetition,
                is_warmup=is_warmup, knobs=knobs)
