"""The core: plain synchronous Python, no event loop, no files.

Model (versions, metadata, changes), schema and indexes, versioned tables, read and write
transactions with their change sets, snapshots, event matching and routing to watchers'
queues, the commit history, the encoding of objects, the errors, and the Proposer protocol
the store commits through (with the in-memory proposer). It can be tested without an event
loop, as h11 is. Internal: the API is ``watchstore``'s top level.
"""
