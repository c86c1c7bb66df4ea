"""`python -m luigiflow.cli` is the `luigiflow` command."""

from luigiflow.cli import main

main()
