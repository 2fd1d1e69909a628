"""The `carbonbench` command: a click group of thin commands, one module each.

User errors (``carbonbench.errors.UserError``) become click errors with exit status 2,
printed as one line and never with a traceback, both from the shell and under CliRunner.
A message may quote a file (a key, a model type, a prompt): terminal controls in it are
shown escaped (carbonbench.reading.printable), never sent to the terminal.

Each command imports what it runs inside its function, not at module level: every
command module is imported to build the group, and ``--help`` or ``models`` must not pay
for torch, pandas or plotly.
"""

from __future__ import annotations

import importlib

import click

from carbonbench import __version__
from carbonbench.errors import UserError
from carbonbench.reading import printable

# Each name is a module under carbonbench.cli defining a click command of the same name.
COMMANDS = ["run", "models", "env", "estimate", "plan", "report", "compare", "export", "recommend"]


class UserFacingError(click.ClickException):
    exit_code = 2

    def __init__(self, message: str):
        super().__init__(printable(" ".join(message.split())))


# Bare `carbonbench` shows the help through this UsageError; keep click's behaviour for it.
_SHOWS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


class _Group(click.Group):
    """Turns user errors and bad flags, in the group or any command, into one Error line."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except _SHOWS_HELP:
            raise
        except click.UsageError as exc:
            raise UserFacingError(exc.format_message()) from None

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UserError as exc:
            raise UserFacingError(str(exc)) from None
        except _SHOWS_HELP:
            raise
        except click.UsageError as exc:
            raise UserFacingError(exc.format_message()) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="carbonbench")
def cli() -> None:
    """Measure the joules, grams of CO2e and dollars that OPT models cost per token."""


for _name in COMMANDS:
    _module = importlib.import_module(f"carbonbench.cli.{_name}")
    cli.add_command(getattr(_module, _name))


def main() -> None:
    cli(prog_name="carbonbench")
