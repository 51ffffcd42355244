"""One module per `sprint` subcommand; each defines `register(subparsers)` and stays thin."""
