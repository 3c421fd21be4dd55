"""Does a checkpoint's vision tower carry the synthetic suite's event colour, and does the LM use it?

    python scripts/probe_vision.py --ckpt runs/demo/sft/final --data runs/demo/data [--scenes 600]

The demo's open problem (README, "Main job") is that the tiny model never names the event's
colour. This separates the two places that can fail:

1. **The tower.** For event scenes of ``--data``, the question video is featurised exactly as
   the checkpoint was trained (its ``vision_settings``) and encoded; the merged token of the
   first frame pair inside the target event is kept. A ridge-regression linear probe (fit on
   training scenes, scored on held-out ones) predicts the colour from those tokens, and from the
   raw mean pixel of the same pair for comparison. Also printed: the visual tokens' mean norm next
   to the text embeddings', and their spread across scenes relative to their size (a tower whose
   outputs are one vector for every frame has a spread near 0).
2. **The LM.** The same MC records rendered as SFT rows with their own video and with the next
   record's video: the mean absolute change of the log-prob of the target tokens. Zero means the
   LM ignores the frames; a change with no colour read means it uses them for something else
   (the cue bar, the timing).

Prints one JSON object. A linear probe, not a trained classifier, on purpose: the LM's first
layer reads the tokens through linear maps.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import numpy as np


def colour_tokens(cfg, params, vision, data: Path, scenes: int):
    """(vision-token features, raw mean pixel, colour index, is_eval) of the event frame pair."""
    from vital_jax.data.synthetic import COLOUR_NAMES, load_scenes
    from vital_jax.models.qwen2_5_vl import modeling
    from vital_jax.models.qwen2_5_vl.api import vision_arrays
    from vital_jax.trainers.sft import video_kwargs
    from vital_jax.video import load_video

    enc = jax.jit(lambda vp, va: modeling.encode_vision(cfg, vp, va))
    feats, pixels, colour, held_out = [], [], [], []
    for sc in [s for s in load_scenes(data) if s.family == "event"][:scenes]:
        v = load_video(data / "videos" / f"{sc.video_id}.mp4", **video_kwargs(vision))
        n = int(np.prod(v.grid_thw))
        va = vision_arrays(cfg, v.pixel_values, np.asarray(v.grid_thw)[None], pad_to=-(-n // 64) * 64)
        tokens = np.asarray(enc(params["vision"], va))[: v.num_tokens]
        per_pair = v.num_tokens // int(v.grid_thw[0])
        e = sc.targets[0]
        times = v.frame_times[: 2 * int(v.grid_thw[0])].reshape(-1, 2)
        pairs = [i for i, t in enumerate(times) if ((t >= e.start) & (t <= e.end)).any()]
        if not pairs:
            continue           # the coarse view misses the event: nothing to read
        i = pairs[0]
        feats.append(tokens[i * per_pair:(i + 1) * per_pair].reshape(-1))
        patches = v.pixel_values.reshape(int(v.grid_thw[0]), -1, 3, 2, 14, 14)[i]
        pixels.append(patches.mean(axis=(0, 2, 3, 4)))
        colour.append(COLOUR_NAMES.index(e.colour))
        held_out.append(sc.split == "eval")
    return np.asarray(feats), np.asarray(pixels), np.asarray(colour), np.asarray(held_out)


def linear_probe(x: np.ndarray, y: np.ndarray, test: np.ndarray, ridge: float = 1.0) -> dict:
    """Ridge regression onto one-hot colours, standardised on the training rows."""
    train = ~test
    mu, sd = x[train].mean(0), x[train].std(0) + 1e-6
    z = np.concatenate([(x - mu) / sd, np.ones((len(x), 1))], 1)
    w = np.linalg.solve(z[train].T @ z[train] + ridge * np.eye(z.shape[1]), z[train].T @ np.eye(4)[y[train]])
    pred = (z @ w).argmax(1)
    return {"train": float((pred[train] == y[train]).mean()), "heldout": float((pred[test] == y[test]).mean()),
            "n_train": int(train.sum()), "n_heldout": int(test.sum())}


def lm_sensitivity(cfg, params, tok, vision, data: Path, rows: int) -> dict:
    """Mean |Δ log p| of the target tokens of MC CoT rows when each row gets another row's video."""
    from vital_jax.data.records import parse_record
    from vital_jax.prompt import ChatRenderer
    from vital_jax.prompt.templates import prompt_set
    from vital_jax.trainers.batch import build_batch
    from vital_jax.trainers.sft import SFTFeatures
    from vital_jax.trainers.step import token_logps

    path = data / "sft_cot.jsonl"
    lines = [json.loads(x) for x in path.read_text().splitlines() if '"multiple_choice"' in x][:rows]
    feat = SFTFeatures(ChatRenderer(tok, prompts=prompt_set(vision.prompt)), vision)
    logp = jax.jit(lambda p, b: token_logps(cfg, p, b))
    out = []
    for shift in (0, 1):
        seqs = []
        for i, d in enumerate(lines):
            d = {**d, "video": lines[(i + shift) % len(lines)]["video"]}
            seqs.append(feat({"record": parse_record(d, root=data, index=i, file=str(path), kind="cot")})["seq"])
        tokens = max(len(s.ids) for s in seqs)
        patches = max(int(sum(np.prod(v.grid_thw) for v in s.visuals)) for s in seqs)
        b = build_batch(cfg, seqs, micro_batches=1, token_buckets=[-(-tokens // 64) * 64],
                        vision_buckets=[-(-patches // 64) * 64])
        mb = jax.tree.map(lambda x: x[0], b)
        out.append((np.asarray(logp(params, mb)), mb["loss_mask"] > 0))
    (own, mask), (other, _) = out
    return {"rows": len(lines), "mean_abs_dlogp": float(np.abs(own - other)[mask].mean()),
            "logp_own_video": float(own[mask].sum()), "logp_other_video": float(other[mask].sum())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", required=True, help="HF directory written by vital train / vital demo")
    ap.add_argument("--data", required=True, help="a vital synth folder (scenes.jsonl, videos/, sft_cot.jsonl)")
    ap.add_argument("--scenes", type=int, default=600)
    ap.add_argument("--rows", type=int, default=32, help="MC rows for the LM check")
    args = ap.parse_args()

    from vital_jax.bench.readme_table import machine_info
    from vital_jax.models.checkpoint import load_any
    from vital_jax.prompt import load_tokenizer
    from vital_jax.config.run_config import vision_settings

    data = Path(args.data)
    cfg, params = load_any(args.ckpt)
    vision = vision_settings(args.ckpt)
    feats, pixels, colour, test = colour_tokens(cfg, params, vision, data, args.scenes)
    result = {
        "ckpt": args.ckpt, "machine": machine_info(),
        "visual_token_norm": float(np.linalg.norm(feats.reshape(len(feats), -1, cfg.text.hidden_size), axis=-1).mean()),
        "text_embed_norm": float(np.linalg.norm(np.asarray(params["embed"]), axis=-1).mean()),
        "visual_spread": float(feats.std(0).mean() / np.abs(feats).mean()),
        "probe_vision_tokens": linear_probe(feats, colour, test),
        "probe_raw_mean_pixel": linear_probe(pixels, colour, test),
        "lm": lm_sensitivity(cfg, params, load_tokenizer(args.ckpt), vision, data, args.rows),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
