"""Ranker training and evaluation: how the for-you feed orders a user's few hundred candidates.

``pipeline`` (features from the Feast repo, split, fit, evaluate) -> ``features`` (the
featurizer) and ``data`` (tasks, encoded splits) -> ``trainer`` (the multi-task network of
``models.ranker``) and ``baselines`` (LightGBM) -> ``metrics`` (AUC, log-loss, GAUC,
calibration) -> ``bundle`` (``RankerBundle``, ``load_ranker``, its MLflow pyfunc) ->
``cli`` (``train ranker``, ``rank``); its benchmark is ``benchmarks/ranker.py``.
"""
