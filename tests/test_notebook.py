"""notebooks/quickstart.ipynb runs from top to bottom (so it cannot rot), trains to a real
accuracy and draws its plot; the committed copy carries no outputs."""

import pathlib
import re

import nbformat
import pytest
from nbclient import NotebookClient

# Programs as users run them: compiled with XLA's full optimization (conftest.py).
pytestmark = pytest.mark.optimized

NOTEBOOK = pathlib.Path(__file__).resolve().parent.parent / "notebooks" / "quickstart.ipynb"


def _outputs(cell):
    for out in cell.get("outputs", []):
        yield out.get("text", "") + out.get("data", {}).get("text/plain", "")


def test_committed_notebook_has_no_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


@pytest.mark.slow
def test_notebook_executes(tmp_path):
    # "python3" is ipykernel's native kernel: this interpreter, where kconv is installed.
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, with the cell, on any failing cell
    text = "\n".join(t for c in nb.cells if c.cell_type == "code" for t in _outputs(c))
    assert "{'kernel': (3, 3, 1, 16), 'bias': (16,)}" in text
    assert "head/kernel (4, 4, 32, 10)" in text
    accuracy = float(re.search(r"test accuracy (\d\.\d+)", text).group(1))
    assert accuracy > 0.9
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if "image/png" in o.get("data", {})]
    assert len(images) == 1  # the training curves
