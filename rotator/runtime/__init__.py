"""Entry points: the CLI, the daemon and the Lambda handlers, and the wiring they share."""
