"""`python -m parallelize`."""

from .cli.app import main

main()
