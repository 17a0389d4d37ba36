"""`python -m cli`: the `coderunner` command."""

from cli.main import main

main()
