"""Benchmarks of watchstore, run as ``python -m benchmarks FAMILY [options]``.

Each family is a module with ``main(argv) -> int`` registered in ``benchmarks.__main__``; what
they share (the stored object and schema, timings, formatting, header, options) is in
``benchmarks._common``.
Every family measures watchstore side by side with its peers in the same process and run, so
that ratios stay meaningful on a noisy shared machine.
"""
