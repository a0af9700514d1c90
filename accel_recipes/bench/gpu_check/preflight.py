"""The GPU check's preflight (``python recipes/gpu_check.py --preflight``): in seconds, one line for each required
package that is missing or outside the tested range, from the packages' metadata alone (nothing is imported, so
a missing or broken torch is reported, not raised).

The tested range: the floors (and any cap) are pyproject.toml's ``[project] dependencies`` and
``requires-python``; the newest tested versions are the exact pins of ``requirements/lock.txt``, the development
lock. Missing, or outside pyproject's range: an error (the check would fail on it). Newer than the lock: a warning
(it may well work; it has not been tested). The standard library only, plus ``packaging`` when it is there (a
dependency of transformers); without it versions are compared by their release numbers.
"""

from __future__ import annotations

import importlib.metadata
import platform
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
PYPROJECT = ROOT / "pyproject.toml"
LOCK = ROOT / "requirements" / "lock.txt"
DISTRIBUTION = "accel-recipes"
WHEELS = "<dir>"  # the folder of wheels carried to the machine (README.md: Machines without network)
REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*([^;]*?)\s*(?:;\s*(.*))?$")
SPECIFIER = re.compile(r"^(~=|===|==|!=|<=|>=|<|>)\s*(\S+)$")
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;#]+)")

VersionLookup = Callable[[str], "str | None"]


@dataclass(frozen=True)
class Requirement:
    """One ``[project] dependencies`` entry: a distribution name and its specifiers (``(">=", "2.4")``)."""

    name: str
    specifiers: tuple[tuple[str, str], ...]

    @property
    def spec(self) -> str:
        return ",".join(operator + version for operator, version in self.specifiers)


@dataclass(frozen=True)
class Finding:
    level: str  # "error" or "warning"
    message: str

    def line(self) -> str:
        return f"{self.level}: {self.message}"


def normalize(name: str) -> str:
    """PEP 503: ``PyYAML``, ``huggingface-hub`` and ``huggingface_hub`` are one name each."""
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_version(name: str) -> str | None:
    """The installed distribution's version, from its metadata; None when it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def parse_requirement(text: str) -> Requirement | None:
    """``torch>=2.4,<2.15`` as a Requirement; None when its environment marker excludes this machine."""
    match = REQUIREMENT.match(text)
    if match is None:
        raise ValueError(f"cannot read the requirement '{text}' of pyproject.toml: expected 'name>=version'")
    name, spec, marker = match.groups()
    if marker and not _marker_applies(marker):
        return None
    return Requirement(name, parse_specifiers(spec.strip("()"), text))


def parse_specifiers(spec: str, where: str) -> tuple[tuple[str, str], ...]:
    """``>=2.4,<2.15`` as ``((">=", "2.4"), ("<", "2.15"))``; ``where`` names the entry in an error."""
    specifiers = []
    for part in filter(None, (piece.strip() for piece in spec.split(","))):
        found = SPECIFIER.match(part)
        if found is None:
            raise ValueError(f"cannot read the version specifier '{part}' of '{where}' in pyproject.toml")
        specifiers.append((found.group(1), found.group(2)))
    return tuple(specifiers)


def _marker_applies(marker: str) -> bool:
    """An environment marker (``python_version < "3.11"``) evaluated here; an extra's entries never apply."""
    if re.search(r"\bextra\s*==", marker):
        return False
    try:
        from packaging.markers import Marker
    except ImportError:
        return False  # without packaging a marked requirement is left out: a platform's own, not this one's, maybe
    return Marker(marker).evaluate()


def read_pyproject(path: Path = PYPROJECT) -> tuple[str | None, list[str]]:
    """``[project]``'s requires-python and dependencies, read with tomllib (Python 3.11+) or tomli, else with a
    small reader of those two keys (Python 3.10 without tomli)."""
    text = path.read_text()
    try:
        import tomllib
    except ImportError:
        try:
            import tomli as tomllib
        except ImportError:
            return read_project_keys(text)
    project = tomllib.loads(text).get("project", {})
    return project.get("requires-python"), list(project.get("dependencies", []))


def read_project_keys(text: str) -> tuple[str | None, list[str]]:
    """``requires-python`` and ``dependencies`` of the ``[project]`` table, without a TOML parser: the table runs
    to the next ``[header]``; the dependencies are the quoted strings of its ``dependencies = [...]`` array."""
    table = re.search(r"^\[project\]\s*$(.*?)(?=^\[|\Z)", text, re.MULTILINE | re.DOTALL)
    if table is None:
        return None, []
    body = table.group(1)
    python = re.search(r'^requires-python\s*=\s*"([^"]*)"', body, re.MULTILINE)
    array = re.search(r"""^dependencies\s*=\s*\[((?:"[^"]*"|'[^']*'|#[^\n]*|[^\]"'#])*)\]""", body, re.MULTILINE)
    strings = re.findall(r""""([^"]+)"|'([^']+)'|#[^\n]*""", array.group(1)) if array else []
    return (python.group(1) if python else None), [double or single for double, single in strings if double or single]


def read_lock(path: Path = LOCK) -> dict[str, str]:
    """The lock's exact pins (``name==version``), by normalized name; comments and other lines are skipped."""
    pins = {}
    for line in path.read_text().splitlines():
        match = PIN.match(line.strip())
        if match:
            pins[normalize(match.group(1))] = match.group(2)
    return pins


def public(version: str) -> str:
    """Without its local build tag: ``2.11.0+cu130`` is the release 2.11.0."""
    return version.split("+", 1)[0].strip()


def release(version: str) -> tuple[tuple[int, ...], bool]:
    """The release numbers and whether nothing follows them (``2.5.0a0``: ``((2, 5, 0), False)``)."""
    text = public(version)
    found = re.match(r"v?(\d+(?:\.\d+)*)", text)
    if found is None:
        return (0,), False
    return tuple(int(part) for part in found.group(1).split(".")), found.end() == len(text)


def version_key(version: str) -> Any:
    """A comparable version: packaging's Version when packaging is there, else (release numbers, final?)."""
    numbers, final = release(version)
    while len(numbers) > 1 and numbers[-1] == 0:  # 2.4.0 == 2.4
        numbers = numbers[:-1]
    try:
        from packaging.version import InvalidVersion, Version
    except ImportError:
        return numbers, final  # a pre-release sorts before its release
    try:
        return Version(public(version))
    except InvalidVersion:
        return Version(".".join(map(str, numbers)))


def satisfies(version: str, operator: str, bound: str) -> bool:
    """One specifier, pre-releases allowed (an NVIDIA container's torch is ``2.5.0a0+872d972``): packaging's
    rules when it is there, else the release numbers compared (``==2.4.*`` as a prefix)."""
    try:
        from packaging.specifiers import InvalidSpecifier, SpecifierSet
    except ImportError:
        pass
    else:
        try:
            return SpecifierSet(operator + bound).contains(public(version), prereleases=True)
        except InvalidSpecifier as error:
            raise ValueError(f"cannot read the version specifier '{operator}{bound}' in pyproject.toml") from error
    if bound.endswith(".*"):
        prefix = release(bound[:-2])[0]
        same = release(version)[0][: len(prefix)] == prefix
        return same if operator == "==" else not same
    have, want = version_key(version), version_key(bound)
    return {
        ">=": have >= want, ">": have > want, "<=": have <= want, "<": have < want, "==": have == want,
        "===": version == bound, "!=": have != want, "~=": have >= want,
    }[operator]  # fmt: skip


def unmet(version: str, specifiers: tuple[tuple[str, str], ...]) -> list[tuple[str, str]]:
    return [(operator, bound) for operator, bound in specifiers if not satisfies(version, operator, bound)]


def shown(path: Path) -> str:
    """A path as a message names it: relative to the checkout when inside it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def check_package(
    requirement: Requirement, tested: str | None, version: str | None, lock: Path = LOCK
) -> Finding | None:
    """The verdict on one required package (``tested``: its pin in ``lock``): None when within the tested range."""
    name, spec = requirement.name, requirement.spec
    install = f"pip install --no-index --find-links {WHEELS} {shlex.quote(name + spec)}"
    tested_text = f", tested up to {tested}" if tested else ""
    if version is None:
        return Finding("error", f"{name} is not installed (needs {spec or 'any version'}{tested_text}): {install}")
    failed = unmet(version, requirement.specifiers)
    if any(operator in (">=", ">", "~=") for operator, _ in failed):
        return Finding("error", f"{name} {version} is older than the floor {spec} (pyproject.toml): {install}")
    if failed:
        return Finding("error", f"{name} {version} is outside the supported range {spec} (pyproject.toml): {install}")
    if tested and version_key(version) > version_key(tested):
        return Finding(
            "warning", f"{name} {version} is newer than tested ({tested} in {shown(lock)}): it may work; "
            "a failure may come from this version"
        )  # fmt: skip
    return None


def check_python(requires: str | None, version: str) -> Finding | None:
    if not requires:
        return None
    if unmet(version, parse_specifiers(requires, "requires-python")):
        return Finding("error", f"Python {version} is outside requires-python {requires} (pyproject.toml): run the "
                       "check with a Python inside it")  # fmt: skip
    return None


def requirements_of_installed() -> tuple[str | None, list[str]]:
    """Without a checkout's pyproject.toml: the installed accel-recipes' own metadata."""
    metadata = importlib.metadata.metadata(DISTRIBUTION)
    return metadata.get("Requires-Python"), list(importlib.metadata.requires(DISTRIBUTION) or [])


def preflight(
    pyproject: Path = PYPROJECT,
    lock: Path = LOCK,
    version_of: VersionLookup = installed_version,
    python_version: str | None = None,
) -> list[Finding]:
    """Every finding, Python first, then the packages in pyproject's order (errors and warnings alike)."""
    if pyproject.is_file():
        requires_python, entries = read_pyproject(pyproject)
    else:
        requires_python, entries = requirements_of_installed()
    pins = read_lock(lock) if lock.is_file() else {}
    findings = [check_python(requires_python, python_version or platform.python_version())]
    if not lock.is_file():
        findings.append(Finding("warning", f"no {shown(lock)}: the newest tested versions are unknown"))
    for requirement in filter(None, map(parse_requirement, entries)):
        key = normalize(requirement.name)
        findings.append(check_package(requirement, pins.get(key), version_of(requirement.name), lock))
    return [finding for finding in findings if finding is not None]


def main(pyproject: Path = PYPROJECT, lock: Path = LOCK, version_of: VersionLookup = installed_version) -> int:
    """Print one line per finding and a verdict; 0 when nothing is an error (warnings allowed), else 1 (2 when
    pyproject.toml cannot be read)."""
    try:
        findings = preflight(pyproject, lock, version_of)
    except ValueError as error:
        print(f"error: {error}", flush=True)
        return 2
    for finding in findings:
        print(finding.line(), flush=True)
    errors = sum(finding.level == "error" for finding in findings)
    warnings = len(findings) - errors
    counts = f"{errors} error(s), {warnings} warning(s)"
    if errors:
        print(f"preflight: {counts}; install what the errors name (README.md: Machines without network)", flush=True)
        return 1
    print(f"preflight: ok ({counts}): Python {platform.python_version()} and every required package are in the "
          "tested range", flush=True)  # fmt: skip
    return 0
