"""The command line: the Typer app, one module per command, the options they share."""

from .app import app, main

__all__ = ["app", "main"]
