"""Every ```python block of README.md runs as it is, each in a fresh interpreter.

A line ``#> text`` under a ``print`` is the output the README promises; the test finds it
in what the block printed, numbers within ±0.02 (another CPU may round a float32
differently, not change what the README says).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def readme_blocks() -> list[tuple[int, str]]:
    text = README.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in BLOCK.finditer(text)]


def promised_lines(code: str) -> list[str]:
    return [line[3:].strip() for line in code.splitlines() if line.startswith("#> ")]


def matches(promise: str, line: str, tolerance: float = 0.02) -> bool:
    """``line`` says ``promise``: the same words, numbers within ``tolerance``."""
    if NUMBER.sub("#", promise) != NUMBER.sub("#", line.strip()):
        return False
    pairs = zip(NUMBER.findall(promise), NUMBER.findall(line), strict=True)
    return all(abs(float(a) - float(b)) <= tolerance for a, b in pairs)


def test_promised_output_is_compared_by_words_and_numbers():
    promise = "accuracy: federated 0.760, local-only mean 0.552"
    assert matches(promise, "accuracy: federated 0.771, local-only mean 0.540")
    assert not matches(promise, "accuracy: federated 0.860, local-only mean 0.552")
    assert not matches(promise, "auc: federated 0.760, local-only mean 0.552")


def test_readme_has_python_blocks():
    assert len(readme_blocks()) >= 2


@pytest.mark.integration
@pytest.mark.parametrize(
    ("line", "code"), readme_blocks(), ids=[f"line-{n}" for n, _ in readme_blocks()]
)
def test_readme_block_runs(line: int, code: str, tmp_path: Path, run_python) -> None:
    script = tmp_path / f"readme_line_{line}.py"
    script.write_text(code, encoding="utf-8")
    out = run_python(script.name, timeout=240).stdout
    for promise in promised_lines(code):
        assert any(matches(promise, printed) for printed in out.splitlines()), (
            f"README line {line} promises {promise!r}; the block printed:\n{out}"
        )
