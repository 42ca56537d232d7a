"""The worker process: the only code of boss-sidecar that imports zenoh.

It runs as ``python -m boss_sidecar.worker`` in a fresh interpreter started by the host's
supervisor, or is forked from the template (``boss_sidecar.worker.template``), a process that
imported zenoh but never opened a session. Nothing in the host imports this package.
"""
