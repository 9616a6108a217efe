"""Everything between a data set and a registered model.

- :mod:`~training.datasets` — adapters for the real data (KuaiRand, MicroLens), the synthetic
  world, the on-disk data-set store, loading a world into the platform;
- :mod:`~training.retrieval` — the two-tower retriever and its baselines: data, training,
  evaluation, the registered bundle;
- :mod:`~training.ranker` — the multi-task ranker and its baselines, same shape;
- :mod:`~training.content` — offline text/image encoders (nothing is downloaded at run time);
- :mod:`~training.registry` — the one MLflow module: tracking, registering, resolving
  ``models:/NAME@ALIAS``, moving aliases, logging and loading bundles.
"""
