"""JSON Lines files that runs append to and read back (metrics, predictions, rollouts, records).

One reader and one repair for every such file. Appended files are written a line at a time and
flushed, so a crash can only leave the *last* line cut short: :func:`cut_partial_line` drops it
before appending again (else the next record would be glued onto it), and :func:`parse_lines`
marks it ``partial`` so readers can skip it while still failing on a bad line anywhere else.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any


@dataclasses.dataclass(frozen=True)
class BadLine:
    """A line that is not JSON: its 1-based number, the decoder's message, and whether it is the
    file's last line without a newline (a write cut short)."""

    lineno: int
    error: str
    partial: bool = False


def parse_lines(text: str) -> list[tuple[int, Any]]:
    """``(lineno, value or BadLine)`` for every non-blank line of ``text``."""
    lines = text.splitlines()
    out = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append((lineno, json.loads(line)))
        except json.JSONDecodeError as e:
            out.append((lineno, BadLine(lineno, str(e), partial=lineno == len(lines) and not text.endswith("\n"))))
    return out


def cut_partial_line(path: str | os.PathLike) -> None:
    """Truncate ``path`` back to its last complete line (no-op for a missing or clean file)."""
    if not os.path.exists(path):
        return
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        pos, chunk = size, 4096
        while pos > 0:
            start = max(0, pos - chunk)
            f.seek(start)
            block = f.read(pos - start)
            nl = block.rfind(b"\n")
            if nl >= 0:
                f.truncate(start + nl + 1)
                return
            pos = start
        f.truncate(0)
