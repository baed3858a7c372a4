"""runsteps: tracks run-step lifecycles from a Redis stream and publishes derived events.

Importing the package loads nothing else: `service.core.lifecycle`, the pure core, must stay
free of FastStream, redis and uvicorn (the wiring is `service.worker.app`).
"""
