"""The worker: the only FastStream wiring, the per-partition pipeline, recovery and stall
loops, healing and the telemetry they count into."""
