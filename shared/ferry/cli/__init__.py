"""The ``ferry`` command line (docs/architecture.md)."""

from __future__ import annotations

import click

from ferry import __version__
from ferry.cli import core, deploy, dev
from ferry.datamon import cli as datamon_cli
from ferry.gabo import cli as gabo_cli
from ferry.styx import cli as styx_cli


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ferry")
def main() -> None:
    """Ferry: Datamon (is my data late?), Styx (what ran?), Gabo (did every event arrive?)."""


# Each module adds its commands; subsystems append theirs here.
for _module in (core, dev, deploy, gabo_cli, datamon_cli, styx_cli):
    _module.register(main)
