"""`python -m parallelize`."""

from .cli import main

main()
