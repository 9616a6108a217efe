"""What every layer shares and nothing of ours is imported by: the bottom of the stack.

- :mod:`core.config` — the one ``Settings`` object (``REELRANK_*``, every backend by URL);
- :mod:`core.events` — versioned event schemas and their JSON wire format;
- :mod:`core.dataset_schema` — the canonical interaction/item/user tables and their validation;
- :mod:`core.clock` — UTC now, epoch milliseconds, ``MINUTE_MS``/``HOUR_MS``/``DAY_MS``;
- :mod:`core.logging` — key=value logging for every process;
- :mod:`core.tracing` — optional OpenTelemetry traces (a span per request and feed stage);
- :mod:`core.cli` — the ``reelrank`` command root and its tables of commands, demo steps and
  workers (named as strings, so ``core`` still imports nothing above it).
"""
