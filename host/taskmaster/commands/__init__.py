"""The `taskmaster` subcommands, grouped by what they act on."""
