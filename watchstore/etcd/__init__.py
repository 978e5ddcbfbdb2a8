"""The etcd proposer: a lean client of etcd's JSON gateway, and ``EtcdProposer``, which
commits each transaction as one etcd txn and feeds the local replica from a watch.

Built on the core; runs on the event loop through AnyIO. Internal: the API is
``watchstore``'s top level (``pip install "watchstore[etcd]"``).
"""
