import json
import shutil

from vital_jax.cli import main


def test_data_check_reports_and_skips(tiny_suite, tmp_path, capsys):
    out, _ = tiny_suite
    root = tmp_path / "root"
    shutil.copytree(out / "videos", root / "videos")
    rows = [json.loads(line) for line in (out / "rl.jsonl").read_text().splitlines()][:4]
    good = rows[0]
    real = good["duration"]
    (root / "videos" / "broken.mp4").write_bytes(b"\x00not a video" * 100)
    rows += [
        {**good, "video": "videos/missing.mp4"},                 # 4: file absent
        {**good, "video": "videos/broken.mp4"},                  # 5: not decodable
        {**good, "video": "../escape.mp4"},                      # 6: escapes the root
        {**good, "duration": real + 40, "solution": [1.0, real + 30]},  # 7: declared vs real duration
        {**good, "data_source": 5},                              # 8: schema
        {**good, "solution": [3.0, real + 5]},                   # 9: interval after the end
    ]
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(rows))
    rc = main(["data", "check", "--data", str(path), "--video-root", str(root)])
    text = capsys.readouterr().out
    assert rc == 0
    assert f"{path}: 10 records, 4 ok, 6 with problems" in text
    for index, field in [(4, "video"), (5, "video"), (6, "video"), (7, "duration"), (8, "data_source"), (9, "solution")]:
        assert f"record {index}: field '{field}'" in text, (index, field, text)
    assert "not decodable" in text and "does not exist" in text and "escapes" in text
    # counts by source cover the good records only
    by_source = {}
    for r in rows[:4]:
        by_source[r["data_source"]] = by_source.get(r["data_source"], 0) + 1
    for source, n in by_source.items():
        assert f"  {source}: {n}" in text


def test_data_check_unreadable_file_fails(tiny_suite, tmp_path, capsys):
    out, _ = tiny_suite
    (tmp_path / "bad.json").write_text("[{")
    rc = main(["data", "check", "--data", str(tmp_path / "bad.json"), str(out / "eval.jsonl"),
               "--video-root", str(out)])
    captured = capsys.readouterr()
    assert rc == 2
    assert "could not be read" in captured.err and "not valid JSON" in captured.err
    assert "eval.jsonl" in captured.out and "0 with problems" in captured.out  # the good file still checked
