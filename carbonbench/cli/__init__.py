"""The `carbonbench` command: a click group of thin commands, one module each.

User errors (``carbonbench.errors.UserError``) become click errors with exit status 2,
printed as one line and never with a traceback, both from the shell and under CliRunner.
"""

from __future__ import annotations

import importlib

import click

from carbonbench import __version__
from carbonbench.errors import UserError

# Each name is a module under carbonbench.cli defining a click command of the same name.
COMMANDS = ["run", "models", "env", "estimate", "plan", "report", "compare"]


class UserFacingError(click.ClickException):
    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(message.split()))


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UserError as exc:
            raise UserFacingError(str(exc)) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="carbonbench")
def cli() -> None:
    """Measure the joules, grams of CO2e and dollars that OPT models cost per token."""


for _name in COMMANDS:
    _module = importlib.import_module(f"carbonbench.cli.{_name}")
    cli.add_command(getattr(_module, _name))


def main() -> None:
    cli(prog_name="carbonbench")
