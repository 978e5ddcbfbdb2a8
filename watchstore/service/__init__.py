"""The store service, on AnyIO (trio or asyncio): ``open_store`` and ``Store``.

It serialises writers, hands change sets to the proposer, applies what commits, publishes
events to watchers, runs each proposer's background work in its own task group, and serves
batches, watches, forked replicas and the Syncer. It knows proposers only through the
Proposer protocol of ``watchstore.core.proposer``. Internal: the API is ``watchstore``'s top
level.
"""
