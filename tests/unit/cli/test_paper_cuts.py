"""Round trips and paper cuts of issue 21, each a regression test: `get -o yaml` re-applies unchanged,
`-f -` reads standard input, offline `validate` warns about references it cannot resolve (exit 0 unless
--strict) while `--against-stack` resolves them, a file that is not UTF-8 is a clear exit 3 naming it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from fakes.api_server import served
from ferry.bootstrap import in_memory
from ferry.cli import main

TEAM = "kind: Team\nmetadata: {name: team-a}\nspec: {members: [ana@example.com], admins: [ana@example.com]}\n"
ENDPOINT = ("kind: Endpoint\nmetadata: {name: plays, owner: team-a, description: \"plays, hourly\"}\n"
            "spec: {partitioning: hourly, sla: {warn_after: PT1H, error_after: PT2H}, upstream: []}\n")
WORKFLOW = ("kind: Workflow\nmetadata: {name: agg, owner: team-b}\n"
            "spec: {schedule: hourly, image: busybox, command: [\"true\"], depends_on: [plays]}\n")


@pytest.fixture()
def api(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    for name in ("FERRY_HOME", "FERRY_API", "FERRY_USER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.chdir(tmp_path)
    with served(in_memory()) as url:
        yield url


def ferry(*args: str, stdin: bytes | None = None) -> Result:
    return CliRunner().invoke(main, [*args, "--as", "ana@example.com"], input=stdin, catch_exceptions=False)


def test_get_yaml_reapplies_unchanged(api: str, tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(TEAM + "---\n" + ENDPOINT)
    assert ferry("apply", "-f", "m.yaml", "--api", api).exit_code == 0
    got = ferry("get", "endpoint", "plays", "-o", "yaml", "--api", api)
    assert got.exit_code == 0 and "status:" in got.stdout  # the server's fields are shown ...
    (tmp_path / "got.yaml").write_text(got.stdout)
    again = ferry("apply", "-f", "got.yaml", "--api", api)
    assert again.exit_code == 0, again.output  # ... and dropped on the way back in
    assert "0 created, 0 changed, 1 unchanged" in again.stdout


def test_dash_reads_manifests_from_stdin(api: str) -> None:
    r = ferry("apply", "-f", "-", "--api", api, stdin=(TEAM + "---\n" + ENDPOINT).encode())
    assert r.exit_code == 0, r.output
    assert "2 created" in r.stdout
    v = ferry("validate", "-f", "-", stdin=ENDPOINT.encode())
    assert v.exit_code == 0 and "valid: 1 manifest(s) in 1 file" in v.stdout
    bad = ferry("validate", "-f", "-", stdin=b"kind: Endpoint\nmetadata: {name: x}\nspec: {partitioning: weekly}\n")
    assert bad.exit_code == 3 and "(stdin)[0]" in bad.output


def test_offline_validate_warns_about_references_it_cannot_resolve(api: str, tmp_path: Path) -> None:
    (tmp_path / "wf.yaml").write_text(WORKFLOW)  # team-b's workflow on team-a's endpoint, applied elsewhere
    r = ferry("validate", "-f", "wf.yaml")
    assert r.exit_code == 0, r.output
    assert "warning:" in r.output and "Endpoint/plays is not in these files" in r.output
    assert "1 unresolved reference" in r.stdout
    assert ferry("validate", "-f", "wf.yaml", "--strict").exit_code == 3
    missing = ferry("validate", "-f", "wf.yaml", "--against-stack", "--api", api)
    assert missing.exit_code == 3 and "endpoint 'plays' does not exist" in missing.output
    (tmp_path / "m.yaml").write_text(TEAM + "---\n" + ENDPOINT)
    assert ferry("apply", "-f", "m.yaml", "--api", api).exit_code == 0
    resolved = ferry("validate", "-f", "wf.yaml", "--against-stack", "--api", api)
    assert resolved.exit_code == 0, resolved.output
    assert "warning" not in resolved.output and "checked against the stack" in resolved.stdout


@pytest.mark.parametrize("content", [ENDPOINT.replace("plays, hourly", "pläys").encode("latin-1"),
                                     b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe"], ids=["latin-1", "binary"])
def test_a_file_that_is_not_utf8_is_exit_3_naming_it(api: str, tmp_path: Path, content: bytes) -> None:
    (tmp_path / "m.yaml").write_bytes(content)
    for command in ("apply", "validate"):
        r = ferry(command, "-f", "m.yaml", "--api", api)
        assert r.exit_code == 3, r.output
        assert "m.yaml" in r.output and "is not UTF-8 text" in r.output
        assert "Traceback" not in r.output


def test_unknown_names_and_kinds_get_a_did_you_mean(api: str, tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(TEAM + "---\n" + ENDPOINT)
    assert ferry("apply", "-f", "m.yaml", "--api", api).exit_code == 0
    for args in (("get", "endpoint", "plyas"), ("delete", "endpoint", "plyas"), ("land", "plyas", "2026-11-26T14")):
        r = ferry(*args, "--api", api)
        assert r.exit_code != 0 and "did you mean plays?" in r.output, (args, r.output)
    r = ferry("get", "endponts", "--api", api)
    assert r.exit_code == 3 and "did you mean endpoints?" in r.output
    r = ferry("get", "endpoint", "zzz-nothing-like-it", "--api", api)
    assert "not found" in r.output and "did you mean" not in r.output
