"""Loading manifests from YAML files: every error of every file, with file, document, field, reason."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic
import yaml

from ferry.domain.manifests import KINDS, Manifest
from ferry.errors import ValidationError

YAML_SUFFIXES = (".yaml", ".yml")
STDIN = "-"  # ``-f -``: the manifests come on standard input
# What the API adds to an object it returns (``ferry get -o yaml``), dropped on the way back in so the
# output of ``get`` re-applies unchanged (as kubectl does with ``status``).
SERVER_FIELDS = ("status", "usage")
# libyaml's safe loader when PyYAML has it: the same documents, ~8x faster on big directories.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class Problem:
    file: str
    document: int
    field: str
    reason: str
    kind: str | None = None
    name: str | None = None
    reference: str | None = None  # the object named that does not exist (offline: maybe applied already)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    def __str__(self) -> str:
        where = f"{self.file}[{self.document}]"
        what = f" {self.kind}/{self.name}" if self.kind and self.name else ""
        return f"{where}{what} {self.field}: {self.reason}"


def _field_path(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            # pydantic puts the tag of a function validator into loc; it is not a field
            if str(part).startswith("function-") or part in ("after", "before"):
                continue
            path += ("." if path else "") + ("schema" if part == "schema_" else str(part))
    return path or "(document)"


def parse_document(doc: Any, file: str, index: int) -> tuple[Manifest | None, list[Problem]]:
    """Validate one already-parsed YAML/JSON document into a manifest model."""
    if not isinstance(doc, dict):
        return None, [Problem(file, index, "(document)", "a manifest must be a mapping with kind, metadata and spec")]
    kind = doc.get("kind")
    name = (doc.get("metadata") or {}).get("name") if isinstance(doc.get("metadata"), dict) else None
    name = name if isinstance(name, str) else None
    if not isinstance(kind, str) or kind not in KINDS:  # an object or a list is no kind (nor hashable)
        reason = "missing kind" if kind is None else f"unknown kind {kind!r}"[:200]
        return None, [Problem(file, index, "kind", f"{reason}; kinds: {', '.join(KINDS)}", None, name)]
    doc = {k: v for k, v in doc.items() if k not in SERVER_FIELDS}
    try:
        return KINDS[kind].model_validate(doc), []  # type: ignore[return-value]
    except pydantic.ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            reason = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                reason = "unknown field (not part of the manifest language; check the spelling)"
            problems.append(Problem(file, index, _field_path(err["loc"]), reason, kind, name))
        return None, problems


def parse_text(text: str, file: str) -> tuple[list[Manifest], list[Problem]]:
    manifests: list[Manifest] = []
    problems: list[Problem] = []
    try:
        docs = list(yaml.load_all(text, Loader=_LOADER))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        return [], [Problem(file, 0, "(yaml)", f"not valid YAML{where}: {getattr(exc, 'problem', exc)}")]
    index = 0
    for doc in docs:
        if doc is None:  # empty document between '---' separators
            continue
        manifest, found = parse_document(doc, file, index)
        problems.extend(found)
        if manifest is not None:
            manifests.append(manifest)
        index += 1
    return manifests, problems


def manifest_files(paths: Iterable[str | Path]) -> list[Path]:
    files: list[Path] = []
    for given in paths:
        if str(given) == STDIN:
            files.append(Path(STDIN))
            continue
        p = Path(given)
        if p.is_dir():
            files.extend(sorted(f for f in p.rglob("*") if f.suffix in YAML_SUFFIXES and f.is_file()))
        elif p.is_file():
            files.append(p)
        else:
            raise ValidationError(f"no such file or directory: {p}", [{"file": str(p), "reason": "not found"}])
    return files


def load(paths: Iterable[str | Path]) -> list[Manifest]:
    """Load and validate every manifest under ``paths`` (see ``load_sourced``)."""
    return [m for _, m in load_sourced(paths)]


def load_sourced(paths: Iterable[str | Path]) -> list[tuple[str, Manifest]]:
    """Load and validate every manifest under ``paths``, each with the file it came from.

    Raises:
        ValidationError: with ``details`` listing every problem of every file; nothing is returned
            when anything is invalid, so a caller can never apply half a directory.
    """
    sourced: list[tuple[str, Manifest]] = []
    problems: list[Problem] = []
    for f in manifest_files(paths):
        text, unreadable = read_text(f)
        if unreadable:
            problems.append(unreadable)
            continue
        name = "(stdin)" if str(f) == STDIN else str(f)
        found, bad = parse_text(text, name)
        sourced.extend((name, m) for m in found)
        problems.extend(bad)
    problems.extend(duplicates([m for _, m in sourced]))
    if problems:
        raise ValidationError(f"{len(problems)} problem(s) in manifests; nothing was applied",
                              [p.to_dict() for p in problems])
    return sourced


def read_text(f: Path) -> tuple[str, Problem | None]:
    """The UTF-8 text of a manifest file (``-``: standard input), or the problem naming the file."""
    import sys

    name = "(stdin)" if str(f) == STDIN else str(f)
    try:
        raw = sys.stdin.buffer.read() if str(f) == STDIN else f.read_bytes()
    except OSError as exc:
        return "", Problem(name, 0, "(file)", f"cannot be read: {exc.strerror or exc}")
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        return "", Problem(name, 0, "(file)", f"is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}): "
                                               "manifests are UTF-8 YAML — re-save it as UTF-8 (e.g. `iconv -f latin1 "
                                               "-t utf-8`), or is this a binary file?")


def duplicates(manifests: list[Manifest]) -> list[Problem]:
    seen: set[tuple[str, str]] = set()
    out = []
    for i, m in enumerate(manifests):
        key = (m.kind, m.name)
        if key in seen:
            out.append(Problem("(input)", i, "metadata.name", f"{m.kind} {m.name!r} is declared twice", m.kind, m.name))
        seen.add(key)
    return out
