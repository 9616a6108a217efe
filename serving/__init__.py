"""The HTTP API and the for-you pipeline: what apps call.

- :mod:`~serving.app` — the FastAPI app factory (``/api/v1``, health, local blob delivery);
- :mod:`~serving.routes` — thin routes (auth, events, feeds); :mod:`~serving.deps` and
  :mod:`~serving.errors` — their dependencies and the one JSON error shape;
- :mod:`~serving.feed` — the for-you pipeline (sources, filters, features, ranking, re-ranking,
  cursor pages) and the services it is built from;
- :mod:`~serving.ranking` — the ranker behind one contract: Ray Serve or in-process, models by
  MLflow alias reloaded without a restart;
- :mod:`~serving.cli` — ``reelrank serve api`` and ``reelrank deploy``;
  :mod:`~serving.demo` — the steps of ``reelrank demo``.
"""
