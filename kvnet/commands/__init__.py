"""Subcommands of the ``kvnet`` tool; each module has ``register(subparsers)``."""
