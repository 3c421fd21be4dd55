"""The README's Python example runs as written (docs that rot are worse than none)."""

import re
from pathlib import Path


def test_readme_python_example_runs(tmp_path, monkeypatch):
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks, "README has no python example"
    monkeypatch.chdir(tmp_path)
    spaces = []
    for code in blocks:
        code = code.replace('"/tmp/tiny_hf"', repr(str(tmp_path / "tiny_hf")))
        spaces.append({})
        exec(compile(code, "README.md", "exec"), spaces[-1])
    assert spaces[0]["logits"].shape == (1, 19, 320)
    assert (tmp_path / "tiny_hf" / "config.json").is_file()
