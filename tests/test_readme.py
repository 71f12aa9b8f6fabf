"""Every ```python block of README.md runs as pasted (issue 15): each in a fresh
interpreter, in an empty folder (they may write files such as piece.mid)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: An HTML comment right before a block that takes minutes (it is then run only with -m slow).
SLOW_MARK = "<!-- readme-test: slow -->"


def python_blocks() -> list[tuple[int, str, bool]]:
    """(line number, code, slow) of every ```python block."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = []
    for m in re.finditer(r"^```python\n(.*?)^```", text, flags=re.S | re.M):
        before = text[:m.start()].rstrip().splitlines()
        blocks.append((text[:m.start()].count("\n") + 1, m.group(1), bool(before) and before[-1].strip() == SLOW_MARK))
    return blocks


BLOCKS = python_blocks()


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("line,code", [pytest.param(line, code, id=f"line{line}",
                                                    marks=[pytest.mark.slow] if slow else [])
                                       for line, code, slow in BLOCKS])
def test_readme_python_block_runs_as_pasted(tmp_path, line, code):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env=env)
    assert out.returncode == 0, f"README.md line {line}:\n{code}\n{out.stderr[-2000:]}"
