"""At 80 columns (issue 21): tables fit without cutting the ids people copy (other columns wrap, then the
last ones are dropped and named), and every `--help` fits too."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from ferry.cli import common, main

LONG = "events.demo-click-with-a-rather-long-name"
BACKFILL = "bf-count-plays-5m-20261126T1400-20261126T1420-7f3a9c"


@pytest.fixture()
def narrow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common.console, "width", 80)


def test_status_at_80_columns_keeps_endpoint_names_whole(narrow: None, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{"endpoint": LONG, "owner": "team-playback", "partitioning": "hourly", "state": "late",
             "last_landed": "2026-11-26T14", "lag": "3 h 2 min", "incident": "error: 1,014 partitions",
             "recent": "●●●●●●●●●●●●"},
            {"endpoint": "plays-hourly", "owner": "team-playback", "partitioning": "hourly", "state": "ok"}]
    common.table(rows, ["endpoint", "owner", "partitioning", "state", "last_landed", "lag", "incident", "recent"])
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 80, out
    assert LONG in out and "plays-hourly" in out
    assert "…" not in out


def test_backfills_at_80_columns_keep_ids_whole_and_name_what_is_dropped(narrow: None,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{"id": BACKFILL, "workflow": "count-plays-5m", "start": "2026-11-26T14:00", "end": "2026-11-26T14:20",
             "concurrency": 2, "state": "RUNNING", "finished": "1 of 4", "counts": "2 running, 1 queued"}]
    common.table(rows, ["id", "workflow", "start", "end", "concurrency", "state", "finished", "counts"])
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 80, out
    assert BACKFILL in out and "count-plays-5m" in out
    flat = " ".join(out.split())
    assert "not shown at this width" in flat and "-o json has them" in flat


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [prefix]
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            out += _commands(cmd, (*prefix, name))
        else:
            out.append((*prefix, name))
    return out


def test_every_help_fits_80_columns() -> None:
    too_wide = []
    for path in _commands(main):
        r = CliRunner().invoke(main, [*path, "--help"], terminal_width=80)
        assert r.exit_code == 0, (path, r.output)
        too_wide += [f"ferry {' '.join(path)}: {line}" for line in r.output.splitlines() if len(line) > 80]
    assert not too_wide, "\n".join(too_wide)
    top = CliRunner().invoke(main, ["--help"], terminal_width=80).output
    for name in main.commands:
        assert f"  {name} " in top or f"  {name}\n" in top, name  # no command name cut
