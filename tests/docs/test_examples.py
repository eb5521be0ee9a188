"""Every script in examples/ runs, with its quick settings where it has them."""

from __future__ import annotations

from pathlib import Path

import pytest

import meshfl

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SCRIPTS = sorted(EXAMPLES.glob("*.py"))


def quick_args(script: Path) -> list[str]:
    """``--quick`` for the examples whose docstring offers it (small data, few rounds)."""
    return ["--quick"] if "--quick" in script.read_text(encoding="utf-8") else []


def expected(script: Path) -> list[str]:
    """Lines an example must print: one result per agent it promises."""
    if script.stem == "simulate_federation":
        return [f"{agent}: federated" for agent in meshfl.agents.built()]
    if script.stem == "own_data":
        return ["most anomalous rows of MSP 0"]
    return []


def test_there_are_examples():
    assert {p.name for p in SCRIPTS} >= {"simulate_federation.py", "own_data.py"}


@pytest.mark.integration
@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_example_runs(script: Path, run_python) -> None:
    out = run_python(str(script), *quick_args(script), timeout=300).stdout
    assert out.strip(), f"{script.name} printed nothing"
    for text in expected(script):
        assert text in out, f"{script.name} did not print {text!r}:\n{out}"
