"""The ``watchstore`` command: inspect, verify, dump, get, watch, load, back up and restore,
salvage, compact, snapshots, roll back, locks, completion, demo. It uses the library as any
program would, through the layers below it (``main`` is the entry point)."""
