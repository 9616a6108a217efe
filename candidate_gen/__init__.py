"""Which few hundred videos a for-you request considers.

- :mod:`~candidate_gen.catalog` — the video catalog as arrays (what every request filters);
- :mod:`~candidate_gen.faiss_index` and :mod:`~candidate_gen.index_store` — FAISS indexes over
  item-tower vectors, stored next to the model version they were built from;
- :mod:`~candidate_gen.ann` — a registered retriever with its index, kept in step with the
  catalog;
- :mod:`~candidate_gen.sources` — the candidate sources (ANN, following, trending, fresh,
  exploration) and their blending under quotas;
- :mod:`~candidate_gen.retrieval_cli` — ``reelrank index build``.
"""
