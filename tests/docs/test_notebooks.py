"""Every notebook in examples/ executes top to bottom (nbclient), on small settings, and is
committed without outputs.

Each notebook's first code cell, tagged ``parameters``, holds its settings; the test runs a
cell of smaller ones after it (as papermill would), so that CI stays fast and the notebook
keeps settings a reader would use.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))

QUICK = {
    "simulate_federation": "SAMPLES_PER_MSP = 60",
    "privacy_vs_accuracy": "EPSILONS = [0.3, 3, math.inf]\nSAMPLES_PER_MSP = 100",
    "own_data": "ROWS = 200",
    "open_model": "SAMPLES_PER_MSP = 60",
}


def _parameters_cell(notebook) -> int:
    for i, cell in enumerate(notebook.cells):
        if "parameters" in cell.metadata.get("tags", []):
            return i
    raise AssertionError("no cell tagged 'parameters'")


def test_every_notebook_has_quick_settings():
    assert {p.stem for p in NOTEBOOKS} == set(QUICK)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_without_outputs(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, (
                f"{path.name} has outputs: clear them before committing "
                f"(jupyter nbconvert --clear-output --inplace {path.name})"
            )


@pytest.mark.integration
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    notebook = nbformat.read(path, as_version=4)
    at = _parameters_cell(notebook)
    notebook.cells.insert(at + 1, nbformat.v4.new_code_cell(QUICK[path.stem]))
    # the kernel finds the `meshfl` command as in an activated virtualenv
    bin_dir = str(Path(sys.executable).parent)
    monkeypatch.setenv("PATH", bin_dir + os.pathsep + os.environ.get("PATH", ""))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    client = nbclient.NotebookClient(
        notebook,
        timeout=180,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # a cell that raises fails the test with its traceback
    shown = [out for cell in notebook.cells for out in cell.get("outputs", []) if out.get("data")]
    assert shown, f"{path.name} displayed nothing"
