"""The `ordnance` command: one click group, one module per subcommand."""
