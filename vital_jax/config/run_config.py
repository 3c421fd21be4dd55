"""Typed run configs: YAML files, dotted command-line overrides, strict validation.

A run is one :class:`RunConfig` (keyword-only frozen dataclasses all the way down). Loading::

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
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from vital_jax.errors import VitalError


class ConfigError(VitalError, ValueError):
    """A config file or override that cannot be used (names the key and the source)."""


# --------------------------------------------------------------------------- sections


@dataclasses.dataclass(frozen=True, kw_only=True)
class MeshConfig:
    """Device mesh ``(data, fsdp, tensor)``; ``-1`` on one axis = all remaining devices."""

    data: int = -1
    fsdp: int = 1
    tensor: int = 1

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


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelSection:
    """Which model: a preset (``tiny``/``3b``/``7b``) or ``init_from`` an HF directory / vital_jax
    model checkpoint (its config wins). Runtime options are the model's RuntimeOptions."""

    preset: str = "tiny"
    init_from: str | None = None
    tokenizer: str | None = None         # directory with tokenizer.json (None: the run builds one)
    param_dtype: str = "float32"
    compute_dtype: str = "float32"
    scan_layers: bool = True
    remat: str = "none"
    attention: str = "xla"
    freeze_vision: bool = False
    vision_frame_block: int = 0          # banded full-attention blocks: patches of the largest frame (0: dense)
    logits_chunk: int = 128              # lm-head chunk (positions) of the training log-probs; 0 = one chunk
    seed: int = 0                        # init seed for a fresh model

    def runtime_options(self):
        """The model's :class:`RuntimeOptions` of these fields (which checks them)."""
        from vital_jax.models.qwen2_5_vl.config import RuntimeOptions

        return RuntimeOptions(**{f.name: getattr(self, f.name) for f in dataclasses.fields(RuntimeOptions)})

    def __post_init__(self):
        # the runtime choices are checked when the config is read (from_dict prefixes "model."),
        # by the model's own rules, not when the model is first built or traced
        from vital_jax.models.qwen2_5_vl.config import ConfigError as ModelConfigError

        try:
            self.runtime_options()
        except ModelConfigError as e:
            raise ConfigError(str(e).removeprefix("runtime.")) from None


@dataclasses.dataclass(frozen=True, kw_only=True)
class OptimConfig:
    """AdamW with warm-up and a decay schedule (``cosine``/``linear``/``constant``)."""

    learning_rate: float = 1e-5
    schedule: str = "cosine"
    warmup_steps: int = 0
    final_lr_fraction: float = 0.0
    weight_decay: float = 0.01
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    grad_clip: float = 1.0               # global-norm clip; 0 = off

    def __post_init__(self):
        if self.schedule not in ("constant", "cosine", "linear"):
            raise ConfigError(f"schedule: {self.schedule!r} is not one of 'constant', 'cosine', 'linear'")


@dataclasses.dataclass(frozen=True, kw_only=True)
class VisionInputConfig:
    """Frame sampling of question videos and tool clips (``vital_jax.video`` keyword names).

    ``timestamps`` draws each clip frame's time on its pixels; ``text_timestamps`` writes each
    temporal group's time as text before its visual tokens (Qwen3-VL style) for the question
    video and the clips. ``prompt`` names the prompt texts (``vital_jax.prompt.templates.PROMPTS``:
    ``"vital"``, VITAL's prompts and Qwen2.5's tool schema; ``"compact"``, a few words, for models
    trained from scratch). A trained model expects the settings it was trained with: the trainers
    write them next to the exported model (:func:`vision_settings` reads them back).
    """

    max_frames: int = 16
    min_pixels: int = 56 * 56
    max_pixels: int = 56 * 56
    clip_max_frames: int = 8
    clip_max_pixels: int = 56 * 56
    timestamps: bool = False
    text_timestamps: bool = False
    prompt: str = "vital"

    def __post_init__(self):
        from vital_jax.prompt.templates import PROMPTS

        if self.prompt not in PROMPTS:
            raise ConfigError(f"prompt: {self.prompt!r} is not one of {sorted(PROMPTS)}")   # from_dict prefixes the path


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataConfig:
    """Annotation files (relative to ``root``) and how to read them."""

    root: str = "runs/synthetic"
    sft_files: tuple[str, ...] = ("sft_tool.jsonl",)
    rl_files: tuple[str, ...] = ("rl.jsonl",)
    eval_file: str = "eval.jsonl"
    image_files: tuple[str, ...] = ()     # RL: image prompts interleaved 1:1 with video prompts
    token_buckets: tuple[int, ...] = (256, 512, 1024)
    vision_buckets: tuple[int, ...] = (256, 512, 1024)  # patches per row (multiples of 4)
    shuffle: bool = True
    seed: int = 0
    vision: VisionInputConfig = VisionInputConfig()


@dataclasses.dataclass(frozen=True, kw_only=True)
class CheckpointConfig:
    every: int = 50                       # steps between saves (0: only at the end / on signal)
    keep: int = 3
    async_save: bool = True


@dataclasses.dataclass(frozen=True, kw_only=True)
class SFTConfig:
    steps: int = 100
    batch_size: int = 8                   # global, per optimizer step
    micro_batches: int = 1                # gradient accumulation
    max_bad_steps: int = 5                # NaN/inf updates skipped before the run stops
    optim: OptimConfig = OptimConfig(learning_rate=1e-3, warmup_steps=10)


@dataclasses.dataclass(frozen=True, kw_only=True)
class DifficultyConfig:
    """DeepVideo-R1 difficulty-aware augmentation (``vital_jax.rl.difficulty``)."""

    enabled: bool = False
    window: int = 256
    hint_scale: float = 1.0
    hint_max: float = 1.0
    perturb_scale: float = 0.5
    perturb_max: float = 0.5
    noise_sigma: float = 0.3


@dataclasses.dataclass(frozen=True, kw_only=True)
class RLConfig:
    steps: int = 50
    prompts_per_step: int = 4             # P (global)
    group_size: int = 4                   # G
    rollout_batch: int = 16               # rows the sampler decodes together
    micro_batches: int = 1                # update accumulation (each micro-batch holds whole groups)
    updates_per_rollout: int = 1
    loss: str = "dgrpo"
    advantage: str = "dgrpo"
    aggregation: str | None = None        # None: the loss's default
    epsilon: float = 0.2
    epsilon_high: float | None = None
    beta: float = 0.0                     # KL coefficient (0: no reference model kept)
    kl_estimator: str = "k3"
    temperature: float = 1.0
    top_p: float = 1.0
    repetition_penalty: float = 1.05
    max_turns: int = 2
    max_new_tokens: int = 96              # per assistant turn
    cache_length: int = 1024              # context limit of one episode
    use_tools: bool = True
    tool_bonus: float = 0.0
    mask_truncated: bool = True           # over-long / cut-off episodes get no gradient (DAPO, VITAL)
    # truncated importance sampling: each policy token's loss weighted by
    # min(exp(log p_trainer - log p_sampler), tis_cap) (None: off; not for reg_grpo)
    tis_cap: float | None = None
    dynamic_sampling: bool = False        # DAPO: drop all-equal groups, refill
    max_refills: int = 2
    max_bad_steps: int = 5                # NaN/inf updates skipped before the run stops
    # held-out curve: greedy episodes on data.eval_file at step 0, every eval_every steps and at the
    # end (0 = off); eval_limit = its first N records (None = all)
    eval_every: int = 0
    eval_limit: int | None = 64
    # the first N episodes of every step (texts, reward parts, advantage) appended to
    # <out_dir>/rollouts.jsonl by process 0, to read what the policy does (0 = off)
    log_rollouts: int = 0
    difficulty: DifficultyConfig = DifficultyConfig()
    optim: OptimConfig = OptimConfig(learning_rate=1e-4, warmup_steps=0, schedule="constant")

    def __post_init__(self):
        # names that pick a registered function are checked when the config is read (a typo is
        # an error naming the key, not a KeyError at the first update); custom registrations made
        # before the config is read count
        from vital_jax.rl import ADVANTAGES, AGGREGATIONS, KL_ESTIMATORS, POLICY_LOSSES

        for key, reg, value in (("loss", POLICY_LOSSES, self.loss), ("advantage", ADVANTAGES, self.advantage),
                                ("kl_estimator", KL_ESTIMATORS, self.kl_estimator),
                                ("aggregation", AGGREGATIONS, self.aggregation)):
            if value is None:
                continue
            try:
                reg.canonical(value)
            except (KeyError, TypeError) as e:
                raise ConfigError(f"{key}: {e.args[0]}") from None
        if self.aggregation is not None and POLICY_LOSSES.info(self.loss)["aggregation"] is None:
            raise ConfigError(f"aggregation: the {self.loss} loss fixes its own reduction; leave aggregation null")
        for key in ("eval_every", "log_rollouts"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key}: must be >= 0 (0 = off), got {getattr(self, key)}")
        if self.tis_cap is not None:
            if not self.tis_cap > 0:
                raise ConfigError(f"tis_cap: must be > 0 (or null for off), got {self.tis_cap}")
            if not POLICY_LOSSES.info(self.loss).get("tis", True):
                raise ConfigError(f"tis_cap: truncated importance sampling does not apply to {self.loss}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunConfig:
    """One training run. ``stage`` picks the trainer (``sft`` or ``rl``)."""

    name: str = "run"
    stage: str = "sft"
    out_dir: str = "runs/run"
    seed: int = 0
    log_every: int = 1
    mesh: MeshConfig = MeshConfig()
    model: ModelSection = ModelSection()
    data: DataConfig = DataConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    sft: SFTConfig = SFTConfig()
    rl: RLConfig = RLConfig()

    def __post_init__(self):
        if self.stage not in ("sft", "rl"):
            raise ConfigError(f"stage: must be 'sft' or 'rl', got {self.stage!r}")


# --------------------------------------------------------------------------- dict <-> dataclass


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` as type ``tp`` (ints accepted for floats, lists for tuples), else ConfigError."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, prefix=key + ".")
    if origin is tuple:
        args = typing.get_args(tp)
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{key}: expected {len(args)} items, got {value!r}")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(args, value)))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-6" as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if tp is Any:
        return value
    raise ConfigError(f"{key}: unsupported config type {_type_name(tp)}")


def from_dict(cls, d: Mapping[str, Any], *, prefix: str = ""):
    """Build dataclass ``cls`` from a mapping; unknown keys are an error naming them."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(prefix + k for k in unknown)}; "
                          f"{prefix.rstrip('.') or 'top level'} has: {', '.join(sorted(names))}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in d:
            continue
        value = d[f.name]
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp) and isinstance(value, Mapping):
            # merge over the field's default, so a partial section keeps the other defaults
            default = f.default if f.default is not dataclasses.MISSING else tp()
            value = {**to_dict(default), **value}
        kwargs[f.name] = _coerce(value, tp, prefix + f.name)
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"{prefix}{e}") from None


def to_dict(obj) -> dict[str, Any]:
    """Plain nested dict (tuples as lists) of a config dataclass."""
    def conv(v):
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple):
            return [conv(x) for x in v]
        return v
    return conv(obj)


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
