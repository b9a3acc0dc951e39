"""The metadata language: models, YAML loading with every error at once, JSON Schema export."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import jsonschema
import pytest
import yaml

from ferry.domain import loading
from ferry.domain.manifests import KINDS, PLURALS, Endpoint, EventType, Team, Workflow, json_schema, kind_of
from ferry.errors import ValidationError

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "manifests"


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def _problems(tmp_path: Path, text: str, name: str = "m.yaml") -> list[dict]:
    path = _write(tmp_path, name, text)
    with pytest.raises(ValidationError) as info:
        loading.load([path])
    assert "nothing was applied" in info.value.message
    return info.value.details


# -- the examples ------------------------------------------------------------------------------------

def test_every_example_is_valid_and_every_kind_is_exemplified():
    manifests = loading.load([EXAMPLES])
    assert {m.kind for m in manifests} == set(KINDS)
    assert len(manifests) >= 10


def test_example_details():
    by_name = {m.name: m for m in loading.load([EXAMPLES])}
    daily = by_name["royalties-daily"]
    assert isinstance(daily, Endpoint)
    assert daily.spec.timezone == "Europe/Stockholm" and daily.spec.sla.calendar == "weekdays"
    assert daily.spec.start is None  # the examples start when applied: a fresh stack is not on fire (issue 21)
    started = Endpoint.model_validate({**daily.to_doc(), "spec": {**daily.to_doc()["spec"],
                                                                   "start": "2026-11-01T00:00:00+01:00"}})
    assert started.spec.start is not None and started.spec.start.utcoffset().total_seconds() == 0  # stored as UTC
    wf = by_name["aggregate-plays"]
    assert isinstance(wf, Workflow)
    assert wf.spec.retry.max_tries == 10 and wf.spec.resources == ["bigquery-slots"]
    assert wf.spec.produces == "plays-hourly" and wf.spec.depends_on == ["events.play"]
    play = by_name["play"]
    assert isinstance(play, EventType) and play.endpoint_name == "events.play"
    assert play.spec.schema_["required"] == ["user_id", "track_id", "ms_played"]
    assert isinstance(by_name["admins"], Team)


def test_defaults_are_filled_and_stable():
    doc = {"kind": "Workflow", "metadata": {"name": "w", "owner": "t"}, "spec": {"schedule": "daily", "image": "i"}}
    wf = Workflow.model_validate(doc)
    assert wf.apiVersion == "ferry/v1" and wf.spec.timezone == "UTC" and wf.spec.enabled
    assert wf.fingerprint() == Workflow.model_validate(wf.to_doc()).fingerprint()
    changed = Workflow.model_validate({**doc, "spec": {**doc["spec"], "image": "j"}})
    assert changed.fingerprint() != wf.fingerprint()


def test_to_doc_uses_the_schema_alias():
    et = EventType.model_validate({"kind": "EventType", "metadata": {"name": "e", "owner": "t"},
                                   "spec": {"schema": {"type": "object"}}})
    assert et.to_doc()["spec"]["schema"] == {"type": "object"}
    assert "schema_" not in et.to_doc()["spec"]


# -- errors: file, document, field path, reason; all of them at once ----------------------------------

BAD = """\
    apiVersion: ferry/v1
    kind: Endpoint
    metadata: {name: ok-one, owner: team-a}
    spec: {partitioning: hourly}
    ---
    kind: Endpoint
    metadata: {name: bad-fields, owner: team-a}
    spec:
      partitioning: fortnightly
      timezone: Europe/Stokholm
      sla: {error_after: 4 hours, severityy: page}
    ---
    kind: Workflow
    metadata: {name: Bad_Name}
    spec: {schedule: "0 0 * * * *", image: x}
    ---
    kind: Gadget
    metadata: {name: g}
    """


def test_every_error_of_a_file_at_once(tmp_path):
    problems = _problems(tmp_path, BAD)
    where = {(p["document"], p["field"]) for p in problems}
    assert where >= {
        (1, "spec.partitioning"), (1, "spec.timezone"), (1, "spec.sla.error_after"), (1, "spec.sla.severityy"),
        (2, "metadata.name"), (2, "metadata.owner"), (2, "spec.schedule"),
        (3, "kind"),
    }
    assert not any(p["document"] == 0 for p in problems)
    assert all(p["file"].endswith("m.yaml") for p in problems)
    reasons = {(p["document"], p["field"]): p["reason"] for p in problems}
    assert "fortnightly" in reasons[(1, "spec.partitioning")]
    assert "IANA" in reasons[(1, "spec.timezone")]
    assert "ISO 8601" in reasons[(1, "spec.sla.error_after")]
    assert "unknown field" in reasons[(1, "spec.sla.severityy")]
    assert "5 fields" in reasons[(2, "spec.schedule")]
    assert "Gadget" in reasons[(3, "kind")]
    named = [p for p in problems if p["document"] == 1]
    assert all(p["kind"] == "Endpoint" and p["name"] == "bad-fields" for p in named)


def test_errors_of_several_files_are_all_reported(tmp_path):
    _write(tmp_path, "a.yaml", "kind: Resource\nmetadata: {name: r}\nspec: {concurrency: -1}\n")
    _write(tmp_path, "b.yml", "kind: Team\nmetadata: {name: t}\nspec: {memberz: []}\n")
    _write(tmp_path, "ignored.txt", "not yaml: [")
    with pytest.raises(ValidationError) as info:
        loading.load([tmp_path])
    files = {Path(p["file"]).name for p in info.value.details}
    assert files == {"a.yaml", "b.yml"}


@pytest.mark.parametrize(("text", "field", "reason"), [
    ("kind: Endpoint\nmetadata: {name: e}\nspec: {}\n", "metadata.owner", "Field required"),
    ("kind: Endpoint\nmetadata: {name: e, owner: ''}\nspec: {}\n", "metadata.owner", "pattern"),
    ("kind: Endpoint\nmetadata: {name: -e, owner: t}\nspec: {}\n", "metadata.name", "pattern"),
    ("kind: Endpoint\nmetadata: {name: e, owner: t, colour: red}\nspec: {}\n", "metadata.colour", "unknown field"),
    ("kind: Endpoint\nmetadata: {name: e, owner: t}\nspec: {partitioning: PT7M}\n", "spec.partitioning", "divide a day"),
    ("kind: Endpoint\nmetadata: {name: e, owner: t}\nspec: {start: 2026-11-01T00:00:00}\n", "spec.start", "time zone"),
    ("kind: Endpoint\nmetadata: {name: e, owner: t}\nspec: {sla: {warn_after: PT5H, error_after: PT4H}}\n",
     "spec.sla", "warn_after"),
    ("kind: Workflow\nmetadata: {name: w, owner: t}\nspec: {schedule: daily}\n", "spec.image", "Field required"),
    ("kind: Workflow\nmetadata: {name: w, owner: t}\nspec: {schedule: daily, image: i, timeout: 1h}\n",
     "spec.timeout", "ISO 8601"),
    ("kind: Workflow\nmetadata: {name: w, owner: t}\nspec: {schedule: daily, image: i, retry: {max_tries: 0}}\n",
     "spec.retry.max_tries", "greater than or equal to 1"),
    ("kind: EventType\nmetadata: {name: e, owner: t}\nspec: {schema: {type: nonsense}}\n", "spec.schema",
     "JSON Schema"),
    ("kind: EventType\nmetadata: {name: e, owner: t}\nspec: {min_workers: 5, max_workers: 2}\n", "spec",
     "min_workers"),
    ("kind: Resource\nmetadata: {name: r}\nspec: {}\n", "spec.concurrency", "Field required"),
    ("apiVersion: ferry/v2\nkind: Resource\nmetadata: {name: r}\nspec: {concurrency: 1}\n", "apiVersion", "ferry/v1"),
    ("- just\n- a list\n", "(document)", "mapping"),
    ("metadata: {name: x}\n", "kind", "missing kind"),
])
def test_single_problems(tmp_path, text, field, reason):
    problems = _problems(tmp_path, text)
    assert [p["field"] for p in problems] == [field], problems
    assert reason in problems[0]["reason"]
    assert problems[0]["document"] == 0


def test_invalid_yaml_names_line_and_column(tmp_path):
    problems = _problems(tmp_path, "kind: Resource\nmetadata: {name: r\nspec: {concurrency: 1}\n")
    assert len(problems) == 1
    assert problems[0]["field"] == "(yaml)"
    assert "line 3, column" in problems[0]["reason"]


def test_multi_document_indexes_skip_empty_documents(tmp_path):
    text = "---\n---\nkind: Resource\nmetadata: {name: a}\nspec: {concurrency: 1}\n---\n" \
           "kind: Resource\nmetadata: {name: b}\nspec: {concurrency: x}\n---\n"
    problems = _problems(tmp_path, text)
    assert [(p["document"], p["field"], p["name"]) for p in problems] == [(1, "spec.concurrency", "b")]


def test_duplicates_are_errors(tmp_path):
    doc = "kind: Resource\nmetadata: {name: a}\nspec: {concurrency: 1}\n"
    _write(tmp_path, "one.yaml", doc)
    _write(tmp_path, "two.yaml", doc + "---\nkind: Team\nmetadata: {name: a}\n")  # other kind: fine
    with pytest.raises(ValidationError) as info:
        loading.load([tmp_path])
    (problem,) = info.value.details
    assert "declared twice" in problem["reason"] and problem["kind"] == "Resource"


def test_missing_path_is_an_error(tmp_path):
    with pytest.raises(ValidationError, match="no such file"):
        loading.load([tmp_path / "nope.yaml"])


def test_load_sourced_names_files(tmp_path):
    path = _write(tmp_path, "r.yaml", "kind: Resource\nmetadata: {name: a}\nspec: {concurrency: 1}\n")
    [(source, manifest)] = loading.load_sourced([path])
    assert source == str(path) and manifest.name == "a"


def test_problem_string_is_readable():
    p = loading.Problem("f.yaml", 2, "spec.timezone", "unknown IANA time zone", "Endpoint", "e")
    assert str(p) == "f.yaml[2] Endpoint/e spec.timezone: unknown IANA time zone"


# -- JSON Schema export --------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", sorted(KINDS))
def test_json_schema_is_valid_and_accepts_the_examples(kind):
    schema = json_schema(kind)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    docs = [d for f in sorted(EXAMPLES.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text())
            if d and d.get("kind") == kind]
    assert docs, f"no example of {kind}"
    for doc in docs:
        doc = json.loads(json.dumps(doc, default=lambda v: v.isoformat()))  # as an editor sees the text
        errors = list(validator.iter_errors(doc))
        assert not errors, [e.message for e in errors]


def test_json_schema_rejects_unknown_fields():
    validator = jsonschema.Draft202012Validator(json_schema("resources"))
    bad = {"kind": "Resource", "metadata": {"name": "r"}, "spec": {"concurrency": 1, "extra": 1}}
    assert list(validator.iter_errors(bad))


def test_kind_of_accepts_what_people_type():
    for kind, plural in PLURALS.items():
        assert kind_of(kind) == kind_of(kind.lower()) == kind_of(plural) == kind
    with pytest.raises(ValueError, match="unknown kind"):
        kind_of("gadgets")
