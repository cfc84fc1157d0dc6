"""The benchmark harness: ``python -m benchmarks.run --help``.

Nothing here imports a framework: each backend and configuration runs in its own fresh
process (``benchmarks.worker``), which reaches torch or JAX only through
``backends.<name>.train`` and ``backends.<name>.bench``.
"""
