"""The `coderunner` command line."""
