"""environment.yml (conda users) must pin exactly what pyproject.toml pins (pip users, CI).

Dependency-free on purpose: tomllib is in the standard library (Python >= 3.11; the
``tomli`` backport is used on 3.10 when present) and environment.yml is read with a
small line parser, so this test needs no PyYAML.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
ENVIRONMENT = ROOT / "environment.yml"

# Entries of environment.yml that pyproject.toml does not pin and need not.
UNPINNED_OK = {"python", "pip"}

_PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?P<op>==|=)\s*(?P<version>[^\s,;#]+)$")
_NAME = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*$")


def normalize(name: str) -> str:
    """PEP 503 name normalisation: ``Jupyter_Book`` and ``jupyter-book`` are one package."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pyproject_pins() -> dict[str, tuple[str, str]]:
    """{normalised name: (version, where)} for dependencies and every extra; all must be ``==`` pins."""
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    groups = {"dependencies": project.get("dependencies", [])}
    for extra, reqs in project.get("optional-dependencies", {}).items():
        groups[f"extra [{extra}]"] = reqs
    pins: dict[str, tuple[str, str]] = {}
    for where, reqs in groups.items():
        for req in reqs:
            m = re.fullmatch(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s,;]+)\s*", req)
            assert m, f"pyproject.toml {where}: {req!r} is not an exact pin (name==version)"
            name, version = normalize(m.group(1)), m.group(2)
            if name in pins and pins[name][0] != version:
                raise AssertionError(
                    f"pyproject.toml pins {name} twice with different versions: "
                    f"{pins[name][0]} ({pins[name][1]}) and {version} ({where})"
                )
            pins[name] = (version, where)
    return pins


def environment_entries() -> dict[str, str | None]:
    """{normalised name: version or None} for every list item under ``dependencies:``, pip section included."""
    entries: dict[str, str | None] = {}
    in_deps = False
    for lineno, raw in enumerate(ENVIRONMENT.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        if not raw[:1].isspace():  # a top-level key: name, channels, dependencies, ...
            in_deps = line.strip() == "dependencies:"
            continue
        if not in_deps:
            continue
        item = line.strip()
        assert item.startswith("- "), f"environment.yml line {lineno}: cannot parse {raw!r}"
        item = item[2:].strip().strip("'\"")
        if item == "pip:":
            continue
        m = _PIN.match(item)
        if m:
            name, version = normalize(m.group("name")), m.group("version")
        else:
            m = _NAME.match(item)
            assert m, f"environment.yml line {lineno}: cannot parse requirement {item!r}"
            name, version = normalize(m.group("name")), None
        assert name not in entries, f"environment.yml lists {name} twice (line {lineno})"
        entries[name] = version
    assert entries, "environment.yml: found no entries under 'dependencies:'"
    return entries


def test_pyproject_pins_are_exact() -> None:
    assert pyproject_pins(), "pyproject.toml pins nothing"


def test_every_pyproject_pin_is_in_environment_yml() -> None:
    env = environment_entries()
    problems = []
    for name, (version, where) in sorted(pyproject_pins().items()):
        if name not in env:
            problems.append(f"{name}=={version} ({where}) is missing from environment.yml")
        elif env[name] != version:
            problems.append(
                f"{name}: pyproject.toml pins {version} ({where}) but environment.yml has {env[name] or 'no version'}"
            )
    assert not problems, "environment.yml out of step with pyproject.toml:\n  " + "\n  ".join(problems)


def test_environment_yml_pins_nothing_else() -> None:
    pins = pyproject_pins()
    extra = sorted(name for name in environment_entries() if name not in pins and name not in UNPINNED_OK)
    assert not extra, f"environment.yml lists packages that pyproject.toml does not pin: {', '.join(extra)}"


def test_environment_python_satisfies_requires_python() -> None:
    env = environment_entries()
    assert env.get("python"), "environment.yml must pin python (e.g. python=3.11)"
    requires = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["requires-python"]
    m = re.fullmatch(r">=\s*(\d+)\.(\d+)", requires.strip())
    assert m, f"unexpected requires-python {requires!r}; update this test"
    have = tuple(int(x) for x in env["python"].split(".")[:2])
    need = (int(m.group(1)), int(m.group(2)))
    assert have >= need, f"environment.yml python={env['python']} does not satisfy requires-python {requires}"
