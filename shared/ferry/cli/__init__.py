"""The ``ferry`` command line (docs/architecture.md): one root group whose global options may appear
anywhere on the line."""

from __future__ import annotations

import os
from typing import Any

import click

from ferry import __version__
from ferry.cli import common, completion, core, deploy, dev
from ferry.cli.common import OUTPUTS, GlobalOptions
from ferry.datamon import cli as datamon_cli
from ferry.gabo import cli as gabo_cli
from ferry.styx import cli as styx_cli

# Options every command understands, wherever they stand: (names, takes a value)
GLOBAL_OPTIONS = {"--json": False, "-o": True, "--output": True, "--api": True, "--as": True, "--stack": True}


def hoist_global_options(args: list[str]) -> list[str]:
    """Move the global options (and their values) to the front, so ``ferry status --json``,
    ``ferry --json status`` and ``ferry status -o json`` parse alike. ``--`` ends the scan."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            rest += args[i:]
            break
        name = a.split("=", 1)[0] if a.startswith("--") else a
        if name in GLOBAL_OPTIONS:
            if GLOBAL_OPTIONS[name] and "=" not in a and i + 1 < len(args):
                front += [a, args[i + 1]]
                i += 2
                continue
            front.append(a)
        elif a.startswith("-o") and len(a) > 2 and not a.startswith("--"):  # -ojson
            front.append(a)
        else:
            rest.append(a)
        i += 1
    return front + rest


class FerryGroup(click.Group):
    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist_global_options(args))


@click.group(cls=FerryGroup, context_settings={"help_option_names": ["-h", "--help"]},
             epilog="\b\nExamples:\n  $ ferry dev up\n  $ ferry apply -f examples/manifests/\n"
                    "  $ ferry status -o json\n\nEnvironment: FERRY_USER (as --as), FERRY_API (as --api), "
                    "FERRY_HOME (as --stack), "
                    "FERRY_NOW (an ISO instant the local stack takes as now, e.g. 2026-11-26T15:00:00Z).")
@click.version_option(__version__, prog_name="ferry")
@click.option("-o", "--output", type=click.Choice(OUTPUTS), default=None,
              help="Output format: table (for people, default), json or yaml. Example: -o yaml")
@click.option("--json", "as_json", is_flag=True, help="Same as -o json.")
@click.option("--api", default=None, metavar="URL",
              help="Ferry API base URL (env FERRY_API; default: the local stack). Example: --api http://127.0.0.1:8700")
@click.option("--stack", default=None, metavar="HOME",
              help="The local stack to talk to: its .ferry directory or the folder holding it (env FERRY_HOME; "
                   "default: the nearest .ferry/ here or above, else the one running stack `ferry dev up` "
                   "registered). Example: --stack ~/src/ferry")
@click.option("--as", "user", default=None, metavar="USER",
              help="Act as this user, an e-mail (env FERRY_USER; default: the local stack's, see `ferry whoami`). "
                   "Example: --as alice@example.com")
@click.pass_context
def main(ctx: click.Context, output: str | None, as_json: bool, api: str | None, stack: str | None,
         user: str | None) -> None:
    """Ferry: Datamon (is my data late?), Styx (what ran?), Gabo (did every event arrive?).

    Exit codes: 0 ok, 2 bad arguments, 3 rejected input, 4 server or infrastructure error, 5 not authorized.
    """
    common.STACK_OVERRIDE = stack
    ctx.obj = GlobalOptions(output=output or ("json" if as_json else "table"), api=api,
                            user=user or os.environ.get("FERRY_USER") or None)


def _register(*modules: Any) -> None:
    for module in modules:
        module.register(main)


# Each module adds its commands to ``main``.
_register(core, dev, deploy, completion, gabo_cli, datamon_cli, styx_cli)
