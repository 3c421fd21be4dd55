"""Typed run configs: YAML files, dotted command-line overrides, strict validation.

A run is one :class:`RunConfig`: frozen pydantic models all the way down (unknown keys
forbidden, choices as ``Literal`` or checked against their registry, each field documented).
Loading::

    cfg = load_config("configs/tiny_synthetic.yaml", overrides=["rl.group_size=4", "mesh.data=2"])

- A YAML file may name ``base: other.yaml`` (relative to itself); its keys are merged over the
  base's, recursively.
- Overrides are ``dotted.key=value``; the value is parsed as YAML (``4``, ``1e-6``, ``true``,
  ``[1, 2]``, ``null``), so types follow the same rules as the file.
- Unknown keys, wrong types and bad values are errors that name the dotted key (and the file).
- :func:`dump_config` writes the resolved config (what the run really used) next to the run.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (BaseModel, BeforeValidator, ConfigDict, StrictBool, StrictInt, StrictStr, ValidationError,
                      field_validator, model_validator)

from vital_jax.errors import VitalError


class ConfigError(VitalError, ValueError):
    """A config file or override that cannot be used (names the key and the source)."""


# --------------------------------------------------------------------------- field types
# YAML gives Python values; these are strict where YAML's own typing is enough (an int is not a
# bool, a name is not a number) and lax where YAML 1.1 is quirky ("1e-6" is a string to it).


def _number(v: Any) -> Any:
    if isinstance(v, bool):
        raise ValueError(f"expected a number, got {v!r}")
    return v


Int = StrictInt
Bool = StrictBool
Str = StrictStr
Float = Annotated[float, BeforeValidator(_number)]


class _KeyedError(ConfigError):
    """A section-level check's failure that belongs to one of its keys (named in the message)."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key, self.message = key, message


class Section(BaseModel):
    """A config section: unknown keys are errors, values are checked when read, instances are
    frozen. A section given partially is merged over the field's default (so ``sft.optim``
    keeps SFT's learning rate and warm-up when only its schedule is set)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    @model_validator(mode="before")
    @classmethod
    def _merge_over_defaults(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        out = dict(data)
        for name, field in cls.model_fields.items():
            default = field.default
            if isinstance(default, Section) and isinstance(out.get(name), Mapping):
                out[name] = {**default.model_dump(), **out[name]}
        return out


# --------------------------------------------------------------------------- sections


class MeshConfig(Section):
    """Device mesh ``(data, fsdp, tensor)``; ``-1`` on one axis = all remaining devices."""

    data: Int = -1
    fsdp: Int = 1
    tensor: Int = 1

    def resolve(self, num_devices: int) -> tuple[int, int, int]:
        shape = [self.data, self.fsdp, self.tensor]
        if sum(s == -1 for s in shape) > 1 or any(s == 0 or s < -1 for s in shape):
            raise ConfigError(f"mesh {shape}: each axis must be >= 1, at most one may be -1")
        known = math.prod(s for s in shape if s != -1)
        if -1 in shape:
            if num_devices % known:
                raise ConfigError(f"mesh {shape}: {known} does not divide {num_devices} devices")
            shape[shape.index(-1)] = num_devices // known
        if math.prod(shape) != num_devices:
            raise ConfigError(f"mesh data={shape[0]} fsdp={shape[1]} tensor={shape[2]} needs "
                              f"{math.prod(shape)} devices, have {num_devices}")
        return tuple(shape)


class ModelSection(Section):
    """Which model: a preset (Qwen2.5-VL ``tiny``/``3b``/``7b``, Qwen3-VL ``qwen3_vl_<size>``:
    ``qwen3_vl_tiny``, ``qwen3_vl_2b``, ``qwen3_vl_8b``, ...) or ``init_from`` an HF directory /
    vital_jax model checkpoint of either family (its config.json's ``model_type`` wins). Runtime
    options are the model's RuntimeOptions (one class for both families)."""

    preset: Str = "tiny"
    init_from: Str | None = None
    tokenizer: Str | None = None
    """Directory with tokenizer.json (None: the run builds one)."""
    param_dtype: Str = "float32"
    compute_dtype: Str = "float32"
    scan_layers: Bool = True
    remat: Str = "none"
    """Activation checkpointing of each decoder layer: ``none``, ``full`` or ``dots``."""
    attention: Str = "auto"
    """Attention implementation by registry name (``vital_jax.models.qwen2_5_vl.modeling.ATTENTION``):
    ``auto`` (blockwise at long lengths, xla at short ones), ``xla``, ``blockwise``, ``splash``
    (TPU), ``cudnn`` (GPU)."""
    decode_attention: Str = "auto"
    """The sampler's decode steps (``vital_jax.models.qwen2_5_vl.decode_kernels``): ``auto`` (the
    cache rule of ``attention``), ``xla``, ``blockwise``, ``gpu_decode`` (Pallas GPU), ``tpu_paged``
    (Pallas TPU)."""
    freeze_vision: Bool = False
    vision_frame_block: Int = 0
    """Banded full-attention blocks of the tower: patches of the largest frame (0: dense)."""
    logits_chunk: Int = 128
    """LM-head chunk (positions) of the training log-probs; 0 = one chunk."""
    seed: Int = 0
    """Init seed for a fresh model."""

    def runtime_options(self):
        """The model's :class:`RuntimeOptions` of these fields (which checks them)."""
        from vital_jax.models.qwen2_5_vl.config import RuntimeOptions

        return RuntimeOptions(**{f.name: getattr(self, f.name) for f in dataclasses.fields(RuntimeOptions)})

    @model_validator(mode="after")
    def _runtime_checked(self):
        # the runtime choices are checked when the config is read, by the model's own rules, not
        # when the model is first built or traced
        from vital_jax.models.qwen2_5_vl.config import ConfigError as ModelConfigError

        try:
            self.runtime_options()
        except ModelConfigError as e:
            key, _, message = str(e).removeprefix("runtime.").partition(": ")
            raise _KeyedError(key, message) from None
        return self


class OptimConfig(Section):
    """AdamW with warm-up and a decay schedule."""

    learning_rate: Float = 1e-5
    schedule: Literal["constant", "cosine", "linear"] = "cosine"
    warmup_steps: Int = 0
    final_lr_fraction: Float = 0.0
    weight_decay: Float = 0.01
    b1: Float = 0.9
    b2: Float = 0.999
    eps: Float = 1e-8
    grad_clip: Float = 1.0
    """Global-norm clip; 0 = off."""


class VisionInputConfig(Section):
    """Frame sampling of question videos and tool clips (``vital_jax.video`` keyword names).

    ``timestamps`` draws each clip frame's time on its pixels; ``text_timestamps`` writes each
    temporal group's time as text before its visual tokens (Qwen3-VL style) for the question
    video and the clips. ``prompt`` names the prompt texts (``vital_jax.prompt.templates.PROMPTS``:
    ``"vital"``, VITAL's prompts and Qwen2.5's tool schema; ``"compact"``, a few words, for models
    trained from scratch). A trained model expects the settings it was trained with: the trainers
    write them next to the exported model (:func:`vision_settings` reads them back).
    """

    max_frames: Int = 16
    min_pixels: Int = 56 * 56
    max_pixels: Int = 56 * 56
    clip_max_frames: Int = 8
    clip_max_pixels: Int = 56 * 56
    timestamps: Bool = False
    text_timestamps: Bool = False
    prompt: Str = "vital"

    @field_validator("prompt")
    @classmethod
    def _known_prompt_set(cls, v: str) -> str:
        from vital_jax.prompt.templates import PROMPTS

        if v not in PROMPTS:
            raise ValueError(f"{v!r} is not one of {sorted(PROMPTS)}")
        return v


class DataConfig(Section):
    """Annotation files (relative to ``root``) and how to read them."""

    root: Str = "runs/synthetic"
    sft_files: tuple[Str, ...] = ("sft_tool.jsonl",)
    rl_files: tuple[Str, ...] = ("rl.jsonl",)
    eval_file: Str = "eval.jsonl"
    image_files: tuple[Str, ...] = ()
    """RL: image prompts interleaved 1:1 with video prompts."""
    token_buckets: tuple[Int, ...] = (256, 512, 1024)
    vision_buckets: tuple[Int, ...] = (256, 512, 1024)
    """Patches per row (multiples of 4)."""
    shuffle: Bool = True
    seed: Int = 0
    vision: VisionInputConfig = VisionInputConfig()


class CheckpointConfig(Section):
    every: Int = 50
    """Steps between saves (0: only at the end / on signal)."""
    keep: Int = 3
    async_save: Bool = True


class SFTConfig(Section):
    steps: Int = 100
    batch_size: Int = 8
    """Global, per optimizer step."""
    micro_batches: Int | Literal["auto"] = 1
    """Gradient accumulation steps; ``auto``: as many as give each device one row per micro-batch
    on the run's mesh (:func:`resolve_micro_batches`)."""
    max_bad_steps: Int = 5
    """NaN/inf updates skipped before the run stops."""
    optim: OptimConfig = OptimConfig(learning_rate=1e-3, warmup_steps=10)


class DifficultyConfig(Section):
    """DeepVideo-R1 difficulty-aware augmentation (``vital_jax.rl.difficulty``)."""

    enabled: Bool = False
    window: Int = 256
    hint_scale: Float = 1.0
    hint_max: Float = 1.0
    perturb_scale: Float = 0.5
    perturb_max: Float = 0.5
    noise_sigma: Float = 0.3


def _registered(registry_name: str):
    """A field validator: the value must name an entry of ``vital_jax.rl.<registry_name>`` (any
    case; custom registrations made before the config is read count)."""
    def check(cls, v):
        import vital_jax.rl as rl

        if v is None:
            return v
        try:
            getattr(rl, registry_name).canonical(v)
        except (KeyError, TypeError) as e:
            raise ValueError(e.args[0]) from None
        return v
    return check


class RLConfig(Section):
    steps: Int = 50
    prompts_per_step: Int = 4
    """P (global)."""
    group_size: Int = 4
    """G."""
    rollout_batch: Int = 16
    """Rows the sampler decodes together."""
    micro_batches: Int | Literal["auto"] = 1
    """Update accumulation (each micro-batch holds whole groups); ``auto``: as many as give each
    device about one row per micro-batch on the run's mesh (:func:`resolve_micro_batches`)."""
    updates_per_rollout: Int = 1
    loss: Str = "dgrpo"
    advantage: Str = "dgrpo"
    aggregation: Str | None = None
    """None: the loss's default."""
    epsilon: Float = 0.2
    epsilon_high: Float | None = None
    beta: Float = 0.0
    """KL coefficient (0: no reference model kept)."""
    kl_estimator: Str = "k3"
    temperature: Float = 1.0
    top_p: Float = 1.0
    repetition_penalty: Float = 1.05
    max_turns: Int = 2
    max_new_tokens: Int = 96
    """Per assistant turn."""
    cache_length: Int = 1024
    """Context limit of one episode."""
    use_tools: Bool = True
    tool_bonus: Float = 0.0
    mask_truncated: Bool = True
    """Over-long / cut-off episodes get no gradient (DAPO, VITAL)."""
    tis_cap: Float | None = None
    """Truncated importance sampling: each policy token's loss weighted by
    min(exp(log p_trainer - log p_sampler), tis_cap) (None: off; not for reg_grpo)."""
    dynamic_sampling: Bool = False
    """DAPO: drop all-equal groups, refill."""
    max_refills: Int = 2
    max_bad_steps: Int = 5
    """NaN/inf updates skipped before the run stops."""
    eval_every: Int = 0
    """Held-out curve: greedy episodes on data.eval_file at step 0, every eval_every steps and at
    the end (0 = off)."""
    eval_limit: Int | None = 64
    """The held-out curve's first N records (None = all)."""
    log_rollouts: Int = 0
    """The first N episodes of every step (texts, reward parts, advantage) appended to
    <out_dir>/rollouts.jsonl by process 0, to read what the policy does (0 = off)."""
    difficulty: DifficultyConfig = DifficultyConfig()
    optim: OptimConfig = OptimConfig(learning_rate=1e-4, warmup_steps=0, schedule="constant")

    _loss_known = field_validator("loss")(classmethod(_registered("POLICY_LOSSES")))
    _advantage_known = field_validator("advantage")(classmethod(_registered("ADVANTAGES")))
    _kl_known = field_validator("kl_estimator")(classmethod(_registered("KL_ESTIMATORS")))
    _aggregation_known = field_validator("aggregation")(classmethod(_registered("AGGREGATIONS")))

    @field_validator("eval_every", "log_rollouts")
    @classmethod
    def _off_or_positive(cls, v: int) -> int:
        if v < 0:
            raise ValueError(f"must be >= 0 (0 = off), got {v}")
        return v

    @model_validator(mode="after")
    def _loss_fits(self):
        from vital_jax.rl import POLICY_LOSSES

        if self.aggregation is not None and POLICY_LOSSES.info(self.loss)["aggregation"] is None:
            raise _KeyedError("aggregation", f"the {self.loss} loss fixes its own reduction; leave aggregation null")
        if self.tis_cap is not None:
            if not self.tis_cap > 0:
                raise _KeyedError("tis_cap", f"must be > 0 (or null for off), got {self.tis_cap}")
            if not POLICY_LOSSES.info(self.loss).get("tis", True):
                raise _KeyedError("tis_cap", f"truncated importance sampling does not apply to {self.loss}")
        return self


class RunConfig(Section):
    """One training run. ``stage`` picks the trainer (``sft`` or ``rl``)."""

    name: Str = "run"
    stage: Literal["sft", "rl"] = "sft"
    out_dir: Str = "runs/run"
    seed: Int = 0
    log_every: Int = 1
    mesh: MeshConfig = MeshConfig()
    model: ModelSection = ModelSection()
    data: DataConfig = DataConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    sft: SFTConfig = SFTConfig()
    rl: RLConfig = RLConfig()


def _auto_micro_batches(rows: int, units: int, devices: int) -> int:
    """The most micro-batches ``M`` (a divisor of ``units``, the indivisible pieces of the batch:
    rows, or RL's groups) whose ``rows / M`` rows still fill ``devices`` evenly: one row per
    device per micro-batch when they divide. 1 when the batch is smaller than the mesh."""
    best = 1
    for m in range(1, units + 1):
        if units % m == 0 and (rows // m) >= devices and (rows // m) % devices == 0:
            best = m
    return best


def resolve_micro_batches(cfg: RunConfig, mesh_shape: Sequence[int], processes: int = 1) -> RunConfig:
    """``cfg`` with ``micro_batches: auto`` replaced by a count for this mesh (``data x fsdp``
    devices share a micro-batch's rows; ``processes`` must each get whole micro-batches). Explicit
    counts are kept."""
    devices = int(mesh_shape[0]) * int(mesh_shape[1])
    sft, rl = cfg.sft, cfg.rl
    if sft.micro_batches == "auto":
        per = sft.batch_size // processes
        sft = replace(sft, micro_batches=_auto_micro_batches(per, per, max(1, devices // processes)))
    if rl.micro_batches == "auto":
        groups = rl.prompts_per_step // processes
        m = _auto_micro_batches(groups * rl.group_size, groups, max(1, devices // processes))
        rl = replace(rl, micro_batches=m)
    return cfg if (sft is cfg.sft and rl is cfg.rl) else replace(cfg, sft=to_dict(sft), rl=to_dict(rl))


# --------------------------------------------------------------------------- dict <-> config


def _where(loc: Sequence) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _message(err: Mapping[str, Any], prefix: str, cls) -> str:
    """One pydantic error as ``dotted.key: what is wrong`` (the form every config error takes)."""
    loc = list(err["loc"])
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, _KeyedError):
        loc.append(cause.key)
        what = cause.message
    elif err["type"] == "extra_forbidden":
        section = cls
        for part in loc[:-1]:
            section = section.model_fields[part].annotation
        names = ", ".join(sorted(section.model_fields))
        where = prefix + _where(loc)
        return f"unknown key {where}; {(prefix + _where(loc[:-1])) or 'top level'} has: {names}"
    elif err["type"] == "literal_error":
        what = f"{err['input']!r} is not one of {err['ctx']['expected']}"
    elif err["type"] == "value_error":
        what = str(cause) if cause is not None else err["msg"]
    else:
        what = f"{err['msg'][0].lower()}{err['msg'][1:]}, got {err['input']!r}"
    return f"{prefix}{_where(loc)}: {what}"


def from_dict(cls, d: Mapping[str, Any], *, prefix: str = ""):
    """Build config class ``cls`` from a mapping (partial sections keep their defaults); any
    unknown key, wrong type or bad value is a ConfigError naming the dotted key."""
    if not isinstance(d, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {d!r}")
    try:
        return cls.model_validate(d)
    except ValidationError as e:
        errs = [dict(err, loc=_field_loc(err["loc"], cls)) for err in e.errors()]
        same = [err for err in errs if err["loc"] == errs[0]["loc"]]
        if len(same) > 1:   # the branches of a union (``micro_batches: int | "auto"``): one line
            what = " or ".join(err["msg"].removeprefix("Input should be ") for err in same)
            errs = [dict(same[0], type="union", msg=f"Input should be {what}")] + errs[len(same):]
        more = f" (and {len(errs) - 1} more)" if len(errs) > 1 else ""
        raise ConfigError(_message(errs[0], prefix, cls) + more) from None


def _field_loc(loc: Sequence, cls) -> tuple:
    """``loc`` without pydantic's union-branch tags (``("rl", "micro_batches", "int")`` ->
    ``("rl", "micro_batches")``): only section fields and list indices name a key."""
    out, node = [], cls
    for part in loc:
        if isinstance(part, int):
            out.append(part)
        elif isinstance(node, type) and issubclass(node, BaseModel) and part in node.model_fields:
            out.append(part)
            node = node.model_fields[part].annotation
        elif not out or out[-1] != part:
            if isinstance(node, type) and issubclass(node, BaseModel):
                out.append(part)   # an unknown key: extra_forbidden names it
            break
    return tuple(out)



def to_dict(obj) -> dict[str, Any]:
    """Plain nested dict (tuples as lists) of a config."""
    return obj.model_dump(mode="json")


def replace(obj, **changes):
    """``obj`` with ``changes``, checked like a config that was read (a frozen section's copy)."""
    return from_dict(type(obj), {**to_dict(obj), **changes})


# --------------------------------------------------------------------------- files + overrides


def _merge(base: dict, over: Mapping) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def read_yaml(path: str | Path, _seen: tuple = ()) -> dict[str, Any]:
    """A YAML config as a dict, with ``base:`` chains resolved."""
    path = Path(path).resolve()
    if path in _seen:
        raise ConfigError(f"{path}: 'base' chain loops back to itself")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    base = data.pop("base", None)
    if base is not None:
        data = _merge(read_yaml(path.parent / base, _seen + (path,)), data)
    return data


def apply_overrides(data: dict, overrides: Sequence[str]) -> dict:
    """``["rl.group_size=4", ...]`` applied to a nested dict (values parsed as YAML)."""
    out = json.loads(json.dumps(data))
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected dotted.key=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: bad value: {e}") from None
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {item!r}: {p} is not a section")
            node = nxt
        node[parts[-1]] = value
    return out


def load_config(path: str | Path | Sequence[str | Path] | None = None, overrides: Sequence[str] = (), *,
                defaults: Mapping[str, Any] | None = None) -> RunConfig:
    """Resolved :class:`RunConfig` from optional YAML file(s) plus overrides. Several files are
    merged in order (e.g. a stage config, then a mesh layout from ``configs/mesh/``)."""
    data: dict = dict(defaults or {})
    paths = [] if path is None else ([path] if isinstance(path, (str, Path)) else list(path))
    for p in paths:
        data = _merge(data, read_yaml(p))
    data = apply_overrides(data, overrides)
    source = f"{', '.join(map(str, paths))}: " if paths else ""
    try:
        return from_dict(RunConfig, data)
    except ConfigError as e:
        raise ConfigError(f"{source}{e}") from None


def dump_config(cfg: RunConfig, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


# --------------------------------------------------------------------------- settings a checkpoint carries

VISION_SETTINGS_FILE = "vital_settings.json"


def write_vision_settings(vision: VisionInputConfig, ckpt_dir: str | Path) -> Path:
    """Write ``vision`` (``data.vision`` of the run) into an exported model directory, so
    ``vital eval``/``vital infer`` feed the model the frames and prompt layout it learned."""
    path = Path(ckpt_dir) / VISION_SETTINGS_FILE
    path.write_text(json.dumps({"vision": to_dict(vision)}, indent=1, sort_keys=True) + "\n")
    return path


def vision_settings(ckpt_dir: str | Path, default: VisionInputConfig | None = VisionInputConfig()):
    """The :class:`VisionInputConfig` a checkpoint was trained with (its ``vital_settings.json``);
    ``default`` when the directory has no such file (an outside checkpoint, e.g. Qwen2.5-VL from
    the hub: pass ``default=None`` to tell that case apart). Raises ConfigError naming the file
    and the key for a file that cannot be used."""
    path = Path(ckpt_dir) / VISION_SETTINGS_FILE
    if not path.is_file():
        return default
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: cannot read the checkpoint's settings: {e}") from None
    if not isinstance(data, Mapping) or not isinstance(data.get("vision"), Mapping):
        raise ConfigError(f"{path}: expected an object with a 'vision' mapping")
    try:
        return from_dict(VisionInputConfig, data["vision"], prefix="vision.")
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
