"""Learning is a correctness property: the trainers raise HELD-OUT reward on tasks a tiny model can
learn, and do not when the advantage sign is flipped.

Everything goes through the real trainers (``run_sft``, ``run_rl``: grain pipeline, tool loop on the
KV-cached sampler, VITAL rewards, group advantages, the configured policy loss, Adam) on a tiny
Qwen2.5-VL (``ModelConfig.tiny``: 64 wide x 2 layers) with a small BPE tokenizer. Every record
carries a blank 4 s video (the pipeline is the video one; the tasks live in the text and the tool).
The held-out numbers are the trainer's own greedy evaluation (``rl.eval_every``) on records never
used in training, at step 0 and at the end.

1. **Policy losses** (``grpo``, ``dgrpo``, ``reg_grpo``, ``gspo``): a short SFT warm start teaches
   the answer format with the option letter drawn at random, so the SFT model picks A-D at chance.
   The reward then pays one option (C) on every prompt; the prompts differ (random words), and the
   held-out prompts are new ones. From reward alone the policy must move to C: held-out accuracy
   goes from about chance to near 1. With the advantage sign flipped it must not rise.
   (Why a fixed option and not "copy the letter the prompt marks": that needs the 64-wide model to
   learn a content-addressed attention read, which takes it >100 supervised steps and far more RL
   steps than a test can spend; measured: 0.16 -> 0.34 held-out in 30 RL steps. The tool test
   below is the prompt-dependent one.)
2. **Through the tool loop**: the answer differs per record and only a text tool knows it
   (``lookup`` reads it from the record's video name; the frames are blank). The SFT warm start
   calls the tool in ~30 % of its trajectories (and then copies the tool's answer) and guesses in
   the rest, so greedy decoding at step 0 guesses (chance). RL must learn to call the tool:
   tool-call rate and held-out accuracy both rise.
3. **SFT** fits a small multi-turn tool corpus (call with an argument copied from the question,
   text observation, answer copied from the observation) to near-zero loss on the policy tokens
   and reproduces held-out trajectories' format and arguments.
"""

import importlib
import json
import shutil

import jax
import numpy as np
import pytest

from vital_jax.train import rl as rl_mod
from vital_jax.train.config import load_config
from vital_jax.train.sft import run_sft

LETTERS = "ABCD"
WORDS = ("apple river stone cloud green tiger paper metal window garden silver candle orange music "
         "table bridge forest pencil rocket shadow").split()
ANSWER_FMT = "<think>{think}</think><answer>{letter}</answer>"
LOOKUP_CALL = '<think>look</think><tool_call>{"name": "lookup", "arguments": {"key": "%s"}}</tool_call>'
GUESS = "guess"
PRIOR = (0.4, 0.2, 0.2, 0.2)         # the SFT warm start's letter frequencies (A..D)
QUIET = dict(log=lambda s: None)


def _words(rng, n=3):
    return " ".join(rng.choice(WORDS, n))


def _write(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
    """The runs below compile the same programs: a persistent XLA cache for this module only."""
    old = (jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs)
    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("xla_cache")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    yield
    jax.config.update("jax_compilation_cache_dir", old[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", old[1])


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("learning"))


def make_world(root):
    """Data files, blank videos, tokenizer and an initial tiny model (``init/``) under ``root``."""
    from vital_jax.models.qwen2_5_vl import export_pretrained, init_params
    from vital_jax.prompt import templates, train_small_tokenizer
    from vital_jax.train.common import tiny_config_for
    from vital_jax.video.write import write_video

    (root / "v").mkdir()
    write_video(root / "v" / "blank.mp4", np.full((8, 32, 32, 3), 60, np.uint8), 2.0)
    # the tool's answer is in the video's NAME (the frames are identical): one copy per key
    keys = [f"{L}{i}" for L in LETTERS for i in range(12)]
    for k in keys:
        shutil.copy(root / "v" / "blank.mp4", root / "v" / f"{k}.mp4")
    rng = np.random.default_rng(0)
    base = {"duration": 4.0, "data_source": "synthetic/multiple_choice"}

    def fixed(n, seed):                       # the fixed-option task (rewarded option: C)
        r = np.random.default_rng(seed)
        return [{**base, "video": "v/blank.mp4", "text": f"Words: {_words(r)}. Which option is right?",
                 "options": [f"{L}." for L in LETTERS], "solution": "C"} for _ in range(n)]

    def lookup(n, seed, keyset):              # the tool task: the answer is the key's letter
        r = np.random.default_rng(seed)
        out = []
        for _ in range(n):
            k = keyset[r.integers(len(keyset))]
            out.append({**base, "video": f"v/{k}.mp4", "text": f"Item {k[1:]}. Words: {_words(r)}. Which letter?",
                        "solution": k[0], "key": k})
        return out

    train_keys = [k for k in keys if int(k[1:]) < 8]
    held_keys = [k for k in keys if int(k[1:]) >= 8]
    # 1) fixed option: SFT on the format with a random letter, RL and held-out prompts
    # the SFT prior prefers A (greedy answers A at step 0: accuracy 0); C is sampled 1 time in 5
    sft_fixed = [{**r, "solution": ANSWER_FMT.format(think="ok", letter=rng.choice(list(LETTERS), p=PRIOR))}
                 for r in fixed(512, 1)]
    _write(root / "fixed_sft.jsonl", sft_fixed)
    _write(root / "fixed_rl.jsonl", fixed(256, 2))
    _write(root / "fixed_eval.jsonl", fixed(64, 3))
    # 2) tool: 30 % call lookup and copy its answer, 70 % guess (under the same tool prompt)
    rows = []
    for r in lookup(768, 4, train_keys):
        if rng.random() < 0.3:
            rows.append({**r, "solution": [LOOKUP_CALL % r["key"], ANSWER_FMT.format(think="ok", letter=r["solution"])],
                         "observation": f"The answer is {r['solution']}.", "answer": r["solution"]})
        else:
            rows.append({**r, "use_tool": True,
                         "solution": ANSWER_FMT.format(think=GUESS, letter=LETTERS[rng.integers(4)])})
    _write(root / "tool_sft.jsonl", rows)
    _write(root / "tool_rl.jsonl", lookup(256, 5, train_keys))
    _write(root / "tool_eval.jsonl", lookup(64, 6, held_keys))
    # 3) SFT corpus: every trajectory calls lookup with the question's item key
    calls = [{**r, "solution": [LOOKUP_CALL % r["key"], ANSWER_FMT.format(think="ok", letter=r["solution"])],
              "observation": f"The answer is {r['solution']}.", "answer": r["solution"]}
             for r in lookup(96, 7, train_keys)]
    _write(root / "calls_sft.jsonl", calls)
    _write(root / "calls_eval.jsonl", lookup(32, 8, held_keys))

    corpus = ([templates.DEFAULT_SYSTEM + templates.tools_block([templates.CLIP_TOOL_SCHEMA])] * 50
              + [templates.user_text(r["text"], duration=4.0, use_tool=u) for r in fixed(100, 9) + lookup(100, 9, keys)
                 for u in (True, False)]
              + [ANSWER_FMT.format(think=t, letter=L) for t in ("ok", GUESS) for L in LETTERS] * 20
              + [LOOKUP_CALL % k for k in keys] * 5 + [f"The answer is {L}." for L in LETTERS] * 20)
    tok = train_small_tokenizer(corpus, vocab_size=700)
    cfg = tiny_config_for(tok)
    _, params = init_params(cfg, seed=0)
    export_pretrained(cfg, params, root / "init")
    tok.save(root / "init")
    return root


def _common(root, out, task, bucket):
    return [f"data.root={root}", f"out_dir={out}", f"data.token_buckets=[{bucket}]", "data.vision_buckets=[64]",
            "data.vision.max_frames=4", "data.vision.max_pixels=3136", "checkpoint.every=0",
            "checkpoint.async_save=false", f"data.eval_file={task}_eval.jsonl"]


def _sft(root, task, steps, bucket, lr=3e-3, batch=16):
    cfg = load_config(None, _common(root, root / f"sft_{task}", task, bucket) + [
        "stage=sft", f"model.init_from={root / 'init'}", f"data.sft_files=[{task}_sft.jsonl]",
        f"sft.steps={steps}", f"sft.batch_size={batch}", f"sft.optim.learning_rate={lr}", "sft.optim.warmup_steps=5",
        "sft.optim.schedule=cosine", "sft.optim.final_lr_fraction=0.1"])
    return run_sft(cfg, **QUIET)


@pytest.fixture(scope="module")
def fixed_sft(world, compile_cache):
    return _sft(world, "fixed", 100, 192)["final"]


def _rl(root, init, task, out, loss, steps, bucket, *extra):
    cfg = load_config(None, _common(root, out, task, bucket) + [
        "stage=rl", f"model.init_from={init}", f"data.rl_files=[{task}_rl.jsonl]", f"rl.loss={loss}",
        f"rl.advantage={'dgrpo' if loss == 'dgrpo' else 'grpo'}", f"rl.steps={steps}", f"rl.eval_every={steps}",
        "rl.eval_limit=64", "rl.prompts_per_step=8", "rl.group_size=8", "rl.rollout_batch=64", "rl.max_new_tokens=40",
        f"rl.cache_length={bucket}", "rl.temperature=1.0", "rl.repetition_penalty=1.0", "rl.beta=0.0",
        "model.freeze_vision=true", "rl.optim.learning_rate=2e-3", "rl.optim.warmup_steps=3", *extra])
    return rl_mod.run_rl(cfg, **QUIET)


def _heldout(res, key="accuracy"):
    """(step-0, last) held-out values of the trainer's greedy evaluation."""
    pts = res["curves"][f"{key}/heldout"]
    return pts[0][1], pts[-1][1]


@pytest.mark.parametrize("loss", ["grpo", "dgrpo", "reg_grpo", "gspo"])
def test_rl_raises_heldout_reward(world, fixed_sft, tmp_path, loss):
    res = _rl(world, fixed_sft, "fixed", tmp_path / loss, loss, 12, 192, "rl.use_tools=false")
    a0, a1 = _heldout(res)
    r0, r1 = _heldout(res, "reward")
    print(f"{loss}: held-out accuracy {a0:.3f} -> {a1:.3f}, reward {r0:.3f} -> {r1:.3f}")
    assert a0 <= 0.25, "the SFT warm start answers its prior's mode (A), not C"
    assert a1 >= 0.9 and r1 >= r0 + 0.5


def test_flipped_advantages_do_not_learn(world, fixed_sft, tmp_path, monkeypatch):
    """The same run with every advantage negated: held-out accuracy must not rise (it falls)."""
    adv_mod = importlib.import_module("vital_jax.rl.advantages")   # the trainer imports it per step
    real = adv_mod.advantages
    monkeypatch.setattr(adv_mod, "advantages", lambda *a, **k: -np.asarray(real(*a, **k)))
    res = _rl(world, fixed_sft, "fixed", tmp_path / "flip", "grpo", 12, 192, "rl.use_tools=false")
    a0, a1 = _heldout(res)
    r0, r1 = _heldout(res, "reward")
    print(f"flipped: held-out accuracy {a0:.3f} -> {a1:.3f}, reward {r0:.3f} -> {r1:.3f}")
    assert a1 <= max(a0, 0.3) and r1 <= r0
