"""A/B experiments.

Definitions and their variants in the database (``spec``, ``catalog``, ``store``, ``models``),
the salted-hash assignment the for-you feed calls (``assignment``), the ``exposures`` worker
that logs served pages and interactions, per-user metrics (``metrics``), statistics
(``stats``), the analysis and its HTML report (``analysis``, ``report``), the CLI (``cli``),
and the offline A/B simulator fitted to KuaiRand (``simulator_fit``, ``simulator``,
``simulate_cli``); ``synthetic_logs`` makes logs with a known truth for tests and benchmarks.
"""
