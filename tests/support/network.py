"""What the ``no_network`` fixture (tests/conftest.py) raises where code reaches for the network."""


class NetworkUsed(OSError):
    pass
