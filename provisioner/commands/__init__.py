"""CLI command groups, each registering on ``provisioner.cli.app``."""
