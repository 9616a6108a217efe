"""The ranker behind the feed: model loading by alias, in-process or on Ray Serve."""

import warnings

# Ray Serve's own config models use a form pydantic 2 deprecates; every process that imports
# it (the API and each of its workers) printed the warning. Ours are not hidden: the filter
# names Ray Serve's modules.
warnings.filterwarnings("ignore", "Using extra keyword arguments on `Field` is deprecated",
                        module=r"ray\.serve\.")
