"""carbonbench's command line in this process, as the tests call it."""

from __future__ import annotations

from click.testing import CliRunner, Result


def invoke_cli(*args, env: dict | None = None, **kwargs) -> Result:
    """``carbonbench ARGS`` through click's CliRunner; arguments are str()-ed, so paths may be
    given as they are. ``env`` is added to the environment for the call."""
    from carbonbench.cli import cli

    return CliRunner().invoke(cli, [str(a) for a in args], env=env, **kwargs)
