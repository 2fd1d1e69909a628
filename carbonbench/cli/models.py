"""`carbonbench models`: the model cards and their exact parameter counts."""

from __future__ import annotations

import click

from carbonbench.cli.output import echo_json, format_option
from carbonbench.cli.table import print_table
from carbonbench.errors import UserError


@click.command()
@format_option("Output format; JSON has every architecture field and the parameter count.")
def models(fmt: str) -> None:
    """List the model cards (model/*.yaml) with parameter counts computed from the architecture.

    Cards are looked up in $CARBONBENCH_MODEL_DIR, ./model, then the cards installed with
    carbonbench; the first card of a name wins.
    """
    from dataclasses import asdict

    from carbonbench.opt.card import card_dirs, known_cards, read_card

    cards = sorted((read_card(path) for path in known_cards().values()), key=lambda c: (c.param_count(), c.name))
    dirs = card_dirs()
    if not cards:
        where = (
            ", ".join(str(d) for d in dirs) or "no directory (no $CARBONBENCH_MODEL_DIR, ./model or installed cards)"
        )
        raise UserError(
            f"no model cards found, looked in {where}; reinstall carbonbench, or point "
            "CARBONBENCH_MODEL_DIR at a folder of card .yaml files"
        )
    if fmt == "json":
        echo_json(
            {
                "cards": [
                    {
                        "name": c.name,
                        "path": c.path,
                        "architecture": asdict(c.architecture),
                        "parameters": c.param_count(),
                        "fp16_bytes": 2 * c.param_count(),
                        "checkpoint": c.checkpoint,
                    }
                    for c in cards
                ],
                "card_dirs": [str(d) for d in dirs],
            }
        )
        return
    rows = []
    for card in cards:
        a, n = card.architecture, card.param_count()
        rows.append(
            [
                card.name,
                a.n_layers,
                a.n_heads,
                a.d_model,
                a.ffn_dim,
                f"{a.layer_norm}-LN",
                f"{n:,}",
                _human(n),
                f"{2 * n / 1e9:.2f}",
            ]
        )
    print_table(["card", "layers", "heads", "d_model", "ffn_dim", "norm", "parameters", "≈", "fp16 GB"], rows)
    click.echo("cards from: " + ", ".join(str(d) for d in dirs))


def _human(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(n)
