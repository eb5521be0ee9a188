import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

import meshfl
from meshfl import agents
from meshfl.agents import registry
from meshfl.config.errors import AgentNotBuiltError, ConfigError, MeshflError, UnknownAgentError


@pytest.fixture
def isolated_registry(monkeypatch):
    """Whatever a test registers or installs is gone afterwards."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_discovered", None)
    return registry


def install_entry_points(site: Path, dist: str, entry_points: dict[str, str], source: str = ""):
    """A distribution ``dist`` on ``site`` (a folder on sys.path), as pip installs it: its
    agent entry points and, when given, the module ``<dist>_agents`` holding ``source``."""
    info = site / f"{dist}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = [f"{name} = {value}" for name, value in entry_points.items()]
    (info / "entry_points.txt").write_text("[meshfl.agents]\n" + "\n".join(lines) + "\n")
    if source:
        (site / f"{dist}_agents.py").write_text(source)


@pytest.fixture
def site(tmp_path, monkeypatch, isolated_registry):
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    for name in [m for m in sys.modules if m.endswith("_agents") and m.startswith("dist")]:
        del sys.modules[name]


def test_all_ten_agents_are_known():
    assert len(agents.names()) == 10
    assert {"threat_intel", "anomaly"} <= set(agents.built())
    assert agents.names()[:3] == ["threat_intel", "collaboration", "federated_learning"]
    assert agents.built() == [n for n in agents.names() if n != "federated_learning"]


def test_meshfl_registers_its_own_agents_through_entry_points():
    own = {
        e.name: e
        for e in metadata.entry_points(group=registry.ENTRY_POINT_GROUP)
        if e.dist is not None and e.dist.name == "meshfl"
    }
    assert set(own) == set(registry.KNOWN_AGENTS) - {registry.COORDINATOR}
    for name, entry in own.items():
        assert entry.module == f"meshfl.agents.{name}"
        assert agents.get(name) is entry.load()
        assert agents.get(name).name == name


def test_listing_agents_imports_none_of_them():
    code = (
        "import json, sys, meshfl\n"
        "meshfl.agents.names(); meshfl.agents.built()\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    imported = set(json.loads(out.stdout))
    assert not imported & {f"meshfl.agents.{name}" for name in agents.built()}
    assert not imported & {"torch", "flwr", "tenseal", "transformers", "opacus"}


def test_unknown_name_lists_valid_names():
    with pytest.raises(UnknownAgentError) as info:
        agents.get("threat_intell")
    assert "threat_intel" in str(info.value) and "compliance" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_known_but_unbuilt_agent_says_so(monkeypatch, isolated_registry):
    entry_points = {n: e for n, e in registry._entry_points().items() if n != "revenue"}
    monkeypatch.setattr(registry, "_entry_points", lambda: entry_points)
    registry._REGISTRY.pop("revenue", None)
    assert "revenue" not in agents.built() and "revenue" in agents.names()
    with pytest.raises(AgentNotBuiltError, match="not built in this release") as info:
        agents.get("revenue")
    assert "reinstall" not in str(info.value)


def test_missing_entry_points_say_how_to_install(monkeypatch, isolated_registry):
    monkeypatch.setattr(registry, "_entry_points", dict)
    registry._REGISTRY.clear()
    with pytest.raises(AgentNotBuiltError, match="pip install -e"):
        agents.get("anomaly")


def test_the_coordinator_is_not_a_trainable_agent():
    with pytest.raises(AgentNotBuiltError, match="meshfl-server"):
        agents.get("federated_learning")
    assert "federated_learning" not in agents.built()


def test_duplicate_registration_raises():
    cls = agents.get("anomaly")

    class Impostor(cls):  # type: ignore[misc, valid-type]
        pass

    with pytest.raises(MeshflError, match="already registered"):
        agents.register(Impostor)
    assert agents.register(cls) is cls  # re-registering the same class is harmless


def test_a_class_cannot_take_the_name_of_an_entry_point_not_loaded_yet(isolated_registry):
    cls = agents.get("revenue")
    registry._REGISTRY.pop("revenue")  # as before anything asked for revenue

    class Impostor(cls):  # type: ignore[misc, valid-type]
        pass

    with pytest.raises(MeshflError, match=r"already registered \(by entry point revenue"):
        agents.register(Impostor)


def test_register_takes_a_new_name_and_lists_it(isolated_registry):
    class Echo(agents.get("anomaly")):  # type: ignore[misc, valid-type]
        name = "echo"

    assert agents.register(Echo) is Echo
    assert agents.get("echo") is Echo
    assert agents.names()[-1] == "echo" and agents.built()[-1] == "echo"


@pytest.mark.parametrize("name", ["", "Echo", "1echo", "echo-agent", "echo.v2", None])
def test_a_name_that_cannot_name_files_and_messages_is_refused(name, isolated_registry):
    class Echo(agents.get("anomaly")):  # type: ignore[misc, valid-type]
        pass

    Echo.name = name
    with pytest.raises(ConfigError, match="lowercase letters"):
        agents.register(Echo)


def test_an_entry_point_agent_is_listed_without_being_imported(site):
    install_entry_points(site, "dist_a", {"lazy": "dist_a_agents:Lazy"}, "raise ImportError\n")
    assert agents.names()[-1] == "lazy" and "lazy" in agents.built()
    assert "dist_a_agents" not in sys.modules
    with pytest.raises(ImportError):
        agents.get("lazy")


def test_two_packages_registering_one_name_raise(site):
    install_entry_points(site, "dist_a", {"twin": "dist_a_agents:Twin"})
    install_entry_points(site, "dist_b", {"twin": "dist_b_agents:Twin"})
    with pytest.raises(MeshflError, match="'twin' is registered twice") as info:
        agents.names()
    assert "dist_a" in str(info.value) and "dist_b" in str(info.value)


def test_a_package_cannot_take_a_built_in_name(site):
    install_entry_points(site, "dist_a", {"anomaly": "dist_a_agents:Anomaly"})
    with pytest.raises(MeshflError, match="'anomaly' is registered twice") as info:
        agents.names()
    assert "of meshfl " in str(info.value) and "of dist_a 1.0" in str(info.value)


AGENT_SOURCE = """
from meshfl.agents.anomaly import Anomaly

class Renamed(Anomaly):
    name = "{name}"

NotAnAgent = 42
"""


def test_an_entry_point_must_name_an_agent_class_of_its_name(site):
    install_entry_points(
        site,
        "dist_a",
        {"other": "dist_a_agents:Renamed", "thing": "dist_a_agents:NotAnAgent"},
        AGENT_SOURCE.format(name="misnamed"),
    )
    with pytest.raises(MeshflError, match="whose name is 'misnamed'"):
        agents.get("other")
    with pytest.raises(MeshflError, match=r"must name a subclass of meshfl\.agents\.Agent"):
        agents.get("thing")


def test_load_lives_in_the_registry():
    assert meshfl.load is registry.load is agents.load
    assert agents.GlobalModel.load is registry.load


def test_version_is_the_installed_one():
    assert meshfl.__version__ == metadata.version("meshfl")
