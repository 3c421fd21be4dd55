"""Learning is a correctness property: RL raises HELD-OUT reward on a task a tiny model can
learn, with each policy loss, and does not when the advantage sign is flipped.

Everything goes through the real trainers (``run_sft``, ``run_rl``: grain pipeline, tool loop on the
KV-cached sampler, VITAL rewards, group advantages, the configured policy loss, AdamW) on a tiny
Qwen2.5-VL (``ModelConfig.tiny``: 64 wide x 2 layers) with a small BPE tokenizer. Every record
carries a blank 4 s video (the pipeline is the video one; the task lives in the text). The held-out
numbers are the trainer's own greedy evaluation (``rl.eval_every``) on prompts never used in
training, at step 0 and at the end.

The task: a short SFT warm start teaches the answer format with the option letter drawn from a
prior that prefers A (0.4 / 0.2 / 0.2 / 0.2), independent of the prompt, so the SFT policy answers A
greedily (held-out accuracy 0) and samples C one time in five. The reward pays option C on every
prompt (the prompts differ by random words; the held-out ones are new). From reward alone, each of
``grpo``, ``dgrpo``, ``reg_grpo`` and ``gspo`` must move the held-out greedy answer to C within 12
steps; with the advantages negated the policy must not learn (it unlearns the format instead).

The tool loop (``test_sft_fits_a_multi_turn_tool_corpus``, ``test_rl_learns_to_call_the_tool``): a
text tool ``lookup`` whose observation is the answer. SFT on a corpus where prompts that say "Ask
the tool." always call it and copy the observation, and plain prompts call it 3 times in 10, must
reproduce held-out asked trajectories (call, copied answer); RL from that policy, whose greedy
answers to plain prompts skip the tool (accuracy at chance), must learn to call it on held-out
plain prompts from the reward for the right letter alone (no tool bonus); negated advantages must
not. RL here runs at lr 5e-4: at 2e-3 the first Adam steps wipe the freshly learnt copy (sampled
post-tool accuracy 0.73 -> 0.10 after one update) and the policy learns to avoid the tool.

What a tiny model finds hard, measured while writing these (the learning issue's notes):
- copying a token by attention is learnt in a jump whose timing varies from run to run; option
  letters in the prompt ("A. B. C. D.") are distractors for it: with them, 800 SFT steps left the
  post-tool answer right 0.58 of the time, without them 1.000;
- a prompt-dependent mapping by RL alone (answer B when the prompt says "Key: river"): 60 steps
  moved held-out accuracy 0.25 -> 0.27, also with the key copied into the think;
- arguments copied from the prompt into the call (``{"topic": "north"}``): right in ~85 % of
  calls after 400 SFT steps, and at 30 % tool rows RL never got a valid call to reward.
"""

import importlib
import json

import numpy as np
import pytest

from vital_jax.trainers import rl as rl_mod
from vital_jax.config.run_config import load_config
from vital_jax.trainers.sft import run_sft

LETTERS = "ABCD"
WORDS = ("apple river stone cloud green tiger paper metal window garden silver candle orange music "
         "table bridge forest pencil rocket shadow").split()
ANSWER_FMT = "<think>{think}</think><answer>{letter}</answer>"
PRIOR = (0.4, 0.2, 0.2, 0.2)         # the SFT warm start's letter frequencies (A..D)


def _words(rng, n=3):
    return " ".join(rng.choice(WORDS, n))


def _write(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("learning"))


def make_world(root):
    """Data files, blank videos, tokenizer and an initial tiny model (``init/``) under ``root``."""
    from vital_jax.prompt import templates
    from vital_jax.video.write import write_video

    (root / "v").mkdir()
    write_video(root / "v" / "blank.mp4", np.full((8, 32, 32, 3), 60, np.uint8), 2.0)
    rng = np.random.default_rng(0)
    base = {"duration": 4.0, "data_source": "synthetic/multiple_choice"}

    def fixed(n, seed):                       # the fixed-option task (rewarded option: C)
        r = np.random.default_rng(seed)
        return [{**base, "video": "v/blank.mp4", "text": f"Words: {_words(r)}. Which option is right?",
                 "options": [f"{L}." for L in LETTERS], "solution": "C"} for _ in range(n)]

    # 1) fixed option: SFT on the format with a random letter, RL and held-out prompts
    # the SFT prior prefers A (greedy answers A at step 0: accuracy 0); C is sampled 1 time in 5
    sft_fixed = [{**r, "solution": ANSWER_FMT.format(think="ok", letter=rng.choice(list(LETTERS), p=PRIOR))}
                 for r in fixed(512, 1)]
    _write(root / "fixed_sft.jsonl", sft_fixed)
    _write(root / "fixed_rl.jsonl", fixed(256, 2))
    _write(root / "fixed_eval.jsonl", fixed(64, 3))
    corpus = ([templates.DEFAULT_SYSTEM] * 20
              + [templates.user_text(r["text"], duration=4.0, use_tool=False) for r in fixed(200, 9)]
              + [ANSWER_FMT.format(think="ok", letter=L) for L in LETTERS] * 20)
    _init_model(root, corpus)
    return root


def _init_model(root, corpus):
    """A small BPE on ``corpus`` and a fresh tiny Qwen2.5-VL for it, in ``root/init``."""
    from vital_jax.models.qwen2_5_vl import export_pretrained, init_params
    from vital_jax.prompt import train_small_tokenizer
    from vital_jax.trainers.common import tiny_config_for

    tok = train_small_tokenizer(corpus, vocab_size=700)
    cfg = tiny_config_for(tok)
    _, params = init_params(cfg, seed=0)
    export_pretrained(cfg, params, root / "init")
    tok.save(root / "init")


def _common(root, out, task, bucket):
    return [f"data.root={root}", f"out_dir={out}", f"data.token_buckets=[{bucket}]", "data.vision_buckets=[64]",
            "data.vision.max_frames=4", "data.vision.max_pixels=3136", "checkpoint.every=0",
            "checkpoint.async_save=false", f"data.eval_file={task}_eval.jsonl"]


def _sft(root, task, steps, bucket, *extra, lr=3e-3, batch=16):
    cfg = load_config(None, _common(root, root / f"sft_{task}", task, bucket) + [*extra,
        "stage=sft", f"model.init_from={root / 'init'}", f"data.sft_files=[{task}_sft.jsonl]",
        f"sft.steps={steps}", f"sft.batch_size={batch}", f"sft.optim.learning_rate={lr}", "sft.optim.warmup_steps=5",
        "sft.optim.schedule=cosine", "sft.optim.final_lr_fraction=0.1",
        # the videos are blank (the tasks live in the text): a frozen tower makes a step ~40 % cheaper
        "model.freeze_vision=true"])
    return run_sft(cfg)


@pytest.fixture(scope="module")
def fixed_sft(world):
    return _sft(world, "fixed", 100, 192)["final"]


def _rl(root, init, task, out, loss, steps, bucket, *extra):
    cfg = load_config(None, _common(root, out, task, bucket) + [
        "stage=rl", f"model.init_from={init}", f"data.rl_files=[{task}_rl.jsonl]", f"rl.loss={loss}",
        f"rl.advantage={'dgrpo' if loss == 'dgrpo' else 'grpo'}", f"rl.steps={steps}", f"rl.eval_every={steps}",
        "rl.eval_limit=64", "rl.prompts_per_step=8", "rl.group_size=8", "rl.rollout_batch=64", "rl.max_new_tokens=40",
        f"rl.cache_length={bucket}", "rl.temperature=1.0", "rl.repetition_penalty=1.0", "rl.beta=0.0",
        "model.freeze_vision=true", "rl.optim.learning_rate=2e-3", "rl.optim.warmup_steps=3", *extra])
    return rl_mod.run_rl(cfg)


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


# --------------------------------------------------------------------------- the tool loop
# A text tool whose observation is the answer: `lookup` (no arguments) returns the letter of the
# record's video (v/ans_<letter>.mp4; every video is the same blank clip, so the video itself says
# nothing and the question is random words). The compact prompt set keeps rows ~130 tokens.
TOOL_CALL = '<think>ok</think><tool_call>{"name": "lookup", "arguments": {}}</tool_call>'
ASK = "Ask the tool. "
TOOL_ARGS = ("data.vision.prompt=compact",)


def lookup(arguments, ctx):
    from pathlib import Path

    from vital_jax.rollout.tools import ToolResult

    if arguments:
        return ToolResult(error=("bad_arguments", "lookup takes no arguments"))
    return ToolResult(text=Path(ctx.video).stem[-1])


@pytest.fixture
def lookup_tool(monkeypatch):
    from vital_jax.rollout.tools import TOOLS

    monkeypatch.setitem(TOOLS, "lookup", lookup)


def make_tool_world(root):
    """The tool task's data and model. SFT rows: prompts that say "Ask the tool." always call it
    and copy the observation into the answer; plain prompts call it 3 times in 10 and otherwise
    answer a random letter, so the SFT policy answers plain prompts greedily without the tool
    (held-out accuracy at chance) but samples calls whose answers are right."""
    from vital_jax.prompt import templates
    from vital_jax.video.write import write_video

    (root / "v").mkdir()
    for L in LETTERS:
        write_video(root / "v" / f"ans_{L}.mp4", np.full((8, 32, 32, 3), 60, np.uint8), 2.0)

    def recs(n, seed, ask=False):
        r = np.random.default_rng(seed)
        out = []
        for L in r.choice(list(LETTERS), n):
            out.append({"duration": 4.0, "data_source": "synthetic/multiple_choice", "video": f"v/ans_{L}.mp4",
                        "text": f"Words: {_words(r)}. {ASK if ask else ''}Which letter is right?",
                        "solution": str(L)})
        return out

    rng = np.random.default_rng(5)
    sft = []
    for x in recs(1024, 11) + recs(512, 12, ask=True):
        if ASK in x["text"] or rng.random() < 0.3:
            sft.append({**x, "solution": [TOOL_CALL, ANSWER_FMT.format(think="ok", letter=x["solution"])],
                        "observation": x["solution"], "answer": x["solution"]})
        else:
            sft.append({**x, "solution": ANSWER_FMT.format(think="ok", letter=rng.choice(list(LETTERS))),
                        "use_tool": True})
    _write(root / "tool_sft.jsonl", sft)
    _write(root / "tool_rl.jsonl", recs(256, 13))
    _write(root / "tool_eval.jsonl", recs(64, 14))
    _write(root / "ask_eval.jsonl", recs(64, 15, ask=True))
    ps = templates.prompt_set("compact")
    corpus = ([ps.system_text(True)] * 20 + [TOOL_CALL] * 20
              + [ps.user_text(x["text"], duration=4.0, use_tool=True) for x in recs(200, 9) + recs(50, 8, ask=True)]
              + [ANSWER_FMT.format(think="ok", letter=L) for L in LETTERS] * 20)
    _init_model(root, corpus)
    return root


@pytest.fixture(scope="module")
def tool_sft(tmp_path_factory):
    root = make_tool_world(tmp_path_factory.mktemp("tool"))
    return root, _sft(root, "tool", TOOL_SFT_STEPS, 192, *TOOL_ARGS)


TOOL_SFT_STEPS = 800
TOOL_RL_STEPS = 12
TOOL_RL = ("rl.optim.learning_rate=5e-4", "rl.use_tools=true", "rl.max_turns=2", *TOOL_ARGS)


def test_sft_fits_a_multi_turn_tool_corpus(tool_sft, tmp_path, lookup_tool):
    """SFT on Tool-CoT rows with a text observation: on held-out "Ask the tool." prompts the SFT
    model's greedy episodes call the tool in the trained format and answer with what it returned."""
    root, sft = tool_sft
    losses = [v for _, v in sft["curves"]["loss"]]
    res = _rl(root, sft["final"], "tool", tmp_path / "ask", "grpo", 0, 192, *TOOL_RL, "rl.eval_every=1",
              "data.eval_file=ask_eval.jsonl")
    print(f"tool SFT: loss {losses[0]:.3f} -> {np.mean(losses[-20:]):.3f}; held-out (asked): "
          f"tool calls {_heldout(res, 'tool_call_rate')[0]:.3f}, accuracy {_heldout(res)[0]:.3f}")
    assert _heldout(res, "tool_call_rate")[0] == 1.0
    assert _heldout(res)[0] >= 0.9


@pytest.mark.parametrize("flip", [False, True], ids=["learns", "flipped"])
def test_rl_learns_to_call_the_tool(tool_sft, tmp_path, lookup_tool, monkeypatch, flip):
    """From the SFT policy that answers plain prompts without the tool, RL's reward alone (the
    right letter; no tool bonus) must make it call the tool and copy the answer on held-out
    prompts; with the advantages negated, it must not."""
    root, sft = tool_sft
    if flip:
        adv_mod = importlib.import_module("vital_jax.rl.advantages")
        real = adv_mod.advantages
        monkeypatch.setattr(adv_mod, "advantages", lambda *a, **k: -np.asarray(real(*a, **k)))
    res = _rl(root, sft["final"], "tool", tmp_path / "rl", "grpo", TOOL_RL_STEPS, 192, *TOOL_RL)
    c0, c1 = _heldout(res, "tool_call_rate")
    a0, a1 = _heldout(res)
    r0, r1 = _heldout(res, "reward")
    print(f"tool RL{' (flipped)' if flip else ''}: held-out tool calls {c0:.3f} -> {c1:.3f}, "
          f"accuracy {a0:.3f} -> {a1:.3f}, reward {r0:.3f} -> {r1:.3f}")
    assert c0 <= 0.1 and a0 <= 0.4, "the SFT policy answers plain prompts without the tool"
    if flip:
        assert c1 <= c0 + 0.1 and r1 <= r0 + 0.1
    else:
        assert c1 >= 0.9 and a1 >= 0.8 and r1 >= r0 + 0.4
