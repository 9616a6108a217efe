"""The feature store: a Feast repo fed by batch snapshots and the event stream.

What other packages call (all typed, documented in their modules):

- serving: :class:`features.online.FeatureReader` — ``reader.get(user_id, video_ids)`` returns
  :class:`~features.online.OnlineFeatures` (the user's scalars and lists, a DataFrame of item
  features per candidate) with defaults for unknown entities and a time budget;
- training: :func:`features.training_set.build_training_set` — one row per logged impression
  with its features as of the impression's time (also ``reelrank features training-set``);
- both: :mod:`features.schema` — the column lists (``USER_COLUMNS``, ``ITEM_COLUMNS``,
  ``USER_LISTS``) and :func:`~features.schema.assemble`, the one place features are derived.

Inside: :mod:`~features.repo` (entities and views, as data), :mod:`~features.store`
(``feature_store.yaml`` from Settings, apply, materialize), :mod:`~features.batch` (snapshots
of the interaction log), :mod:`~features.stream` (``reelrank worker features``),
:mod:`~features.windows` (the minute-bucket arithmetic shared by all three paths).
"""
