"""What importing meshfl and loading a model pull in (issue 16, inference).

Run in fresh interpreters: ``sys.modules`` of this test process already holds everything.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = {"pandas", "torch", "flwr", "tenseal", "transformers", "opacus", "sklearn"}


def _modules_after(code: str) -> set[str]:
    probe = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_import_meshfl_loads_no_heavy_library():
    imported = _modules_after("import meshfl")
    assert not imported & HEAVY, sorted(imported & HEAVY)
    assert not any(m.startswith("meshfl.agents") for m in imported)


def test_the_facade_still_reaches_everything_lazily():
    imported = _modules_after(
        "import meshfl\nassert 'anomaly' in meshfl.agents.built()\nassert callable(meshfl.load)"
    )
    assert "meshfl.agents.registry" in imported
    assert not imported & {"torch", "flwr", "tenseal"}


@pytest.mark.parametrize("agent", ["anomaly", "client_health", "revenue"])
def test_loading_a_model_imports_only_its_agent(agent, tmp_path):
    import meshfl

    cls = meshfl.agents.get(agent)
    instance = cls()
    path = instance.model(instance.init_vector(seed=0)).save(tmp_path / f"{agent}.npz")
    imported = _modules_after(f"import meshfl\nmeshfl.load({str(path)!r})")
    others = {f"meshfl.agents.{name}" for name in meshfl.agents.built() if name != agent}
    assert f"meshfl.agents.{agent}" in imported
    assert not imported & others, sorted(imported & others)
    assert not imported & {"torch", "flwr", "tenseal", "transformers", "opacus"}, sorted(
        imported & {"torch", "flwr", "tenseal", "transformers", "opacus"}
    )
