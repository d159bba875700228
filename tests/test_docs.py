"""Code in the docs runs."""

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.mark.parametrize("page", ["variants.md"])
def test_python_blocks_run(page, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), flags=re.S)
    assert blocks, f"{page} has no python block"
    for block in blocks:
        exec(compile(block, str(DOCS / page), "exec"), {"__name__": "__docs__"})
    assert (tmp_path / "runs" / "student-t" / "best.pt").is_file() and (tmp_path / "runs" / "laplace-z" / "best.pt").is_file()
    vectors, tabular = capsys.readouterr().out.strip().splitlines()
    best_epoch, accuracy = vectors.split()
    assert int(best_epoch) in range(1, 5) and float(accuracy) > 0.6  # 4 mixture components: chance is 0.25
    best_epoch, shape = tabular.split(" ", 1)
    assert int(best_epoch) in (1, 2) and "(120, 32, 16)" in shape
