"""carbonbench: joules, grams of CO2e and dollars per token for the OPT family."""

__version__ = "0.1.0"
