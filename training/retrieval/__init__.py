"""Retrieval training and evaluation: which few hundred videos a for-you request considers.

``data`` (timelines, positives, splits) -> ``features`` (arrays and tensors) -> ``trainer``
(the two-tower) and ``baselines`` -> ``metrics`` (the one evaluation) -> ``pipeline`` (tune on
validation, refit, test) -> ``bundle`` (the trained model and its MLflow pyfunc) -> ``cli``.
"""

DATASET_KINDS = ("kuairand", "microlens", "synth")
