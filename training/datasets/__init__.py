"""Data sets: adapters for real data (KuaiRand, MicroLens), the synthetic world, the store.

Every source becomes the canonical tables of :mod:`core.dataset_schema`, written by
:func:`store.write_dataset` and read back with :func:`store.load_dataset`.
"""

from training.datasets.store import Dataset, describe, list_datasets, load_dataset, write_dataset

__all__ = ["Dataset", "describe", "list_datasets", "load_dataset", "write_dataset"]
