"""The model cards (one YAML per OPT size), installed as the package data carbonbench.model.

This file only makes the folder a package, so that importlib.resources finds the cards in
every install layout (pyproject.toml maps model/ to carbonbench.model)."""
