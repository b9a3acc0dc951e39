"""The deploy bundle holds everything its functions import (issue 2, item 9b).

Build the bundle as `ferry deploy` does, then import ``main`` in a clean interpreter: isolated mode,
no site processing (so no editable install of ferry and no .pth files), cwd = the bundle, and
sys.path = the bundle plus a site directory holding only the distributions that the bundle's
requirements.txt installs (with their dependencies) — what the cloud build would install, not
whatever the development venv happens to hold. Every entry point named in infra/ must exist, be
registered with functions-framework and load through ``create_app``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from ferry.deploy import bundle
from ferry.infra.model import load

PROBE = r'''
import json, re, sys
bundle, entry_points = sys.argv[1], json.loads(sys.argv[2])
sys.path[:0] = [bundle]
out = {"problems": []}
import main
import ferry
import functions_framework
from functions_framework import _function_registry
out["ferry_file"] = ferry.__file__
for ep in entry_points:
    fn = getattr(main, ep, None)
    if not callable(fn):
        out["problems"].append(f"entry point {ep!r} is not a function of main.py")
        continue
    kind = _function_registry.REGISTRY_MAP.get(ep)
    if kind not in ("http", "cloudevent", "typed"):
        out["problems"].append(f"entry point {ep!r} is not registered with functions-framework "
                               f"(@functions_framework.http / .cloud_event): {kind!r}")
        continue
    try:
        functions_framework.create_app(target=ep, source=bundle + "/main.py")
    except Exception as exc:
        out["problems"].append(f"functions-framework cannot load {ep!r}: {exc!r}")

print(json.dumps(out))
'''


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _closure(requirements: Path) -> set[str]:
    """The installed distributions ``pip install -r requirements`` would bring, markers evaluated."""
    todo = [Requirement(line) for line in (ln.split("#")[0].strip() for ln in requirements.read_text().splitlines())
            if line and not line.startswith("-")]
    seen: set[str] = set()
    while todo:
        req = todo.pop()
        name = _canon(req.name)
        if name in seen or (req.marker and not req.marker.evaluate({"extra": ""})):
            continue
        seen.add(name)
        for extra in req.extras or {""}:
            todo += [r for r in map(Requirement, metadata.requires(name) or [])
                     if not r.marker or r.marker.evaluate({"extra": extra})]
    return seen


def _site(requirements: Path, dest: Path) -> Path:
    """A site directory of symlinks to the files of exactly those distributions."""
    for name in sorted(_closure(requirements)):
        dist = metadata.distribution(name)
        for f in dist.files or []:
            if f.parts[0] == ".." or f.parts[0] == "__pycache__" or "__pycache__" in f.parts:
                continue
            src = Path(str(dist.locate_file(f)))
            if not src.is_file():
                continue
            target = dest / f
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                target.symlink_to(src)
    return dest


def _clean_python(args: list[str], cwd: Path, site: Path) -> subprocess.CompletedProcess[str]:
    prefix = "import sys; sys.path[:0] = " + json.dumps([str(site)]) + "; "
    return subprocess.run([sys.executable, "-I", "-S", "-c", prefix + args[0], *args[1:]], cwd=cwd,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(cwd), "FERRY_STORE": "memory",
                               "FERRY_BROKER": "memory"},
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return bundle.build(tmp_path_factory.mktemp("deploy") / "bundle")


@pytest.fixture(scope="module")
def site(built: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _site(built / "requirements.txt", tmp_path_factory.mktemp("site"))


def test_the_clean_interpreter_sees_only_the_requirements(site: Path, tmp_path: Path) -> None:
    code = "import importlib.util as u; print([bool(u.find_spec(m)) for m in ('ferry', 'pytest', 'functions_framework')])"
    r = _clean_python([code], tmp_path, site)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[False, False, True]", "the development venv leaks into the clean environment"


def test_bundle_layout(built: Path) -> None:
    assert (built / "main.py").is_file() and (built / "requirements.txt").is_file()
    assert (built / "ferry" / "__init__.py").is_file() and (built / "ferry" / "deploy" / "bundle.py").is_file()
    assert not list(built.rglob("__pycache__"))
    assert "ferry" not in [line.split("=")[0].split(">")[0].strip()
                           for line in (built / "requirements.txt").read_text().splitlines()]


def test_every_entry_point_imports_from_the_bundle_alone(built: Path, site: Path) -> None:
    entry_points = sorted({f.entry_point for f in load().functions})
    r = _clean_python([PROBE, str(built), json.dumps(entry_points)], built, site)
    assert r.returncode == 0, f"importing main from the bundle failed:\n{r.stderr[-3000:]}"
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["ferry_file"].startswith(str(built)), out["ferry_file"]
    assert out["problems"] == []


def test_a_module_outside_the_bundle_or_requirements_is_caught(site: Path, tmp_path: Path) -> None:
    broken = bundle.build(tmp_path / "broken")
    (broken / "main.py").write_text((broken / "main.py").read_text() + "\nimport pytest  # dev-only\n")
    r = _clean_python([PROBE, str(broken), "[]"], broken, site)
    assert r.returncode != 0 and "No module named 'pytest'" in r.stderr
