"""Development tooling: the demo, sample data and a private redis-server. The runtime never
imports this package (the CLI's `demo` subcommand loads it when it runs)."""
