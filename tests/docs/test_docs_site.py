"""The docs site builds with ``mkdocs build --strict`` (no broken link, no docstring the API
reference cannot read), and its agent schemas page is generated from the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import meshfl

pytest.importorskip("mkdocs", reason="the docs extra: pip install -e '.[docs]'")
pytest.importorskip("mkdocstrings")

ROOT = Path(__file__).resolve().parents[2]


def _text(html: str) -> str:
    return re.sub(r"<[^>]+>", "", html)


@pytest.mark.integration
def test_docs_site_builds_strictly(tmp_path: Path, run_python) -> None:
    site = tmp_path / "site"
    run_python(
        "-m",
        "mkdocs",
        "build",
        "--strict",
        "-f",
        str(ROOT / "mkdocs.yml"),
        "-d",
        str(site),
        timeout=300,
    )
    schemas = _text((site / "reference" / "agent-schemas" / "index.html").read_text())
    for name in meshfl.agents.built():
        agent = meshfl.agents.get(name)
        assert f"Config: {agent.config_class.__name__}" in schemas
        for column in agent.schema.columns:
            assert column.name in schemas, f"{name}'s column {column.name} is not on the page"
    api = _text((site / "reference" / "api" / "index.html").read_text())
    assert "num_msps" in api and "SimulationResult" in api and "GlobalModel" in api
