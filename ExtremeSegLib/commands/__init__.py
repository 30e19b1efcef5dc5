"""One module per ``extremeseg`` subcommand (see ``ExtremeSegLib/cli.py``)."""
