"""The ranker behind the feed: model loading by alias, in-process or on Ray Serve."""
