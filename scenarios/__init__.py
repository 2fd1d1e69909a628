"""The shipped benchmark scenarios (YAML), installed as the package data carbonbench.scenarios.

This file only makes the folder a package, so that importlib.resources finds the scenarios in
every install layout (pyproject.toml maps scenarios/ to carbonbench.scenarios)."""
