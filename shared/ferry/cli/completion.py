"""``ferry completion bash|zsh|fish``: the shell completion script (click's), to source or install."""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class

from ferry.cli.common import examples_epilog


def register(main: click.Group) -> None:
    @main.command("completion", epilog=examples_epilog("source <(ferry completion bash)",
                                                       "ferry completion fish > ~/.config/fish/completions/ferry.fish"))
    @click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
    def completion(shell: str) -> None:
        """Print the completion script for SHELL (bash, zsh or fish)."""
        cls = get_completion_class(shell)
        assert cls is not None
        click.echo(cls(main, {}, "ferry", "_FERRY_COMPLETE").source())
