"""The for-you pipeline: candidates, filters, ranking, re-ranking, page cache, exposures."""
