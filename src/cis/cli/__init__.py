"""``cis-node``: one module per subcommand, wired in ``cis.cli.main``."""
