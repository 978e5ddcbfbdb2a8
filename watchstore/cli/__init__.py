"""The ``watchstore`` command: inspect, verify, dump, compact, snapshots, roll back, locks,
demo. It uses the library as any program would, through the layers below it."""
