"""`python -m longlm_cli.cli`: the same as the `longlm` command."""

from .app import main

main()
