"""Dependency floors that are security fixes: a resolver may never pick a version below."""

from __future__ import annotations

import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

PYPROJECT = Path(__file__).parent.parent / "pyproject.toml"


def _requirement(name: str) -> Requirement:
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    return next(r for r in map(Requirement, dependencies) if r.name.lower() == name)


@pytest.mark.parametrize(
    ("name", "vulnerable", "fixed"),
    # Jinja2 sandbox escapes (the campaign templates run in its sandbox).
    [("jinja2", ["3.1.4", "3.1.5"], "3.1.6")],
)
def test_known_vulnerable_versions_are_excluded(
    name: str, vulnerable: list[str], fixed: str
) -> None:
    specifier = _requirement(name).specifier
    assert not any(specifier.contains(v) for v in vulnerable)
    assert specifier.contains(fixed) and specifier.contains(version(name))
