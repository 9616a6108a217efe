"""Measuring code, kept out of the product packages: one module per ``reelrank bench NAME``
(``bus``, ``features``, ``ranker``, ``retrieval``, ``serve``; ``loadgen`` is the serve
benchmark's load generator), the report writer (``report``: ``benchmarks/results/<name>.md``),
the commands (``cli``), and the real servers that tests and benchmarks start (``servers``:
embedded PostgreSQL, a Kafka-protocol broker). It may import any package; none imports it.
"""
