"""The epoch log: the default durable proposer, on the local disk.

Records and segments and their formats, the codecs of snapshots and changes, the manifest,
the store's lock, checked and fsynced file operations, encryption at rest, compaction (in a
forked child or in chunks), the raw readers the command's tools use, and ``LogProposer``
with its group committer. Built on the core; runs on the event loop through
``watchstore._runtime``. Internal: the API is ``watchstore``'s top level.
"""
