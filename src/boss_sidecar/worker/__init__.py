"""The worker process: the only code of boss-sidecar that imports zenoh.

It runs as ``python -m boss_sidecar.worker`` in a fresh interpreter started by the host's
supervisor, never by ``fork()``. Nothing in the host imports this package.
"""
