"""``vital infer``: answer a question about a video with the tool loop and print the transcript.

``--ckpt`` is an HF-format Qwen2.5-VL or Qwen3-VL directory (config.json + safetensors) or a vital checkpoint
(``vital convert``: config.json + params/), holding the tokenizer (tokenizer.json, or vocab.json +
merges.txt). Runs one episode through the same KV-cached sampler and tool loop as RL rollouts.
A checkpoint exported by the trainers carries its video/prompt settings (``vital_settings.json``);
they are the defaults, and each flag given overrides its one setting.
"""

from __future__ import annotations

import argparse
import os


def add_arguments(p) -> None:
    p.description = (__doc__ or "").strip()
    p.add_argument("--ckpt", required=True, help="HF-format Qwen2.5-VL or Qwen3-VL directory (config.json, *.safetensors) or "
                   "vital checkpoint (vital convert), with its tokenizer (tokenizer.json or vocab.json + merges.txt)")
    p.add_argument("--video", required=True, help="video file")
    p.add_argument("--question", required=True, help="question text")
    p.add_argument("--no-tools", action="store_true", help="answer without the clip tool")
    p.add_argument("--max-turns", type=int, default=3, help="assistant turns at most (default 3)")
    p.add_argument("--max-new-tokens", type=int, default=512, help="tokens per assistant turn (default 512)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--repetition-penalty", type=float, default=1.05)
    p.add_argument("--cache-length", type=int, default=16384, help="context limit in tokens, at most (default 16384; the cache is sized to what the "
                   "video, the clips and --max-turns x --max-new-tokens can fill)")
    p.add_argument("--max-pixels", type=int, default=None, help="per-frame pixel cap of the question video "
                   "(default: the checkpoint's setting, else load_video's)")
    p.add_argument("--max-frames", type=int, default=None, help="frame cap of the question video "
                   "(default: the checkpoint's, else load_video's)")
    p.add_argument("--timestamps", action=argparse.BooleanOptionalAction, default=None,
                   help="draw timestamps on clip frames (default: the checkpoint's, else off)")
    p.add_argument("--text-timestamps", action=argparse.BooleanOptionalAction, default=None,
                   help="write each frame group's time as text before its visual tokens, Qwen3-VL style "
                   "(default: the checkpoint's, else off)")
    p.add_argument("--seed", type=int, default=0)


def _check(args):
    from vital_jax.cli import CommandError

    if not os.path.isfile(args.video):
        raise CommandError(f"--video {args.video}: no such file")
    if not args.question.strip():
        raise CommandError("--question is empty")
    if args.max_turns < 1 or args.max_new_tokens < 1 or args.cache_length < 64:
        raise CommandError("--max-turns and --max-new-tokens must be >= 1, --cache-length >= 64")
    if args.temperature < 0 or not 0 < args.top_p <= 1 or args.repetition_penalty <= 0:
        raise CommandError("need --temperature >= 0, 0 < --top-p <= 1, --repetition-penalty > 0")


def run(args) -> int:
    _check(args)
    from vital_jax.rollout import (AgentConfig, EpisodeRequest, Rollout, RolloutResourceError, SamplingOptions,
                                   request_budget)
    from vital_jax.cli import CommandError
    from vital_jax.eval.commands_eval import checkpoint_vision, load_checkpoint
    from vital_jax.prompt import ChatRenderer
    from vital_jax.trainers.sft import agent_vision, with_family
    from vital_jax.video.errors import VideoError

    cfg, params, tok = load_checkpoint(args.ckpt)
    v = checkpoint_vision(args.ckpt, max_frames=args.max_frames, max_pixels=args.max_pixels,
                          timestamps=args.timestamps, text_timestamps=args.text_timestamps)
    if v is not None:  # the settings the checkpoint was trained with (flags given override)
        vision = agent_vision(v, cfg)
    else:              # an outside checkpoint: load_video's and the tool's defaults, for its family
        vision = with_family(dict(video_kwargs={k: x for k, x in (("max_pixels", args.max_pixels),
                                                                  ("max_frames", args.max_frames)) if x},
                                  clip_kwargs={"timestamps": bool(args.timestamps)},
                                  text_timestamps=bool(args.text_timestamps)), cfg)
    config = AgentConfig(
        sampling=SamplingOptions(temperature=args.temperature, top_p=args.top_p,
                                 repetition_penalty=args.repetition_penalty, max_new_tokens=args.max_new_tokens),
        max_turns=args.max_turns, **vision)
    renderer = ChatRenderer(tok, prompts=config.prompts)
    request = EpisodeRequest(args.question, args.video, use_tool=not args.no_tools)
    # one row, its shapes sized from this video's header; --cache-length is the ceiling
    rollout = Rollout.sized(cfg, params, renderer, [request_budget(renderer, request, config)], batch_size=1,
                            max_turns=config.max_turns, max_new_tokens=config.sampling.max_new_tokens,
                            max_cache_length=args.cache_length)
    try:
        ep, = rollout.run([request], config, seed=args.seed)
    except (VideoError, ValueError) as e:
        raise CommandError(str(e)) from None
    except RolloutResourceError as e:
        raise CommandError(f"{e.what}: lower --max-pixels / --max-frames (video tokens) or --max-new-tokens") from None
    print(transcript(ep))
    if ep.end_reason == "video_error":
        raise CommandError(ep.error or "the video cannot be read")
    return 0


def transcript(ep) -> str:
    """Human-readable episode: question, each assistant turn, tool calls with clip ranges, end."""
    lines = [f"question: {ep.request.question}"]
    if ep.duration is not None:
        lines.append(f"video: {ep.request.video} ({ep.duration:.2f} s)")
    calls = iter(ep.tool_calls)
    for i, text in enumerate(ep.texts):
        lines.append(f"--- assistant (turn {i + 1}) ---")
        lines.append(text)
        if "</tool_call>" in text:
            c = next(calls, None)
            if c is not None:
                what = (f"clip {c.start:.2f}-{c.end:.2f} s" if c.ok else f"error [{c.code}] {c.message}")
                lines.append(f"--- tool {c.name or '?'}: {what} ---")
    lines.append(f"=== end: {ep.end_reason}{' (truncated)' if ep.truncated else ''}; "
                 f"{len(ep.ids)} tokens, {len(ep.visuals)} visual input(s)")
    return "\n".join(lines)
