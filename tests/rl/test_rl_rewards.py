"""Rewards: a table of tricky responses per source (including the reward hacks) with expected scores."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vital_jax import rl
from vital_jax.rl.rewards import parse_choice, parse_span
from vital_jax.rl.text_metrics import rouge_mean, rouge_scores, word_error_rate

T = "<think>reasoning</think>"
CALL = '<tool_call>{"name": "get_video_clip_frame", "arguments": {"start_time": 1.0, "end_time": 5.0}}</tool_call>'
FF = (0.75 + 2 / 3 + 0.75) / 3  # "the door opens 0 - 10" vs "the door opens": R1 .75, R2 2/3, RL .75

# (id, data_source, response, solution, kwargs, expected subset)
TABLE = [
    # temporal grounding, (a, b) = (0.2, 0.8)
    ("charades_exact", "charades", T + "<answer>2.0 - 8.0</answer>", [2, 8], {}, dict(format=1, iou_raw=1, iou=1, total=2)),
    ("mtvr_path_tool_capped", "./data/charades_cutreward", T + CALL + T + "<answer>The event happens from 2 to 5 seconds.</answer>",
     [2, 8], dict(num_tool_calls=3), dict(format=1, tool=1.0, iou_raw=0.5, iou=0.5, total=2.5)),
    ("activitynet_below_floor", "activitynet", T + "<answer>0 - 1</answer>", [0, 10], {}, dict(iou_raw=0.1, iou=0, total=1)),
    ("grounding_no_numbers", "charades", T + "<answer>I do not know</answer>", [2, 8], {}, dict(iou=0, total=1)),
    ("grounding_last_valid_pair", "charades", T + "<answer>maybe 1 to 3,\nno: 4 to 6; 9 to 2</answer>", (4, 6), {}, dict(iou=1)),
    ("grounding_solution_string", "charades", T + "<answer>4 - 6</answer>", "[4.0, 6.0]", {}, dict(iou=1)),
    ("grounding_solution_dict", "charades", T + "<answer>4 - 6</answer>", {"span": [4, 6]}, {}, dict(iou=1)),
    ("vidchapters_clock_times", "vidchapters", T + "<answer>0:10 - 0:20</answer>", [10, 30], {}, dict(iou_raw=0.5, iou=1.0)),
    ("vidchapters_half", "vidchapters", T + "<answer>10 - 15</answer>", [10, 30], {}, dict(iou_raw=0.25, iou=0.5)),
    ("iou_scale_override", "charades", T + "<answer>10 - 15</answer>", [10, 30], dict(iou_scale=(0.0, 0.5)), dict(iou=0.5)),
    # multiple choice
    ("mc_letter", "multiple_choice", T + "<answer>B</answer>", "B", {}, dict(accuracy=1, format=1, total=2)),
    ("mc_sentence", "video_r1/multiple_choice", T + "<answer>The answer is C.</answer>", "(C) a dog", {}, dict(accuracy=1)),
    ("mc_option_text_mentions_letters", "mcq", T + "<answer>D. Both A and C</answer>", "D", {}, dict(accuracy=1, hack=0)),
    ("mc_marker_with_text", "multiple_choice", T + "<answer>(B) the man opens the door</answer>", {"answer": "B"}, {}, dict(accuracy=1)),
    ("mc_wrong", "multiple_choice", T + "<answer>A</answer>", "B", {}, dict(accuracy=0, total=1)),
    ("mc_pronoun_not_a_choice", "multiple_choice", T + "<answer>I think it is B</answer>", "B", {}, dict(accuracy=1, hack=0)),
    # hacks: total 0, every component 0
    ("hack_every_option", "multiple_choice", T + "<answer>A, B, C, D</answer>", "B", {}, dict(hack=1, total=0, accuracy=0, format=0)),
    ("hack_two_options", "multiple_choice", T + "<answer>A or B</answer>", "B", {}, dict(hack=1, total=0)),
    ("hack_options_spaced", "multiple_choice", T + "<answer>A B C D</answer>", "B", {}, dict(hack=1, total=0, format=0)),
    ("hack_options_newlines", "multiple_choice", T + "<answer>B\nC</answer>", "B", {}, dict(hack=1, total=0)),
    ("mc_article_a_not_a_choice", "multiple_choice", T + "<answer>A man opens it, so B</answer>", "B", {}, dict(accuracy=1, hack=0)),
    ("hack_options_with_text", "multiple_choice", T + "<answer>A) cat B) dog C) fish D) bird</answer>", "B", {}, dict(hack=1, total=0)),
    ("hack_empty_answer", "multiple_choice", T + CALL + T + "<answer>  </answer>", "B", dict(num_tool_calls=2), dict(hack=1, total=0, tool=0)),
    ("hack_two_answer_blocks", "multiple_choice", T + "<answer>B</answer><answer>B</answer>", "B", {}, dict(hack=1, total=0)),
    ("hack_tool_after_answer", "multiple_choice", T + "<answer>B</answer>" + CALL, "B", dict(num_tool_calls=1), dict(hack=1, total=0, tool=0)),
    ("hack_no_answer_tool_spam", "charades", T + CALL + T + CALL, [2, 8], dict(num_tool_calls=2), dict(hack=1, total=0, tool=0, iou=0)),
    ("hack_unclosed_answer", "multiple_choice", T + "<answer>B", "B", {}, dict(hack=1, total=0)),
    # format rule
    ("format_text_before", "multiple_choice", "Sure! " + T + "<answer>B</answer>", "B", {}, dict(format=0, accuracy=1, total=1)),
    ("format_text_after", "multiple_choice", T + "<answer>B</answer> Hope this helps", "B", {}, dict(format=0, total=1)),
    ("format_no_think", "multiple_choice", "<answer>B</answer>", "B", {}, dict(format=0)),
    ("format_repeated_tag", "multiple_choice", "<think>a</think><think>b</think><answer>B</answer>", "B", {}, dict(format=0)),
    ("format_unknown_tag", "multiple_choice", "<think>a</think><foo>x</foo><answer>B</answer>", "B", {}, dict(format=0)),
    ("format_text_between", "multiple_choice", "<think>a</think> so <answer>B</answer>", "B", {}, dict(format=0)),
    ("format_nested", "multiple_choice", "<think>a <tool_call>x</tool_call></think><answer>B</answer>", "B", {}, dict(format=0)),
    ("format_whitespace_ok", "multiple_choice", "\n<think>a</think>\n\n" + CALL + "\n<think>b</think>\n<answer>B</answer>\n", "B",
     dict(num_tool_calls=1), dict(format=1, tool=0.5, accuracy=1, total=2.5)),
    ("multi_turn_list", "multiple_choice", ["<think>a</think>" + CALL, "<think>b</think><answer>B</answer>"], "B",
     dict(num_tool_calls=1), dict(format=1, tool=0.5, accuracy=1, total=2.5)),
    ("tool_bonus_options", "multiple_choice", T + "<answer>B</answer>", "B", dict(num_tool_calls=5, tool_bonus=0.25, max_tool_calls=3), dict(tool=0.75)),
    # numerical: 1 at one decimal, 0.5 at integer rounding
    ("num_one_decimal", "numerical", T + "<answer>3.14</answer>", "3.1", {}, dict(accuracy=1)),
    ("num_integer_only", "numeric", T + "<answer>about 3.4 meters</answer>", "3.1", {}, dict(accuracy=0.5)),
    ("num_wrong", "numerical", T + "<answer>4</answer>", "3.1", {}, dict(accuracy=0)),
    ("num_thousands", "numerical", T + "<answer>1,000</answer>", "1000", {}, dict(accuracy=1)),
    ("num_no_number", "numerical", T + "<answer>many</answer>", "7", {}, dict(accuracy=0)),
    # regression: 1 - relative error
    ("reg_close", "regression", T + "<answer>8</answer>", "10", {}, dict(accuracy=0.8)),
    ("reg_far", "regression", T + "<answer>25</answer>", "10", {}, dict(accuracy=0)),
    ("reg_zero_gold", "regression", T + "<answer>0</answer>", "0", {}, dict(accuracy=1)),
    # OCR: 1 - WER
    ("ocr_exact", "video_r1/OCR", T + "<answer>hello world</answer>", "hello world", {}, dict(accuracy=1)),
    ("ocr_insertion", "ocr", T + "<answer>hello there world</answer>", "hello world", {}, dict(accuracy=0.5)),
    ("ocr_garbage", "ocr", T + "<answer>a b c d e</answer>", "hello world", {}, dict(accuracy=0)),
    # free-form: mean of ROUGE-1/2/L F1
    ("free_form", "free_form", T + "<answer>a red car</answer>", "the red car", {}, dict(accuracy=(2 / 3 + 1 / 2 + 2 / 3) / 3)),
    ("free_form_exact_case_punct", "video_r1/free_form", T + "<answer>The Red car!</answer>", "the red car", {}, dict(accuracy=1)),
    # grounded QA: IoU AND accuracy (VITAL's code drops accuracy; we do not)
    ("nextgqa_both", "nextgqa", T + "<answer>(B) the dog, 3 - 6</answer>", {"answer": "B", "span": [3, 7]}, {},
     dict(accuracy=1, iou_raw=0.75, iou=(0.75 - 0.2) / 0.6, total=2 + (0.75 - 0.2) / 0.6)),
    ("nextgqa_hedged", "nextgqa", T + "<answer>A or B, 3 - 6</answer>", {"answer": "B", "span": [3, 7]}, {}, dict(hack=1, total=0)),
    ("nextgqa_one_string_solution", "./data/nextgqa", T + "<answer>B, 3 - 7</answer>", "B (3, 7)", {}, dict(accuracy=1, iou=1)),
    ("rextime_letter", "rextime", T + "<answer>C. at 0 - 10 seconds</answer>", {"answer": "C", "span": [0, 10]}, {}, dict(accuracy=1, iou=1, total=3)),
    ("rextime_free_text", "rextime", T + "<answer>the door opens 0 - 10</answer>", {"answer": "the door opens", "span": [0, 10]}, {},
     dict(accuracy=FF, iou=1)),
    ("problem_type_override", "./data/gqa", T + "<answer>B, 3 - 7</answer>", {"answer": "B", "span": [3, 7]}, dict(problem_type="nextgqa"),
     dict(accuracy=1, iou=1)),
]


@pytest.mark.parametrize("case", TABLE, ids=[c[0] for c in TABLE])
def test_reward_table(case):
    _, source, response, solution, kwargs, expected = case
    out = rl.reward(source, response, solution, **kwargs)
    assert all(isinstance(v, float) for v in out.values()), out
    for key, value in expected.items():
        assert out[key] == pytest.approx(value, abs=1e-9), (key, out)
    assert {"total", "format", "tool", "hack"} <= set(out) and ({"accuracy", "iou"} & set(out))
    parts = out["format"] + out["tool"] + out.get("accuracy", 0.0) + out.get("iou", 0.0)
    assert out["total"] == pytest.approx(parts)
    if out["hack"]:
        assert all(v == 0.0 for k, v in out.items() if k != "hack")
    json.dumps(out)  # loggable as is


def test_components_present_per_family():
    assert set(rl.reward("charades", T + "<answer>1 - 2</answer>", [1, 2])) == {"total", "format", "tool", "iou", "iou_raw", "hack"}
    assert set(rl.reward("ocr", T + "<answer>x</answer>", "x")) == {"total", "format", "tool", "accuracy", "hack"}
    assert {"accuracy", "iou"} <= set(rl.reward("nextgqa", T + "<answer>A 1 - 2</answer>", {"answer": "A", "span": [1, 2]}))


@pytest.mark.parametrize(
    "source, family",
    [("./data/charades_cutreward", "charades"), ("data/activitynet", "activitynet"), ("ActivityNet-Captions", "activitynet"),
     ("./data/vidchapters_cutreward", "vidchapters"), ("next_gqa", "nextgqa"), ("video_r1/OCR", "ocr"),
     ("video_r1/numerical", "numerical"), ("video_r1/free-form", "free_form"), ("rextime", "rextime")],
)
def test_source_names(source, family):
    assert rl.source_spec(source).name == family


def test_reward_errors_name_the_problem():
    with pytest.raises(KeyError, match="known families: charades, activitynet"):
        rl.reward("./data/kinetics", T + "<answer>A</answer>", "A")
    with pytest.raises(ValueError, match="span"):
        rl.reward("charades", T + "<answer>1 - 2</answer>", {"answer": "x"})
    with pytest.raises(ValueError, match="'answer'"):
        rl.reward("multiple_choice", T + "<answer>A</answer>", {"letter": "A"})
    with pytest.raises(ValueError, match="num_tool_calls"):
        rl.reward("multiple_choice", T + "<answer>A</answer>", "A", num_tool_calls=-1)
    with pytest.raises(ValueError, match="not a grounding source"):
        rl.reward("multiple_choice", T + "<answer>A</answer>", "A", iou_scale=(0.2, 0.8))
    with pytest.raises(ValueError, match="b > a"):
        rl.reward("charades", T + "<answer>1 - 2</answer>", [1, 2], iou_scale=(0.5, 0.5))
    with pytest.raises(TypeError, match="unexpected keyword"):
        rl.reward("multiple_choice", T + "<answer>A</answer>", "A", tool_bonsu=1.0)


def test_parsers():
    assert parse_span("from 00:01:05 to 00:01:10.5") == (65.0, 70.5)
    assert parse_span("nothing here") is None
    assert parse_span("only 3") is None
    assert parse_choice("A, B, C, D") == (None, True)
    assert parse_choice("Answer: D") == ("D", False)
    assert parse_choice("B. A man walks in") == ("B", False)


def test_text_metrics_known_values():
    got = rouge_scores("the cat sat on the mat", "the cat sat on the mat")
    assert got == {"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0}
    assert rouge_scores("the cat", "a dog")["rouge1"] == 0.0
    # clipped counts: "the the the" vs "the cat": overlap 1, P = 1/3, R = 1/2 -> F = 0.4
    assert rouge_scores("the cat", "the the the")["rouge1"] == pytest.approx(0.4)
    assert rouge_scores("a b c d e", "a x c y e")["rougeL"] == pytest.approx(0.6)
    # stemmed, as VITAL's reward: "running dogs" matches "the dog runs" on both stems
    assert rouge_scores("the dog runs", "running dogs")["rouge1"] == pytest.approx(0.8)
    assert rouge_mean("", "something") == 0.0
    assert word_error_rate("a b c", "a c") == pytest.approx(1 / 3)
    assert word_error_rate("a b", "x y z w") == pytest.approx(2.0)  # >1 before the reward clamps it


@settings(max_examples=30, deadline=None)
@given(st.lists(st.sampled_from("the a red car man dog opens door 3 10".split()), min_size=1, max_size=12),
       st.lists(st.sampled_from("the a red car man dog opens door 3 10".split()), min_size=1, max_size=12))
def test_rouge_properties(ref, pred):
    r, p = " ".join(ref), " ".join(pred)
    got = rouge_scores(r, p)
    assert all(0.0 <= v <= 1.0 for v in got.values())
    assert got["rouge1"] == pytest.approx(rouge_scores(p, r)["rouge1"])  # F1 is symmetric
    assert got["rougeL"] <= got["rouge1"] + 1e-12  # an LCS is a subset of the unigram overlap
    assert rouge_mean(r, r) == pytest.approx(1.0 if len(ref) > 1 else 2 / 3)  # one word: no bigrams
