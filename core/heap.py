"""Keep the cyclic garbage collector off a server's long-lived startup heap.

An API process holds ~0.7-1M container objects after startup (the catalog, the models, Ray's
client, the libraries). Python's full collections walk all of them; with requests allocating
thousands of objects each (a 1,000-comment thread page), those walks cost ~7 ms per request,
a third of its CPU (``reelrank bench social``'s thread reads). Freezing the heap once startup
is done moves it to the permanent generation, which collections skip; objects created later
are collected as usual.
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> int:
    """Collect what startup left as garbage, then freeze the rest; returns how many objects
    were frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
