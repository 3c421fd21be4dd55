"""Each loader on a small hand-written annotation file in its benchmark's public layout."""

import json

import pytest

from vital_jax.data.records import DataFileError
from vital_jax.eval.benchmarks import BENCHMARKS, AnnotationLayoutError, load_benchmark


def write(tmp_path, name, obj):
    p = tmp_path / name
    if isinstance(obj, str):
        p.write_text(obj)
    elif name.endswith(".jsonl"):
        p.write_text("".join(json.dumps(r) + "\n" for r in obj))
    else:
        p.write_text(json.dumps(obj))
    return p


def test_registry_lists_every_benchmark():
    assert set(BENCHMARKS) == {
        "charades_sta", "activitynet", "vidchapters", "rextime", "vue_tr", "nextgqa", "videomme", "mvbench",
        "longvideobench", "videommmu", "mmvu", "vsibench", "longvideo_reason", "synthetic"}
    assert {n for n, b in BENCHMARKS.items() if b.metric_set == "grounding"} == {
        "charades_sta", "activitynet", "vidchapters", "rextime", "vue_tr"}


def test_charades_sta_txt(tmp_path):
    p = write(tmp_path, "charades_sta_test.txt",
              "3MSZA 24.3 30.4##person turn a light on.\n3MSZA 30.4 24.3##person opens the door.\n\n")
    s = load_benchmark("charades_sta", p)
    assert [x.id for x in s] == ["0", "1"]
    assert s[0].video == "3MSZA" and s[0].intervals == ((24.3, 30.4),) and s[0].question == "person turn a light on."
    assert s[1].intervals == ((24.3, 30.4),)  # annotation order normalised
    assert s[0].task == "grounding" and s[0].duration is None


def test_activitynet_captions_dict_and_grounding_list(tmp_path):
    p = write(tmp_path, "val_2.json", {"v_QOlSCBRmfWY": {"duration": 82.73, "timestamps": [[0.83, 19.86], [17.37, 60.81]],
                                                         "sentences": ["A young woman is seen.", " She then dances."]}})
    s = load_benchmark("activitynet", p)
    assert [x.id for x in s] == ["v_QOlSCBRmfWY_0", "v_QOlSCBRmfWY_1"]
    assert s[1].question == "She then dances." and s[1].duration == 82.73 and s[1].interval == (17.37, 60.81)
    p2 = write(tmp_path, "list.jsonl", [{"video": "a.mp4", "duration": 30, "query": "x", "timestamp": [1, 2]}])
    assert load_benchmark("charades_sta", p2)[0].interval == (1.0, 2.0)


def test_vidchapters_chapters(tmp_path):
    p = write(tmp_path, "chapters_test.json", {"abc": {"duration": 100.0, "chapters": [
        {"label": "Intro", "time": 0}, {"label": "Recipe", "time": 12.5}, {"label": "Tasting", "time": 80}]}})
    s = load_benchmark("vidchapters", p)
    assert [x.interval for x in s] == [(0.0, 12.5), (12.5, 80.0), (80.0, 100.0)]
    assert [x.question for x in s] == ["Intro", "Recipe", "Tasting"]


def test_rextime(tmp_path):
    p = write(tmp_path, "rextime_val.json", [{
        "qid": "qvh_val241", "vid": "2I9-kvemtSU_510.0_660.0", "duration": 150, "question": "What before?",
        "answer": "From <s0> to <e0>, <option>.", "source": "qvhighlights_val", "category": "sequential",
        "options": ["eat", "run", "tour", "sing"], "span": [0, 28], "ans": "A"}])
    (s,) = load_benchmark("rextime", p)
    assert (s.id, s.task, s.answer, s.interval, s.category, s.duration) == (
        "qvh_val241", "grounded_qa", "A", (0.0, 28.0), "sequential", 150.0)
    assert s.groups == {"source": "qvhighlights_val"}


def test_vue_tr(tmp_path):
    p = write(tmp_path, "vue_tr_gt.json", [{"query_id": 0, "video_id": "coPfnSFOXj0", "duration": 32.625,
                                           "query": "storyboards to animation", "answer": [[0.0, 10.0], [20.0, 32.3]],
                                           "task": "temporal_retrieval"}])
    (s,) = load_benchmark("vue_tr", p)
    assert s.intervals == ((0.0, 10.0), (20.0, 32.3)) and s.id == "0"
    assert BENCHMARKS["vue_tr"].multi_gt == "union"


def test_nextgqa_csv_with_gsub(tmp_path):
    (tmp_path / "val.csv").write_text(
        "video_id,frame_count,width,height,question,answer,qid,type,a0,a1,a2,a3,a4\n"
        "4010069381,1224,640,480,why did the man wave,greet friend,1,CW,dance,greet friend,run,eat,sleep\n"
        "4010069381,1224,640,480,what did the boy do after,run,3,TN,dance,sit,run,eat,sleep\n"
        "4010069381,1224,640,480,ungrounded question,eat,5,CH,dance,sit,run,eat,sleep\n")
    write(tmp_path, "gsub_val.json", {"4010069381": {"duration": 40.8, "fps": 30,
                                                    "location": {"1": [[1.2, 5.8]], "3": [[12.1, 17.1], [20.0, 23.5]]}}})
    s = load_benchmark("nextgqa", tmp_path / "val.csv")
    assert [x.id for x in s] == ["4010069381_1", "4010069381_3"]  # only grounded QAs
    assert s[0].answer == "B" and s[1].answer == "C" and s[0].options[1] == "greet friend"
    assert s[1].intervals == ((12.1, 17.1), (20.0, 23.5)) and s[1].category == "TN" and s[0].duration == 40.8
    (tmp_path / "lonely").mkdir()
    (tmp_path / "lonely" / "val.csv").write_text((tmp_path / "val.csv").read_text())
    with pytest.raises(DataFileError, match="gsub_val.json"):
        load_benchmark("nextgqa", tmp_path / "lonely" / "val.csv")


def test_videomme_flat_and_nested(tmp_path):
    q = {"question_id": "001-1", "task_type": "Counting Problem", "question": "How many?",
         "options": ["A. 1", "B. 2", "C. 3", "D. 4"], "answer": "C"}
    vid = {"video_id": "001", "duration": "short", "domain": "Knowledge", "sub_category": "Humanity", "videoID": "fFjv93ACGo8"}
    flat = load_benchmark("videomme", write(tmp_path, "flat.json", [{**vid, **q}]))
    nested = load_benchmark("videomme", write(tmp_path, "nested.json", [{**vid, "questions": [q]}]))
    assert flat == nested
    (s,) = flat
    assert (s.id, s.video, s.answer, s.category, s.groups["duration"]) == ("001-1", "fFjv93ACGo8", "C", "Counting Problem", "short")
    with pytest.raises(DataFileError, match="parquet"):
        load_benchmark("videomme", write(tmp_path, "test-00000-of-00001.parquet", "PAR1"))


def test_mvbench_per_task_file_and_combined(tmp_path):
    rows = [{"video": "166583.webm", "question": "What is the action?", "candidates": ["jump", "sit", "run"], "answer": "sit"}]
    s = load_benchmark("mvbench", write(tmp_path, "action_sequence.json", rows))
    assert s[0].answer == "B" and s[0].category == "action_sequence" and s[0].options == ("jump", "sit", "run")
    s2 = load_benchmark("mvbench", write(tmp_path, "all.json", {"object_shuffle": rows}))
    assert s2[0].category == "object_shuffle" and s2[0].answer == "B"


def test_longvideobench(tmp_path):
    p = write(tmp_path, "lvb_val.json", [{
        "id": "86CxyhFV9MI_0", "video_id": "86CxyhFV9MI", "question": "What?", "candidates": ["a", "b", "c", "d"],
        "correct_choice": 3, "duration": 475.0, "duration_group": 600, "question_category": "TOS",
        "topic_category": "NP-News-Programs", "video_path": "86CxyhFV9MI.mp4"}])
    (s,) = load_benchmark("longvideobench", p)
    assert (s.answer, s.category, s.duration, s.groups["duration_group"]) == ("D", "TOS", 475.0, "600")


def test_videommmu_mc_and_open(tmp_path):
    p = write(tmp_path, "Adaptation.json", [
        {"id": "validation_Art_Theory_1", "question": "Which?", "options": ["x", "y", "z"], "answer": "B",
         "question_type": "multiple-choice"},
        {"id": "validation_Math_2", "question": "Compute", "options": [], "answer": "12.5", "question_type": "open"}])
    a, b = load_benchmark("videommmu", p)
    assert a.task == "multiple_choice" and a.answer == "B" and a.category == "Adaptation" and a.groups == {"subject": "Art_Theory"}
    assert b.task == "numeric" and b.answer == "12.5"


def test_mmvu(tmp_path):
    p = write(tmp_path, "validation.json", [
        {"id": "mc_1", "video": "https://x/1.mp4", "question": "Q?", "choices": {"A": "one", "B": "two", "C": "three"},
         "answer": "B", "question_type": "multiple-choice", "metadata": {"subject": "Biology", "discipline": "Science"}},
        {"id": "open_1", "video": "v.mp4", "question": "Name it", "choices": {}, "answer": "mitosis",
         "question_type": "open-ended", "metadata": {"subject": "Biology"}}])
    a, b = load_benchmark("mmvu", p)
    assert a.options == ("A. one", "B. two", "C. three") and a.answer == "B" and a.category == "Biology"
    assert b.task == "open" and b.answer == "mitosis"


def test_vsibench(tmp_path):
    p = write(tmp_path, "test.jsonl", [
        {"id": 1, "dataset": "arkitscenes", "scene_name": "41069025", "question_type": "object_counting",
         "question": "How many chairs?", "options": None, "ground_truth": "4"},
        {"id": 2, "dataset": "scannet", "scene_name": "scene0", "question_type": "object_rel_direction_easy",
         "question": "Where?", "options": ["A. left", "B. right"], "ground_truth": "A"}])
    a, b = load_benchmark("vsibench", p)
    assert (a.task, a.answer, a.category) == ("numeric", "4", "object_counting")
    assert (b.task, b.answer) == ("multiple_choice", "A")


def test_longvideo_reason(tmp_path):
    p = write(tmp_path, "test.jsonl", [{
        "problem_id": 7, "videos": "longvila_videos/abc.mp4",
        "problem": "Why does he leave?\nA. hungry\nB. late\nC. bored\nD. tired", "answer": "<answer>B</answer>",
        "problem_type": "multiple choice", "reasoning_type": "Goal"}])
    (s,) = load_benchmark("longvideo_reason", p)
    assert s.options == ("A. hungry", "B. late", "C. bored", "D. tired") and s.answer == "B" and s.category == "Goal"
    assert s.id == "7" and s.video == "longvila_videos/abc.mp4"


def test_mtvr_records_accepted_by_every_loader(tmp_path):
    p = write(tmp_path, "charades_eval.jsonl", [
        {"video": "charades/A.mp4", "duration": 30.0, "problem": "When?", "data_source": "charades", "solution": [1.0, 5.0]}])
    for name in ("charades_sta", "activitynet", "vidchapters", "vue_tr", "synthetic"):
        (s,) = load_benchmark(name, p)
        assert (s.task, s.interval, s.duration, s.data_source, s.id) == ("grounding", (1.0, 5.0), 30.0, "charades", "0")


@pytest.mark.parametrize("name", sorted(set(BENCHMARKS) - {"charades_sta"}))
def test_unknown_layout_names_file_and_expected_fields(tmp_path, name):
    p = write(tmp_path, "weird.json", [{"clip": "x.mp4", "prompt": "hello", "label": 3}])
    with pytest.raises(AnnotationLayoutError) as e:
        load_benchmark(name, p)
    msg = str(e.value)
    assert str(p) in msg and "Expected one of" in msg and "'clip'" in msg and "data_source" in msg


def test_unknown_charades_text_line(tmp_path):
    p = write(tmp_path, "c.txt", "this is not an annotation\n")
    with pytest.raises(AnnotationLayoutError, match="VIDEO_ID START END##sentence"):
        load_benchmark("charades_sta", p)


def test_bad_record_and_bad_names(tmp_path):
    p = write(tmp_path, "lvb.json", [{"question": "q", "candidates": ["a", "b"], "correct_choice": 5}])
    with pytest.raises(ValueError, match=r"record 0: .*out of range"):
        load_benchmark("longvideobench", p)
    with pytest.raises(KeyError, match="unknown benchmark"):
        load_benchmark("nope", p)
    with pytest.raises(DataFileError, match="no such file"):
        load_benchmark("mvbench", tmp_path / "missing.json")
