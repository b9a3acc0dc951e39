"""The CLI's exit codes (docs/architecture.md: 0 ok, 2 bad arguments, 3 rejected input, 4 server/infra, 5 not authorized)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from ferry.cli import main
from ferry.cli.common import command
from ferry.errors import (
    BadRequest,
    Conflict,
    FerryError,
    Forbidden,
    InfraError,
    NotFound,
    PayloadTooLarge,
    Unauthenticated,
    ValidationError,
    exit_code_for_status,
    from_dict,
)

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "manifests"


@pytest.fixture
def closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there any more


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_invalid_file_exits_3_with_every_error_before_any_request(tmp_path, closed_port):
    (tmp_path / "good.yaml").write_text((EXAMPLES / "resources.yaml").read_text())
    (tmp_path / "bad.yaml").write_text(
        "kind: Endpoint\nmetadata: {name: e}\nspec: {timezone: Mars/Base, partitioning: often}\n---\n"
        "kind: Workflow\nmetadata: {name: w, owner: t}\nspec: {schedule: '* * * * * *', image: i, colour: x}\n")
    result = run("apply", "-f", str(tmp_path), "--api", closed_port)  # the API is never called
    assert result.exit_code == 3
    err = result.stderr
    assert "5 problem(s)" in err
    for expected in ("bad.yaml[0]", "metadata.owner", "spec.timezone", "spec.partitioning",
                     "bad.yaml[1] Workflow/w spec.schedule", "spec.colour: unknown field"):
        assert expected in err, err
    assert "nothing was applied" in err


def test_invalid_file_json_output(tmp_path, closed_port):
    (tmp_path / "bad.yaml").write_text("kind: Resource\nmetadata: {name: r}\nspec: {concurrency: many}\n")
    result = run("apply", "-f", str(tmp_path / "bad.yaml"), "--json", "--api", closed_port)
    assert result.exit_code == 3
    body = json.loads(result.stdout)
    assert body["error"]["code"] == "invalid"
    assert body["error"]["details"][0]["field"] == "spec.concurrency"


def test_unreachable_api_exits_4(closed_port):
    result = run("get", "endpoints", "--api", closed_port)
    assert result.exit_code == 4
    assert "cannot reach the Ferry API" in result.stderr


def test_apply_to_unreachable_api_exits_4(closed_port):
    result = run("apply", "-f", str(EXAMPLES), "--api", closed_port)
    assert result.exit_code == 4


def test_bad_arguments_exit_2():
    assert run("apply").exit_code == 2  # -f is required
    assert run("get").exit_code == 2
    assert run("schema", "gadgets").exit_code == 2
    assert run("no-such-command").exit_code == 2


def test_unknown_kind_in_get_exits_3(closed_port):
    result = run("get", "gadgets", "--api", closed_port)
    assert result.exit_code == 3 and "unknown kind" in result.stderr


def test_schema_is_offline_and_valid_json():
    result = run("schema", "Workflow")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["title"] == "Ferry Workflow"


@pytest.mark.parametrize(("error", "code"), [
    (BadRequest("x"), 3), (ValidationError("x"), 3), (NotFound("x"), 3), (Conflict("x"), 3),
    (PayloadTooLarge("x"), 3), (Forbidden("x"), 5), (Unauthenticated("x"), 5), (InfraError("x"), 4),
    (FerryError("x"), 4),
])
def test_every_error_maps_to_its_exit_code(error, code):
    group = click.Group()

    @command(group, "boom")
    def boom(ctx):
        raise error

    result = CliRunner().invoke(group, ["boom"])
    assert result.exit_code == code
    assert "error: x" in result.stderr


@pytest.mark.parametrize(("status", "code", "cls"), [
    (400, 3, BadRequest), (401, 5, Unauthenticated), (403, 5, Forbidden), (404, 3, NotFound), (409, 3, Conflict),
    (413, 3, PayloadTooLarge), (422, 3, ValidationError), (500, 4, FerryError), (503, 4, InfraError),
])
def test_http_status_to_exit_code_and_error(status, code, cls):
    assert exit_code_for_status(status) == code
    rebuilt = from_dict({"error": {"message": "m"}}, status)  # no code: by status
    assert type(rebuilt) is cls and rebuilt.exit_code == code
    by_code = from_dict(cls("m", {"k": 1}).to_dict(), 500)  # the code wins over the status
    assert type(by_code) is cls and by_code.details == {"k": 1}
