"""The one JSON Lines reader/repair (`vital_jax.jsonl`) that metrics, predictions, rollouts and
records share."""

from vital_jax.jsonl import BadLine, cut_partial_line, parse_lines


def test_parse_lines_marks_only_a_cut_last_line_partial():
    rows = parse_lines('{"a": 1}\n\nnot json\n{"b": 2}\n{"c": ')
    assert [n for n, _ in rows] == [1, 3, 4, 5]
    assert rows[0][1] == {"a": 1} and rows[2][1] == {"b": 2}
    bad, cut = rows[1][1], rows[3][1]
    assert isinstance(bad, BadLine) and not bad.partial and bad.lineno == 3
    assert isinstance(cut, BadLine) and cut.partial
    assert not parse_lines('{"c": \n')[0][1].partial      # it has its newline: a bad line, not a cut one


def test_cut_partial_line(tmp_path):
    p = tmp_path / "f.jsonl"
    cut_partial_line(p)                                    # missing: nothing to do
    p.write_text('{"a": 1}\n{"b": 2}\n')
    cut_partial_line(p)
    assert p.read_text() == '{"a": 1}\n{"b": 2}\n'
    p.write_text('{"a": 1}\n' + "x" * 10000)               # longer than one read chunk
    cut_partial_line(p)
    assert p.read_text() == '{"a": 1}\n'
    p.write_text('{"a": ')                                 # the only line, cut
    cut_partial_line(p)
    assert p.read_text() == ""
