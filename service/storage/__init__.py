"""The Redis side: one client per partition, key names, the Lua scripts and what calls them.

Each module has one job (the commit, pending entries, trimming, reads, dead letters); the
scripts' keys and arguments are built by the module that calls them, and nowhere else.
"""
