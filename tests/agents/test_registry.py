import pytest

from meshfl import agents
from meshfl.config.errors import AgentNotBuiltError, MeshflError, UnknownAgentError


def test_all_ten_agents_are_known():
    assert len(agents.names()) == 10
    assert {"threat_intel", "anomaly"} <= set(agents.built())


def test_unknown_name_lists_valid_names():
    with pytest.raises(UnknownAgentError) as info:
        agents.get("threat_intell")
    assert "threat_intel" in str(info.value) and "compliance" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_known_but_unbuilt_agent_says_so(monkeypatch):
    from meshfl.agents import registry

    assert "revenue" in agents.built()  # loads the built-in agents first
    monkeypatch.delitem(registry._REGISTRY, "revenue")
    monkeypatch.setattr(registry, "_BUILTIN_MODULES", ())
    with pytest.raises(AgentNotBuiltError, match="not built in this release"):
        agents.get("revenue")


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
