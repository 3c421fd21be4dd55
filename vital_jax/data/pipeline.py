"""Grain input pipelines over records: sharded, shuffled, repeated, resumable.

Shape of every pipeline::

    records ─► MapDataset.source ─► [:n - n % hosts] ─► [host::hosts] ─► shuffle(seed) ─► repeat
            ─► map(to_example) ─► map(load frames)? ─► filter(undecodable) ─► random_map(augment)?
            ─► (mix 1:1 with an image pipeline)? ─► to_iter_dataset(threads) ─► batch ─► mp_prefetch?

- **Per-host shards.** Each process owns the records ``host::hosts`` of the (truncated) list, so
  two hosts never see the same record and every host runs the same number of steps per epoch
  (the tail of ``n % hosts`` records is dropped, or no host could keep step with the others).
- **Exact resume.** Everything before ``batch`` is a random-access ``MapDataset``; the iterator's
  state is the next index, so ``iterator.get_state()`` / ``set_state()`` (or Orbax with
  ``grain.checkpoint.CheckpointSave(iterator)`` / ``CheckpointRestore(iterator)``) resume
  exactly, augmentation included (its RNG is derived from the seed and the element index).
- **RL batches** are ``P`` prompts, each to be rolled out ``G`` times: an :class:`RLBatch` keeps
  the ``P`` examples once and says which prompt each of the ``P·G`` rollouts uses (augmentation
  acts per prompt, so a group shares its prompt, as group advantages need).

Examples are plain dicts (picklable, so they cross grain worker processes)::

    {"record": Record, "question": str, "options": tuple[str, ...], "hint": str | None,
     "frames": uint8[T, H, W, 3] (if a frame loader is given), "frame_times": float32[T],
     "augment": (mode, strength) (if augmentation is on)}

Tokenised SFT batches (chat template, token buckets, observation tokens masked out of the loss)
are built by the trainer with the prompt package's renderer on top of these examples.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from typing import Any

import grain
import numpy as np

from vital_jax.data.augment import AugmentConfig, augment_example
from vital_jax.data.records import Record

Example = dict[str, Any]
_THINK_RE = re.compile(r"<think>(.*?)</think>", re.DOTALL)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PipelineConfig:
    """Host-side input settings. ``process_index/count`` default to JAX's."""

    seed: int = 0
    shuffle: bool = True
    num_epochs: int | None = None     # None: repeat forever
    process_index: int | None = None
    process_count: int | None = None
    read_threads: int = 2             # grain read threads (decoding releases the GIL)
    prefetch_buffer: int = 16
    workers: int = 0                  # >0: grain worker processes (needs a __main__ guard)

    def host(self) -> tuple[int, int]:
        if self.process_index is None or self.process_count is None:
            import jax

            index = jax.process_index() if self.process_index is None else self.process_index
            count = jax.process_count() if self.process_count is None else self.process_count
        else:
            index, count = self.process_index, self.process_count
        if not (count >= 1 and 0 <= index < count):
            raise ValueError(f"bad host shard: process_index {index}, process_count {count}")
        return index, count


# --------------------------------------------------------------------------- examples


def reference_hint(record: Record) -> str | None:
    """Reasoning text usable as a DeepVideo-R1 hint: an explicit ``hint`` field, else the think
    text of the record's CoT / tool trajectory (None for plain RL records)."""
    hint = record.extra.get("hint")
    if isinstance(hint, str) and hint.strip():
        return hint
    text = record.cot if record.cot is not None else (record.tool.turns[0] if record.tool else None)
    if text is None:
        return None
    found = _THINK_RE.findall(text)
    return " ".join(t.strip() for t in found) or None


def to_example(record: Record) -> Example:
    return {"record": record, "question": record.question, "options": record.options,
            "hint": reference_hint(record)}


@dataclasses.dataclass(frozen=True)
class UniformFrames:
    """Decode ``num_frames`` frames at the midpoints of equal slices of the video (coarse view).

    A simple default for benchmarks and augmentation; the model's real frame sampler (fps-based,
    resized and patchified) lives in ``vital_jax.video`` and plugs in the same way: any picklable
    ``Callable[[Example], Example]``. Undecodable videos mark the example with ``error``; the
    pipeline drops those.
    """

    num_frames: int = 16

    def __call__(self, ex: Example) -> Example:
        from vital_jax.video import VideoError, probe, read_frames

        rec: Record = ex["record"]
        if not rec.is_video:
            return ex
        try:
            info = probe(rec.media_path)
            times = (np.arange(self.num_frames) + 0.5) * (info.duration / self.num_frames)
            idx = np.minimum((times * info.fps).astype(np.int64), info.num_frames - 1)
            frames = read_frames(rec.media_path, idx)
        except VideoError as e:
            return {**ex, "error": str(e)}
        return {**ex, "frames": frames, "frame_times": (idx / info.fps).astype(np.float32)}


def _drop_errors(ex: Example) -> bool:
    return "error" not in ex


@dataclasses.dataclass(frozen=True)
class Augment:
    """grain random map: signed strength per example (``strength_of``) → DeepVideo-R1 rule.

    ``strength_of`` may close over a table the RL trainer updates between steps (prompt key →
    Δ-derived strength); it is read when an element is produced, in-process (``workers=0``).
    """

    strength_of: Callable[[Example], float]
    config: AugmentConfig = AugmentConfig()

    def __call__(self, ex: Example, rng: np.random.Generator) -> Example:
        return augment_example(ex, float(self.strength_of(ex)), rng, self.config)


# --------------------------------------------------------------------------- datasets


def record_dataset(records: Sequence[Record], cfg: PipelineConfig) -> grain.MapDataset:
    """This host's shard of ``records``, shuffled by ``cfg.seed`` (reshuffled each epoch), repeated."""
    index, count = cfg.host()
    ds = grain.MapDataset.source(list(records))
    usable = len(ds) - len(ds) % count
    if usable == 0:
        raise ValueError(f"{len(ds)} records cannot feed {count} hosts")
    ds = ds[:usable][index::count]
    if cfg.shuffle:
        ds = ds.seed(cfg.seed).shuffle()
    return ds.repeat(cfg.num_epochs)


def example_dataset(
    records: Sequence[Record],
    cfg: PipelineConfig,
    *,
    load: Callable[[Example], Example] | None = None,
    augment: Augment | None = None,
) -> grain.MapDataset:
    ds = record_dataset(records, cfg).map(to_example)
    if load is not None:
        ds = ds.map(load).filter(_drop_errors)
    if augment is not None:
        ds = ds.random_map(augment, seed=cfg.seed + 1)
    return ds


def interleave(video: grain.MapDataset, image: grain.MapDataset) -> grain.MapDataset:
    """Alternate video and image examples 1:1 (VITAL's RL batches)."""
    return grain.MapDataset.mix([video, image], [1.0, 1.0])


def _iterate(ds: grain.MapDataset, cfg: PipelineConfig, batch_size: int, batch_fn) -> grain.DatasetIterator:
    it_ds = ds.to_iter_dataset(
        grain.ReadOptions(num_threads=cfg.read_threads, prefetch_buffer_size=cfg.prefetch_buffer)
    ).batch(batch_size, drop_remainder=True, batch_fn=batch_fn)
    if cfg.workers > 0:
        it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=cfg.workers))
    return iter(it_ds)


# --------------------------------------------------------------------------- batches


def collate(examples: Sequence[Example]) -> dict[str, Any]:
    """Host-side batch: per-example fields as tuples; frames stacked when all shapes agree."""
    out: dict[str, Any] = {"examples": tuple(examples)}
    frames = [e.get("frames") for e in examples]
    if frames and all(f is not None for f in frames) and len({f.shape for f in frames}) == 1:
        out["frames"] = np.stack(frames)
    return out


def sft_iterator(
    records: Sequence[Record],
    cfg: PipelineConfig,
    *,
    batch_size: int,
    load: Callable[[Example], Example] | None = None,
) -> grain.DatasetIterator:
    """Batches of ``batch_size`` SFT examples for this host (tokenised by the trainer)."""
    return _iterate(example_dataset(records, cfg, load=load), cfg, batch_size, collate)


@dataclasses.dataclass(frozen=True)
class RLBatch:
    """``P`` prompts, each rolled out ``group_size`` times: rollout ``i`` uses
    ``prompts[prompt_index[i]]`` (``prompt_index`` = ``repeat(arange(P), G)``, groups contiguous)."""

    prompts: tuple[Example, ...]
    group_size: int

    @property
    def prompt_index(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.prompts)), self.group_size)

    @property
    def rollouts(self) -> list[Example]:
        return [self.prompts[i] for i in self.prompt_index]


@dataclasses.dataclass(frozen=True)
class _GroupBatch:
    group_size: int

    def __call__(self, examples: Sequence[Example]) -> RLBatch:
        return RLBatch(tuple(examples), self.group_size)


def rl_iterator(
    records: Sequence[Record],
    cfg: PipelineConfig,
    *,
    prompts_per_batch: int,
    group_size: int,
    image_records: Sequence[Record] | None = None,
    load: Callable[[Example], Example] | None = None,
    augment: Augment | None = None,
) -> grain.DatasetIterator:
    """:class:`RLBatch` es of ``prompts_per_batch`` prompts × ``group_size`` rollouts.

    With ``image_records``, video and image prompts alternate 1:1 (each stream sharded, shuffled
    and repeated on its own, so the ratio holds whatever the two sizes).
    """
    if prompts_per_batch < 1 or group_size < 1:
        raise ValueError(f"need prompts_per_batch >= 1 and group_size >= 1, got {prompts_per_batch}, {group_size}")
    ds = example_dataset(records, cfg, load=load, augment=augment)
    if image_records:
        img_cfg = dataclasses.replace(cfg, seed=cfg.seed + 7919)
        ds = interleave(ds, example_dataset(image_records, img_cfg, load=load, augment=augment))
    return _iterate(ds, cfg, prompts_per_batch, _GroupBatch(group_size))


def batch_keys(batch: dict[str, Any] | RLBatch) -> list[tuple[str, int]]:
    """(file, record index) of every example in a batch: a stable identity for tests and logs."""
    exs = batch.prompts if isinstance(batch, RLBatch) else batch["examples"]
    return [(e["record"].file, e["record"].index) for e in exs]
