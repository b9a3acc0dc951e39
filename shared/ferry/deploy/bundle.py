"""The deploy bundle: the source directory every function is deployed from.

Cloud Functions builds from one directory holding ``main.py`` and ``requirements.txt``. Ferry's
entry points import the ``ferry`` library, which is not on PyPI, so the bundle carries a copy of it
next to ``main.py``: what is deployed is exactly what ``tests/e2e/test_bundle.py`` imports in a clean
interpreter.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import ferry

REPO = Path(__file__).resolve().parents[3]
FUNCTIONS_DIR = REPO / "functions"
LIBRARY_DIR = Path(ferry.__file__).resolve().parent
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".mypy_cache", ".pytest_cache")


def build(dest: str | Path, functions_dir: str | Path = FUNCTIONS_DIR, library_dir: str | Path = LIBRARY_DIR) -> Path:
    """Write the bundle to ``dest`` (replacing what was there) and return its path.

    Layout: ``dest/main.py``, ``dest/requirements.txt`` (and any other file of ``functions/``),
    ``dest/ferry/`` (the library, package data included).
    """
    dest = Path(dest)
    functions_dir, library_dir = Path(functions_dir), Path(library_dir)
    if not (functions_dir / "main.py").is_file():
        raise FileNotFoundError(f"{functions_dir}/main.py not found")
    if not (functions_dir / "requirements.txt").is_file():
        raise FileNotFoundError(f"{functions_dir}/requirements.txt not found")
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(functions_dir, dest, ignore=_IGNORE)
    if (dest / "ferry").exists():
        raise FileExistsError(f"{functions_dir} must not hold its own 'ferry' (the library is copied in)")
    shutil.copytree(library_dir, dest / "ferry", ignore=_IGNORE)
    return dest
