"""`carbonbench models`: the model cards and their exact parameter counts."""

from __future__ import annotations

import click

from carbonbench.cli.table import print_table


@click.command()
def models() -> None:
    """List the model cards (model/*.yaml) with parameter counts computed from the architecture."""
    from carbonbench.opt.card import card_dirs, known_cards, read_card

    rows = []
    for name, path in sorted(known_cards().items(), key=lambda kv: read_card(kv[1]).param_count()):
        card = read_card(path)
        a = card.architecture
        n = card.param_count()
        rows.append([name, a.n_layers, a.n_heads, a.d_model, a.ffn_dim, f"{a.layer_norm}-LN",
                     f"{n:,}", _human(n), f"{2 * n / 1e9:.2f}"])
    print_table(["card", "layers", "heads", "d_model", "ffn_dim", "norm", "parameters", "≈", "fp16 GB"], rows)
    click.echo("cards from: " + ", ".join(str(d) for d in card_dirs()))


def _human(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(n)
