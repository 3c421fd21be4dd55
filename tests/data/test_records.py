import json

import pytest

from vital_jax.data.records import (
    DataFileError, RecordError, Solution, load_records, parse_record, read_raw, record_to_json,
    resolve_under, scan_records, write_records,
)

GOOD = [
    {"video": "a/v1.mp4", "duration": 30.0, "text": "When?", "data_source": "charades", "solution": [1.5, 4.0]},
    {"video": "a/v2.mp4", "duration": 12, "text": "Which?", "data_source": "multiple_choice",
     "options": ["A. x", "B. y"], "solution": "B", "video_kwargs": {"max_frames": 8}, "custom": {"k": 1}},
    {"image": "img/1.png", "problem": "What is it?", "data_source": "free-form", "solution": "a cat"},
    {"video": "a/v3.mp4", "duration": 60, "text": "Q?", "data_source": "nextgqa",
     "solution": {"answer": "C", "interval": [10, 20.25]}},
    {"video": "a/v4.mp4", "duration": 60, "text": "Q?", "data_source": "vidchapters",
     "solution": "<think>look</think> <answer>(3.00, 9.00)</answer>"},
    {"video": "a/v5.mp4", "duration": 60, "text": "Q?", "data_source": "longvideo_reason",
     "solution": ["<think>a</think> <tool_call>{}</tool_call>", "<think>b</think> <answer>A</answer>"],
     "tool_params": "(12.34, 20.00)", "answer": "A"},
    # a text tool: the observation is the text it returned, no clip
    {"video": "a/v1.mp4", "duration": 30.0, "text": "Which letter?", "data_source": "mc",
     "solution": ['<think>a</think> <tool_call>{"name": "lookup", "arguments": {}}</tool_call>',
                  "<think>b</think> <answer>B</answer>"],
     "observation": "The letter is B.", "answer": "B"},
]


def test_kinds_and_fields(tmp_path):
    recs = [parse_record(r, root=tmp_path, index=i) for i, r in enumerate(GOOD)]
    assert [r.kind for r in recs] == ["rl", "rl", "rl", "rl", "cot", "tool_cot", "tool_cot"]
    assert recs[0].solution == Solution(interval=(1.5, 4.0))
    assert recs[0].media_path == tmp_path / "a/v1.mp4"
    assert recs[1].options == ("A. x", "B. y") and recs[1].video_kwargs == {"max_frames": 8}
    assert recs[2].media_type == "image" and recs[2].duration is None and recs[2].question == "What is it?"
    assert recs[3].solution == Solution(answer="C", interval=(10.0, 20.25))
    assert recs[4].answer_text == "(3.00, 9.00)"
    assert recs[5].tool.tool_params == (12.34, 20.0) and recs[5].answer_text == "A"
    assert recs[6].tool.tool_params is None and recs[6].tool.observation == "The letter is B."


def test_text_observation_records_render_a_text_tool_turn(tmp_path):
    """A Tool-CoT record with a text observation renders system(+tools), user, assistant(call),
    tool(text, loss 0), assistant(answer); a record with both a clip and a text is refused."""
    from vital_jax.data.sft import tokenize_sft
    from vital_jax.prompt import ChatRenderer, train_small_tokenizer

    rec = parse_record(GOOD[6], root=tmp_path)
    tok = train_small_tokenizer(["The letter is B. Which letter? lookup answer think"], vocab_size=300)
    r = ChatRenderer(tok)
    out = tokenize_sft({"record": rec}, r, None)
    text = tok.decode(out.ids)
    assert "<|im_start|>tool\nThe letter is B.<|im_end|>" in text and "<|vision_start|>" not in text
    masked = tok.decode([i for i, m in zip(out.ids, out.loss_mask) if m])
    assert "The letter is B." not in masked and "<answer>B</answer>" in masked and "lookup" in masked
    with pytest.raises(RecordError, match="observation"):
        parse_record({**GOOD[6], "tool_params": "(1, 2)"}, root=tmp_path)
    with pytest.raises(RecordError, match="observation"):
        parse_record({**GOOD[6], "observation": " "}, root=tmp_path)


def test_cot_record_under_the_tool_prompt(tmp_path):
    """``use_tool: true`` on a CoT record renders the tool prompt (the model learns when not to
    call); it round-trips, must be a bool, and is refused on RL records."""
    from vital_jax.data.sft import tokenize_sft
    from vital_jax.prompt import ChatRenderer, train_small_tokenizer

    tok = train_small_tokenizer(["What is it? think answer"], vocab_size=300)
    r = ChatRenderer(tok)
    raw = GOOD[4]
    plain = parse_record(raw, root=tmp_path)
    tooled = parse_record({**raw, "use_tool": True}, root=tmp_path)
    assert not plain.use_tool and tooled.use_tool and record_to_json(tooled)["use_tool"] is True
    assert parse_record(record_to_json(tooled), root=tmp_path) == tooled
    with_tools = tok.decode(tokenize_sft({"record": tooled}, r, None).ids)
    assert "get_video_clip_frame" in with_tools
    assert "get_video_clip_frame" not in tok.decode(tokenize_sft({"record": plain}, r, None).ids)
    with pytest.raises(RecordError, match="use_tool"):
        parse_record({**raw, "use_tool": "yes"}, root=tmp_path)
    with pytest.raises(RecordError, match="use_tool"):
        parse_record({**GOOD[0], "use_tool": True}, root=tmp_path)


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_round_trip_through_files(tmp_path, suffix):
    recs = [parse_record(r, root=tmp_path, index=i) for i, r in enumerate(GOOD)]
    path = tmp_path / f"out{suffix}"
    write_records(path, recs)
    back = load_records(path, tmp_path)
    assert back == recs
    assert [r.index for r in back] == list(range(len(GOOD)))
    # and the JSON itself is stable: writing what we read gives the same objects
    assert [record_to_json(r) for r in back] == read_raw(path)
    assert read_raw(path)[2]["problem"] == "What is it?"  # original question key kept


def test_round_trip_synthetic_files(tiny_suite):
    out, _ = tiny_suite
    for name in ("sft_tool", "sft_cot", "rl", "eval"):
        path = out / f"{name}.jsonl"
        recs = load_records(path, out)
        assert recs, name
        assert [record_to_json(r) for r in recs] == read_raw(path)


BAD = [
    ({"duration": 3, "text": "q", "data_source": "s", "solution": "A"}, "video"),
    ({"video": "v.mp4", "image": "i.png", "duration": 3, "text": "q", "data_source": "s", "solution": "A"}, "video"),
    ({"video": "v.mp4", "text": "q", "data_source": "s", "solution": "A"}, "duration"),
    ({"video": "v.mp4", "duration": -1, "text": "q", "data_source": "s", "solution": "A"}, "duration"),
    ({"video": "v.mp4", "duration": 3, "data_source": "s", "solution": "A"}, "text"),
    ({"video": "v.mp4", "duration": 3, "text": "  ", "data_source": "s", "solution": "A"}, "text"),
    ({"video": "v.mp4", "duration": 3, "text": "q", "solution": "A"}, "data_source"),
    ({"video": "v.mp4", "duration": 3, "text": "q", "data_source": "s", "options": "A,B", "solution": "A"}, "options"),
    ({"video": "v.mp4", "duration": 3, "text": "q", "data_source": "s"}, "solution"),
    ({"video": "v.mp4", "duration": 3, "text": "q", "data_source": "s", "solution": [2, 1]}, "solution"),
    ({"video": "v.mp4", "duration": 3, "text": "q", "data_source": "s", "solution": [1, 5]}, "solution"),
    ({"video": "v.mp4", "duration": 3, "text": "q", "data_source": "s", "solution": {"when": 1}}, "solution"),
    ({"video": "v.mp4", "duration": 9, "text": "q", "data_source": "s", "solution": ["a", "b"],
      "answer": "A"}, "tool_params"),
    ({"video": "v.mp4", "duration": 9, "text": "q", "data_source": "s", "solution": ["a", "b"],
      "tool_params": "(1, 99)", "answer": "A"}, "tool_params"),
    ({"video": "v.mp4", "duration": 9, "text": "q", "data_source": "s", "solution": ["a", "b"],
      "tool_params": "(1, 2)"}, "answer"),
    ({"video": "v.mp4", "duration": 3, "text": "q", "data_source": "s", "video_kwargs": [1], "solution": "A"}, "video_kwargs"),
    ("not an object", "<record>"),
]


def test_bad_records_report_index_and_field(tmp_path):
    good = GOOD[0]
    rows = []
    expected = {}
    for bad, field in BAD:
        rows.append(good)
        rows.append(bad)
        expected[len(rows) - 1] = field
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps(rows))
    recs, problems = scan_records(path, tmp_path)
    assert len(recs) == len(BAD)
    assert {p.index: p.field for p in problems} == expected
    assert all(p.file == str(path) for p in problems)
    with pytest.raises(RecordError, match=r"mixed.json: record 1: field 'video'") as info:
        load_records(path, tmp_path)
    assert info.value.index == 1 and info.value.field == "video"
    assert len(load_records(path, tmp_path, skip_bad=True)) == len(BAD)


@pytest.mark.parametrize("rel", ["../outside.mp4", "a/../../outside.mp4", "/etc/passwd", "a/./../../../x"])
def test_escaping_paths_rejected(tmp_path, rel):
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(ValueError, match="escapes the media root"):
        resolve_under(root, rel)
    with pytest.raises(RecordError, match="field 'video'.*escapes"):
        parse_record({**GOOD[0], "video": rel}, root=root, index=5, file="f.jsonl")


def test_paths_that_stay_inside_are_fine(tmp_path):
    assert resolve_under(tmp_path, "a/../b/c.mp4") == tmp_path / "b/c.mp4"
    assert resolve_under(tmp_path, str(tmp_path / "x.mp4")) == tmp_path / "x.mp4"


def test_file_formats(tmp_path):
    (tmp_path / "wrapped.json").write_text(json.dumps({"data": GOOD[:2]}))
    assert len(load_records(tmp_path / "wrapped.json", tmp_path)) == 2
    lines = [json.dumps(GOOD[0]), "{not json", "", json.dumps(GOOD[1])]
    (tmp_path / "f.jsonl").write_text("\n".join(lines) + "\n")
    recs, problems = scan_records(tmp_path / "f.jsonl", tmp_path)
    assert [r.index for r in recs] == [0, 2] and [(p.index, p.field) for p in problems] == [(1, "<line>")]
    (tmp_path / "empty.json").write_text("")
    assert load_records(tmp_path / "empty.json", tmp_path) == []
    (tmp_path / "garbage.json").write_text("[{]")
    with pytest.raises(DataFileError, match="not valid JSON"):
        read_raw(tmp_path / "garbage.json")
    with pytest.raises(DataFileError, match="cannot read"):
        read_raw(tmp_path / "missing.json")
    (tmp_path / "scalar.json").write_text("3")
    with pytest.raises(DataFileError):
        read_raw(tmp_path / "scalar.json")
