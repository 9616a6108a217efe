"""Search over videos and users (issue 15): one interface, two lexical engines chosen by the
database URL, relevance blended with semantic similarity.

- :mod:`.models` — the ``search_videos`` documents table;
- :mod:`.backends` — :class:`~.backends.LexicalBackend`: SQLite FTS5 (BM25) or PostgreSQL
  full-text search (``ts_rank``), :func:`~.backends.lexical_backend` picks by dialect;
- :mod:`.documents` — what a video's document holds, index / remove / reindex from the DB;
- :mod:`.semantic` — the in-process vector index over the documents' MiniLM embeddings;
- :mod:`.service` — :class:`~.service.VideoSearch`: filters, the lexical + semantic blend,
  sorting and cursors; user search.
"""
