"""PyTorch ``nn.Module``s only: no I/O, no settings, nothing but tensors in and out.

- :mod:`~models.two_tower` — the retrieval model (user tower, item tower, log-Q corrected
  in-batch softmax);
- :mod:`~models.ranker` — the multi-task ranker (shared experts, one head per task, the final
  score as a weighted sum of task predictions);
- :mod:`~models.embeddings` — layers the towers share (id embeddings that never raise on an
  unknown id, pooling, MLPs);
- :mod:`~models.content` — pooling and projection around pretrained content backbones (their
  weights are loaded by :mod:`training.content`).
"""
