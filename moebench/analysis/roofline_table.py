"""The roofline table: each per-model cell's measured gen tok/s against its memory-bandwidth bound.

The bound itself is moebench.analysis.roofline; this module gathers its inputs per cell from the long frame
(bandwidth measured on the run's host, the model file) and the per-model summary (token counts,
throughput).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pandas as pd

from moebench.analysis import roofline as rl
from moebench.analysis.frame import GROUP_FIELDS
from moebench.config import Bandwidth, Config, ModelSpec

ROOFLINE_COLUMNS = [*GROUP_FIELDS, "display_name", *(f.name for f in dataclasses.fields(rl.Roofline)), "hparams"]


def _first_file(paths: pd.Series) -> str | None:
    return next((p for p in paths.dropna() if Path(p).is_file()), None)


def host_inputs(frame: pd.DataFrame) -> pd.DataFrame:
    """Per cell (all its records): median host bandwidth, how many records measured it, the first
    method named, and the first model path that exists here."""
    return (frame.groupby(list(GROUP_FIELDS), dropna=False, sort=True)
            .agg(host_gb_per_s=("prov_host_memory_bandwidth_gb_per_s", "median"),
                 host_gb_per_s_n=("prov_host_memory_bandwidth_gb_per_s", "count"),
                 host_method=("prov_host_memory_bandwidth_method", "first"),
                 gpu_name=("prov_gpu_name", "first"),
                 model_path=("prov_model_path", _first_file))
            .reset_index())


def bandwidth_for(device: Any, cell: pd.Series | dict[str, Any]) -> Bandwidth:
    """The datasheet bandwidth of the GPU the records name, where the device keeps a table of them;
    else the device's datasheet bandwidth; where devices.yaml has none for a CPU-backend device (a
    generic host), the median of the bandwidth its runs measured on the host (moebench.run.bandwidth),
    with that as its source. A GPU's bound is never taken from host memory, nor from another GPU's
    datasheet: a GPU missing from the table has no bound."""
    gpu = cell.get("gpu_name")
    if device.gpu_memory_bandwidth and isinstance(gpu, str):
        if gpu in device.gpu_memory_bandwidth:
            return device.gpu_memory_bandwidth[gpu]
        return Bandwidth(gb_per_s=None, source=f"no datasheet figure for GPU {gpu!r} in devices.yaml "
                                               f"gpu_memory_bandwidth (known: {', '.join(device.gpu_memory_bandwidth)})")
    spec = device.memory_bandwidth
    if spec.gb_per_s is not None or device.backend != "cpu" or not cell["host_gb_per_s_n"]:
        return spec
    return Bandwidth(gb_per_s=float(cell["host_gb_per_s"]),
                     source=f"measured on the run's host ({cell['host_method']}; median over "
                            f"{cell['host_gb_per_s_n']} records); devices.yaml: {spec.source}")


def _problem(spec: ModelSpec | None, device: Any, cell: pd.Series) -> str | None:
    if spec is None:
        return f"model {cell['model_id']} is not in models.yaml"
    if device is None:
        return f"device {cell['device']} is not in devices.yaml"
    if pd.isna(cell["prompt_tokens_mean"]) or pd.isna(cell["gen_tokens_mean"]):
        return "no measured prompt/gen token counts: " + (cell["prompt_tokens_note"] or cell["gen_tokens_note"] or "")
    return None


def _row(cfg: Config, cell: pd.Series, gguf: Any) -> dict[str, Any]:
    row = {f: cell[f] for f in (*GROUP_FIELDS, "display_name")}
    spec = cfg.models.models.get(cell["model_id"])
    device = cfg.devices.devices.get(cell["device"])
    problem = _problem(spec, device, cell)
    weights = None
    if problem is None:
        file_bytes = cell["model_file_bytes"] if isinstance(cell["model_file_bytes"], int) else None
        model_path = Path(cell["model_path"]) if isinstance(cell["model_path"], str) else None
        weights = rl.weight_bytes(spec, model_path, file_bytes, gguf)
        problem = None if weights else "no model file and no model_file_bytes in the records"
    if problem is not None:
        return row | {"note": problem}
    tiny = cell["replica_scale"] == "tiny"
    context = cell["prompt_tokens_mean"] + cell["gen_tokens_mean"] / 2.0
    result = rl.roofline(spec.tiny_hparams if tiny else spec.hparams, weights, context,
                         bandwidth_for(device, cell), cell["gen_tokens_per_s_mean"])
    return row | dataclasses.asdict(result) | {"hparams": "tiny_hparams" if tiny else "hparams"}


def roofline_table(cfg: Config, frame: pd.DataFrame, per_model: pd.DataFrame) -> pd.DataFrame:
    cells = per_model.merge(host_inputs(frame), on=list(GROUP_FIELDS), how="left")
    gguf = rl.find_gguf_py()
    rows = [_row(cfg, cell, gguf) for _, cell in cells.iterrows()]
    table = pd.DataFrame(rows, columns=ROOFLINE_COLUMNS, dtype=object)
    return table.where(table.notna(), None)
