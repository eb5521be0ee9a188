"""An agent from another package: docs/write-your-own-agent.md's example, installed for real.

The package is the one that page shows (its ``pyproject.toml`` and agent module are read from
the page's code blocks), installed as pip would leave it for importlib.metadata: the
package's folder and a ``*.dist-info`` folder with ``METADATA`` and ``entry_points.txt``, on
``sys.path``. meshfl then finds the agent through its entry point like its own agents.
"""

from __future__ import annotations

import importlib.util
import inspect
import re
import sys
from pathlib import Path

import numpy as np
import pytest

import meshfl
from meshfl import agents
from meshfl.agents import registry

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "write-your-own-agent.md"
AGENT = "ticket_escalation"


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", PAGE.read_text(encoding="utf-8"), re.M | re.S)


def install_the_example(site: Path) -> str:
    """Write the page's package into ``site`` as installed; returns its module's name."""
    (pyproject,) = [b for b in code_blocks("toml") if '[project.entry-points."meshfl.agents"]' in b]
    project = tomllib.loads(pyproject)["project"]
    (value,) = project["entry-points"]["meshfl.agents"].values()
    module = value.split(":")[0]
    (source,) = [b for b in code_blocks("python") if b.startswith(f"# {module.replace('.', '/')}")]

    package = site / module.split(".")[0]
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (site / f"{module.replace('.', '/')}.py").write_text(source)

    dist = project["name"].replace("-", "_")
    info = site / f"{dist}-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    entry_points = project["entry-points"]["meshfl.agents"]
    lines = [f"{name} = {ref}" for name, ref in entry_points.items()]
    (info / "entry_points.txt").write_text("[meshfl.agents]\n" + "\n".join(lines) + "\n")
    return module


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """The example installed for this test only (sys.path, registry and imports restored)."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_discovered", None)
    site = tmp_path / "site"
    monkeypatch.syspath_prepend(str(site))
    module = install_the_example(site)
    yield module
    for name in [m for m in sys.modules if m.split(".")[0] == module.split(".")[0]]:
        del sys.modules[name]


def test_the_agent_is_listed_by_its_entry_point_without_being_imported(installed):
    assert agents.names()[:10] == list(registry.KNOWN_AGENTS)  # the ten come first, as ever
    assert agents.names()[-1] == AGENT and agents.built()[-1] == AGENT
    assert installed not in sys.modules
    cls = agents.get(AGENT)
    assert cls.__module__ == installed and cls.name == AGENT


@pytest.mark.filterwarnings("ignore:Secure aggregation is OFF")
def test_it_simulates_saves_and_loads(installed, tmp_path):
    result = meshfl.simulate(
        agent=AGENT, num_msps=3, rounds=1, secure_aggregation="plaintext", progress=False
    )
    assert list(result.history["round"]) == [1]
    assert result.history["msps"].iloc[0] == 3
    assert 0.0 <= result.history["accuracy"].iloc[0] <= 1.0
    assert type(result.model).__name__ == "EscalationModel"

    path = result.model.save(tmp_path / "escalation")
    loaded = meshfl.load(path)
    assert type(loaded) is type(result.model)
    np.testing.assert_array_equal(loaded.vector, result.model.vector)
    test_rows = result.partitions[0].test
    np.testing.assert_array_equal(loaded.predict(test_rows), result.model.predict(test_rows))


def _contract():
    spec = importlib.util.spec_from_file_location(
        "meshfl_agent_contract", Path(__file__).with_name("test_contract.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CONTRACT = _contract()
CHECKS = [name for name, f in vars(CONTRACT).items() if name.startswith("test_") and callable(f)]


@pytest.mark.parametrize("check", CHECKS)
def test_it_passes_the_agent_contract(check, installed, tmp_path):
    """Every check of tests/agents/test_contract.py, on the outside agent."""
    cls = agents.get(AGENT)
    function = getattr(CONTRACT, check)
    given = {"agent": cls(cls.fast_config), "tmp_path": tmp_path}
    function(**{p: given[p] for p in inspect.signature(function).parameters})
