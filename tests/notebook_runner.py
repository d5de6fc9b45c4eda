"""Execute repository notebooks with papermill for the tests."""
from __future__ import annotations

import json
from pathlib import Path

import nbformat
import papermill

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def run_notebook(name: str, tmp_path: Path, extra_cells: list[str] | None = None,
                 **params: object) -> dict:
    """Run ``notebooks/<name>.ipynb`` with ``params`` (and optional extra cells appended);
    return the metrics JSON it wrote."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    source = NOTEBOOKS / f"{name}.ipynb"
    if extra_cells:
        nb = nbformat.read(source, as_version=4)
        for code in extra_cells:
            nb.cells.append(nbformat.v4.new_code_cell(code))
        source = tmp_path / f"{name}.input.ipynb"
        nbformat.write(nb, source)
    metrics = tmp_path / f"{name}.metrics.json"
    papermill.execute_notebook(str(source), str(tmp_path / f"{name}.out.ipynb"),
                               parameters={**params, "METRICS_PATH": str(metrics)},
                               kernel_name="python3", cwd=str(tmp_path), progress_bar=False,
                               execution_timeout=300)
    return json.loads(metrics.read_text())
