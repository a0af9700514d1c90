"""The versions the project is tested on, kept consistent: pyproject.toml's declared range, its floors
(requirements/floors.txt, `make test-floors`), the lock (requirements/lock.txt, `make test`), the pinned readers of
exported folders (requirements/readers/) and what the model card tells readers to install."""

from __future__ import annotations

import re

import tomllib
from conftest import ROOT
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REQUIREMENTS = ROOT / "requirements"
CARD_TEMPLATE = ROOT / "accel_recipes" / "card_templates" / "image_classification.md"


def pins(path) -> dict[str, Version]:
    """{canonical name: version} of a file of exact `name==version` pins (comments and blank lines skipped)."""
    found = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            found[canonicalize_name(name)] = Version(version)
    return found


def dependencies() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {canonicalize_name(req.name): req for req in map(Requirement, project["dependencies"])}


def floor(requirement: Requirement) -> Version:
    lower = [Version(spec.version) for spec in requirement.specifier if spec.operator == ">="]
    assert lower, f"{requirement} declares no floor (>=)"
    return max(lower)


def test_floors_file_pins_every_dependency_at_the_floor_pyproject_declares():
    declared = {name: floor(requirement) for name, requirement in dependencies().items()}
    floors = pins(REQUIREMENTS / "floors.txt")  # and, frozen, what they pulled in
    assert {name: floors.get(name) for name in declared} == declared


def test_the_lock_pins_every_dependency_inside_the_declared_range():
    locked = pins(REQUIREMENTS / "lock.txt")
    for name, requirement in dependencies().items():
        assert name in locked, f"{name} is not in the lock; run 'make lock'"
        assert locked[name] in requirement.specifier, f"the lock's {name} {locked[name]} is outside {requirement}"


def test_the_oldest_reader_is_the_transformers_the_card_states_with_a_timm_no_newer_than_the_floor():
    stated = re.search(r'"transformers>=([\d.]+)"', CARD_TEMPLATE.read_text()).group(1)
    readers = [pins(path) for path in sorted((REQUIREMENTS / "readers").glob("*.txt"))]
    oldest = min(readers, key=lambda reader: reader["transformers"])
    assert oldest["transformers"].release[:2] == Version(stated).release[:2]
    assert oldest["timm"] <= floor(dependencies()["timm"])  # reading a folder needs less of timm than training
    locked = pins(REQUIREMENTS / "lock.txt")
    assert all(reader["transformers"] < locked["transformers"] for reader in readers), "the lock is the newest"
