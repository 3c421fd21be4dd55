"""``vital eval``: run a checkpoint over a benchmark with the tool loop; predictions + metrics.

``--ckpt`` is an HF-format Qwen2.5-VL or Qwen3-VL directory or a vital checkpoint (``vital convert``), with
its tokenizer, as ``vital infer`` takes it.
A checkpoint exported by the trainers carries its video/prompt settings (``vital_settings.json``:
frames, pixels, timestamps, textual timestamps); they are the defaults here, and each flag given
overrides its one setting. Without that file the defaults are VITAL's evaluation settings.
Writes ``predictions.jsonl``, ``run.json`` and ``metrics.json`` into ``--out``; rerunning the same
command resumes (samples already written are skipped). ``vital score`` on the predictions file
gives the same metrics. See :mod:`vital_jax.eval.runner`.
"""

from __future__ import annotations

import argparse
import os

from vital_jax.cli import CommandError


def add_arguments(p: argparse.ArgumentParser) -> None:
    from vital_jax.eval.benchmarks import BENCHMARKS

    p.description = (__doc__ or "").strip()
    p.add_argument("--ckpt", required=True, help="HF-format Qwen2.5-VL or Qwen3-VL directory (config.json, *.safetensors) or "
                   "vital checkpoint (vital convert), with its tokenizer (tokenizer.json or vocab.json + merges.txt)")
    # not argparse choices: an unknown name is a one-line CommandError listing the known ones
    p.add_argument("--benchmark", required=True, metavar="NAME", help="one of: " + ", ".join(sorted(BENCHMARKS)))
    p.add_argument("--data", required=True, help="the benchmark's annotation file")
    p.add_argument("--video-root", default=None,
                   help="folder the annotation's video paths are relative to (default: the data file's folder)")
    p.add_argument("--out", required=True, help="output folder (predictions.jsonl, metrics.json, run.json)")
    p.add_argument("--no-tools", action="store_true", help="answer without the clip tool")
    p.add_argument("--frames", type=int, default=None, help="frame cap of the question video (default: the "
                   "checkpoint's setting, else 256)")
    p.add_argument("--max-pixels", type=int, default=None,
                   help="per-frame pixel cap of the question video (default: the checkpoint's, else 384*384)")
    p.add_argument("--clip-max-pixels", type=int, default=None, help="per-frame pixel cap of tool clips "
                   "(default: the checkpoint's, else the tool's 64*28*28)")
    p.add_argument("--clip-max-frames", type=int, default=None,
                   help="frame cap of tool clips (default: the checkpoint's, else 64)")
    p.add_argument("--timestamps", action=argparse.BooleanOptionalAction, default=None,
                   help="draw timestamps on clip frames, as VITAL's eval (default: the checkpoint's, else off)")
    p.add_argument("--text-timestamps", action=argparse.BooleanOptionalAction, default=None,
                   help="write each frame group's time as text before its visual tokens, Qwen3-VL style "
                   "(default: the checkpoint's, else off)")
    p.add_argument("--batch-size", type=int, default=8, help="samples decoded together (default 8)")
    p.add_argument("--limit", type=int, default=None, help="evaluate (and score) the first N samples only")
    p.add_argument("--max-new-tokens", type=int, default=1024, help="tokens per assistant turn (default 1024)")
    p.add_argument("--max-turns", type=int, default=3, help="assistant turns at most (default 3)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default, as VITAL evaluated)")
    p.add_argument("--cache-length", type=int, default=None,
                   help="context limit in tokens (default: sized from the samples)")
    p.add_argument("--seed", type=int, default=0)


def load_checkpoint(path: str):
    """``(model config, params, tokenizer)`` of an HF-format directory or a vital checkpoint
    (``vital convert``), or a CommandError naming it. Shared by ``vital eval`` and ``vital infer``."""
    from vital_jax.models.checkpoint import ModelCheckpointError, load_any
    from vital_jax.models.qwen2_5_vl import CheckpointError, ConfigError
    from vital_jax.prompt import TokenizerError, load_tokenizer

    try:
        cfg, params = load_any(path)
        tok = load_tokenizer(path)
    except (ModelCheckpointError, TokenizerError, CheckpointError, ConfigError, OSError) as e:
        raise CommandError(f"--ckpt {path}: {e}") from None
    return cfg, params, tok


def checkpoint_vision(ckpt: str, *, max_frames=None, max_pixels=None, clip_max_frames=None,
                      clip_max_pixels=None, timestamps=None, text_timestamps=None):
    """The checkpoint's :class:`~vital_jax.config.run_config.VisionInputConfig` with the flags that
    were given (not None) put over it, or None when the checkpoint has no settings file (the
    caller keeps its own defaults). Shared by ``vital eval`` and ``vital infer``."""

    from vital_jax.config.run_config import ConfigError, replace, vision_settings

    try:
        saved = vision_settings(ckpt, default=None)
    except ConfigError as e:
        raise CommandError(f"--ckpt {ckpt}: {e}") from None
    if saved is None:
        return None
    over = {k: v for k, v in dict(max_frames=max_frames, max_pixels=max_pixels, clip_max_frames=clip_max_frames,
                                  clip_max_pixels=clip_max_pixels, timestamps=timestamps,
                                  text_timestamps=text_timestamps).items() if v is not None}
    v = replace(saved, **over)
    # a smaller pixel cap than the trained floor: the floor follows (else no frame size fits)
    return replace(v, min_pixels=min(v.min_pixels, v.max_pixels))


def _check(args) -> None:
    from vital_jax.eval.benchmarks import BENCHMARKS

    if args.benchmark not in BENCHMARKS:
        raise CommandError(f"--benchmark {args.benchmark!r} is not known; known: {', '.join(sorted(BENCHMARKS))}")
    for flag, v, lo in (("--frames", args.frames, 2), ("--max-pixels", args.max_pixels, 4 * 28 * 28),
                        ("--batch-size", args.batch_size, 1), ("--max-new-tokens", args.max_new_tokens, 1),
                        ("--max-turns", args.max_turns, 1), ("--limit", args.limit, 1),
                        ("--clip-max-pixels", args.clip_max_pixels, 4 * 28 * 28),
                        ("--clip-max-frames", args.clip_max_frames, 2), ("--cache-length", args.cache_length, 64)):
        if v is not None and v < lo:
            raise CommandError(f"{flag} must be >= {lo}, got {v}")
    if args.temperature < 0:
        raise CommandError(f"--temperature must be >= 0, got {args.temperature}")
    if args.video_root is not None and not os.path.isdir(args.video_root):
        raise CommandError(f"--video-root {args.video_root}: not a directory")


def run(args: argparse.Namespace) -> int:
    _check(args)
    from vital_jax.data.records import DataFileError
    from vital_jax.eval.benchmarks import AnnotationLayoutError, load_benchmark

    # the cheap checks first: a bad data file fails before the model loads
    try:
        samples = load_benchmark(args.benchmark, args.data)
    except (AnnotationLayoutError, DataFileError, ValueError, KeyError) as e:
        raise CommandError(f"--data {args.data}: {e}" if str(args.data) not in str(e) else str(e)) from None
    if not samples:
        raise CommandError(f"--data {args.data}: no samples")
    cfg, params, tok = load_checkpoint(args.ckpt)

    import dataclasses

    from vital_jax.rollout.tool_loop import AgentConfig
    from vital_jax.eval.runner import EVAL_AGENT_CONFIG, EvalSettingsError, evaluate
    from vital_jax.rollout.contract import RolloutResourceError
    from vital_jax.eval.scoring import summary_table
    from vital_jax.video import sampling as vs

    v = checkpoint_vision(args.ckpt, max_frames=args.frames, max_pixels=args.max_pixels,
                          clip_max_frames=args.clip_max_frames, clip_max_pixels=args.clip_max_pixels,
                          timestamps=args.timestamps, text_timestamps=args.text_timestamps)
    if v is not None:  # the settings the checkpoint was trained with (flags given override)
        from vital_jax.trainers.sft import agent_vision

        vision = agent_vision(v, cfg)
    else:              # an outside checkpoint: VITAL's evaluation settings (evaluate() adds its family's)
        max_pixels = 384 * 384 if args.max_pixels is None else args.max_pixels
        video_kw = {"max_frames": 256 if args.frames is None else args.frames, "max_pixels": max_pixels,
                    # qwen-vl-utils' floor (128 tokens a frame) would upscale small videos past the cap
                    "min_pixels": min(vs.VIDEO_MIN_PIXELS, max_pixels)}
        clip_kw = {k: x for k, x in (("max_pixels", args.clip_max_pixels), ("max_frames", args.clip_max_frames),
                                     ("timestamps", args.timestamps or None)) if x is not None}
        vision = dict(video_kwargs=video_kw, clip_kwargs=clip_kw, text_timestamps=bool(args.text_timestamps),
                      prompts="vital")
    agent = AgentConfig(sampling=dataclasses.replace(EVAL_AGENT_CONFIG.sampling, temperature=args.temperature,
                                                     max_new_tokens=args.max_new_tokens),
                        max_turns=args.max_turns, text_timestamps=vision["text_timestamps"], prompts=vision["prompts"])
    # everything else sized from the samples by the runner
    overrides = {"cache_length": args.cache_length} if args.cache_length is not None else None
    try:
        result = evaluate(cfg, params, tok, args.benchmark, samples, out_dir=args.out, use_tools=not args.no_tools,
                          batch_size=args.batch_size, video_root=args.video_root or os.path.dirname(os.path.abspath(args.data)),
                          sampler_config=overrides, agent_config=agent, video_kwargs=vision["video_kwargs"],
                          clip_kwargs=vision["clip_kwargs"],
                          seed=args.seed, limit=args.limit,
                          run_info={"ckpt": os.path.abspath(args.ckpt), "data": os.path.abspath(args.data)})
    except EvalSettingsError as e:
        raise CommandError(str(e)) from None
    except RolloutResourceError as e:
        raise CommandError(f"{e.what}: lower --batch-size, or --frames / --max-pixels / --clip-max-pixels "
                           "(video tokens), or --max-new-tokens") from None
    print(summary_table(result))
    return 0

