"""The edge: HTTP (probes, query API, AsyncAPI page), Prometheus metrics, logs, the CLI."""
