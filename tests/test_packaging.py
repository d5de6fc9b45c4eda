"""Project files stay consistent: environment.yml vs pyproject.toml, CI entry point."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"torch": "pytorch"}


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req, maxsplit=1)[0].strip().lower()


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = {d.lower() for d in env["dependencies"] if isinstance(d, str)}
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    runtime = {_name(r) for r in project["dependencies"]}
    assert {CONDA_NAMES.get(n, n) for n in runtime} <= {c.split("=")[0] for c in conda}
    assert any(c.startswith("python=3.11") for c in conda)
    assert any(".[dev]" in p for p in pip_section)
    assert project["requires-python"] == ">=3.10"


def test_ci_runs_make_test_and_readme_starts_with_the_two_commands():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci
    readme = (ROOT / "README.md").read_text()
    setup = readme[:1500]
    assert "make report" in setup and "make test" in setup
