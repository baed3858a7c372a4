"""`runsteps export-otel`: derived events -> OpenTelemetry GenAI spans over OTLP.

Its own process with its own consumer group on the derived stream(s); the tracking worker
never imports it. `mapping` turns one derived event into span records (pure), `ids` derives
their trace and span ids from run and step ids, `otlp` builds the SDK's spans and exporter,
`reader` is its Redis side, `exporter` the per-partition loop, `http` its probes and metrics.
"""
