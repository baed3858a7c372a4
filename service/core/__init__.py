"""The pure core: lifecycle rules, the state codec, decoding, ops and the batch builder.

Nothing here imports redis, FastStream or uvicorn, reads a clock it is not given, or does
I/O: values in, values out, tested without servers (`make test-fast`).
"""
