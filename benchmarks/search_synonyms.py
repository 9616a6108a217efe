"""Does the semantic blend find more than lexical search alone? Synonym queries on MicroLens.

The corpus is MicroLens-50K's 19,220 titles, indexed exactly as the product indexes videos
(``search_videos`` + SQLite FTS5, MiniLM vectors). Queries come from a lexicon of synonym
groups (:data:`GROUPS`: cat / kitten / kitty, funny / hilarious / ...): a query names two
concepts with one randomly drawn word of each group ("hilarious kitty"), and its relevant
titles are those that mention both concepts in any of their words. Lexical search finds
only the titles that use the query's own words; the blend should also find the rest.

Query pairs are split by a hash into validation (where the lexical weight and the similarity
floor are chosen) and held-out test (reported). Metrics per query: recall@50 and nDCG@10
(binary relevance); the blend's gain over lexical alone on the test queries comes with a
paired-bootstrap 95% interval.
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import insert

from benchmarks.report import table, write_report
from core.clock import utcnow
from platform_services.search.backends import VideoFilter
from platform_services.search.documents import to_blob
from platform_services.search.models import SearchEmbedding, SearchVideo
from platform_services.search.semantic import SemanticIndex
from platform_services.search.service import VideoSearch
from platform_services.storage.db import make_engine, migrate, session_factory
from platform_services.storage.models import User, Video, VideoStatus

# Synonym groups (a held-out test collection's lexicon, written once, not tuned on results).
GROUPS: list[tuple[str, ...]] = [
    ("cat", "kitten", "kitty", "cats", "kittens"),
    ("dog", "puppy", "doggy", "dogs", "puppies"),
    ("funny", "hilarious", "comedy", "laugh", "humor"),
    ("food", "meal", "dish", "cuisine", "dishes"),
    ("delicious", "tasty", "yummy"),
    ("beautiful", "gorgeous", "pretty", "lovely"),
    ("song", "music", "songs", "singing", "melody"),
    ("dance", "dancing", "dancer"),
    ("baby", "infant", "toddler", "babies"),
    ("child", "kid", "kids", "children"),
    ("girl", "woman", "lady", "girls", "women"),
    ("boy", "man", "guy", "boys", "men"),
    ("scary", "horror", "creepy", "terrifying"),
    ("car", "vehicle", "automobile", "cars"),
    ("game", "gaming", "games", "gameplay"),
    ("movie", "film", "cinema", "movies"),
    ("fight", "battle", "fighting", "combat"),
    ("love", "romance", "romantic"),
    ("cute", "adorable", "sweet"),
    ("house", "home"),
    ("sea", "ocean", "beach"),
    ("cook", "cooking", "recipe", "chef"),
    ("anime", "cartoon", "animation", "comic"),
    ("phone", "mobile", "smartphone"),
    ("fish", "fishing"),
    ("wife", "husband", "couple", "marriage"),
    ("mother", "mom", "mum", "father", "dad", "parents"),
    ("teacher", "student", "school", "class"),
    ("money", "cash", "rich"),
    ("fitness", "workout", "exercise", "gym"),
]
K_RECALL, K_NDCG = 50, 10
WEIGHTS = [round(w, 1) for w in np.linspace(0, 1, 11)]
FLOORS = [0.3, 0.4, 0.5]


def _words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


def load_titles(microlens: Path, limit: int | None = None) -> list[str]:
    """MicroLens titles in item order; ``limit``: a seeded random sample of that many."""
    with gzip.open(microlens / "MicroLens-50k_titles.csv.gz", "rt") as f:
        titles = [str(t)[:200] for t in pd.read_csv(f)["title"].fillna("")]
    if limit is not None and limit < len(titles):
        keep = np.sort(np.random.default_rng(0).choice(len(titles), limit, replace=False))
        titles = [titles[i] for i in keep]
    return titles


def make_queries(titles: list[str], seed: int = 0, max_relevant: int = 300
                 ) -> list[tuple[str, set[int], str]]:
    """(query, relevant title positions, split) for every concept pair both mentioned by 3 to
    ``max_relevant`` titles."""
    rng = np.random.default_rng(seed)
    words = [_words(t) for t in titles]
    mentions = [{i for i, w in enumerate(words) if w & set(g)} for g in GROUPS]
    out = []
    for a, b in itertools.combinations(range(len(GROUPS)), 2):
        relevant = mentions[a] & mentions[b]
        if not 3 <= len(relevant) <= max_relevant:
            continue
        q = f"{rng.choice(GROUPS[a])} {rng.choice(GROUPS[b])}"
        split = "val" if int(hashlib.sha256(q.encode()).hexdigest(), 16) % 2 else "test"
        out.append((q, relevant, split))
    return out


def build_index(titles: list[str], vectors: np.ndarray, url: str):  # noqa: ANN201
    """A migrated SQLite database holding the titles as searchable documents."""
    migrate(url)
    sessions = session_factory(make_engine(url))
    now = utcnow()
    with sessions.begin() as s:
        s.add(User(id=1, username="microlens", email="m@x.io", password_hash="x"))
        s.flush()
        s.execute(insert(Video), [{"id": i + 1, "owner_id": 1, "title": t,
                                   "status": VideoStatus.READY, "created_at": now}
                                  for i, t in enumerate(titles)])
        s.execute(insert(SearchVideo), [
            {"video_id": i + 1, "owner_id": 1, "title": t, "description": "", "tags": "",
             "creator": "", "category": None, "duration_ms": None, "created_at": now,
             "indexed_at": now} for i, t in enumerate(titles)])
        s.execute(insert(SearchEmbedding), [
            {"video_id": i + 1, "embedding": to_blob(vectors[i]), "indexed_at": now}
            for i in range(len(titles))])
    return sessions


def metrics(ranked: list[int], relevant: set[int]) -> tuple[float, float]:
    """recall@K_RECALL and binary nDCG@K_NDCG of a ranked list of title positions."""
    recall = len(set(ranked[:K_RECALL]) & relevant) / len(relevant)
    dcg = sum(1 / np.log2(i + 2) for i, v in enumerate(ranked[:K_NDCG]) if v in relevant)
    ideal = sum(1 / np.log2(i + 2) for i in range(min(K_NDCG, len(relevant))))
    return recall, dcg / ideal


def evaluate(sessions, search: VideoSearch, queries) -> np.ndarray:  # noqa: ANN001
    """[n_queries, 2] (recall, nDCG) of ``search`` over ``queries``."""
    out = []
    with sessions() as s:
        for q, relevant, _ in queries:
            page = search.search(s, 0, q, VideoFilter(), "relevance", 0, K_RECALL)
            out.append(metrics([h.video_id - 1 for h in page.hits], relevant))
    return np.asarray(out)


def bootstrap_gain(a: np.ndarray, b: np.ndarray, n: int = 2000, seed: int = 0
                   ) -> tuple[float, float, float]:
    """Mean of b - a with a paired-bootstrap 95% interval."""
    d = b - a
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), (n, len(d)))].mean(axis=1)
    return float(d.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def run_bench(microlens: Path, cache_dir: Path | None, out_dir: Path,
              limit: int | None = None) -> Path:
    from training.content import text_embeddings

    titles = load_titles(microlens, limit)
    queries = make_queries(titles)
    t0 = time.perf_counter()
    vectors = text_embeddings(titles, cache_dir)
    encode_s = time.perf_counter() - t0
    qvec = dict(zip([q for q, _, _ in queries],
                    text_embeddings([q for q, _, _ in queries], cache_dir), strict=True))
    encode = lambda texts: np.stack([qvec[t] for t in texts])  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        sessions = build_index(titles, vectors, f"sqlite:///{tmp}/synonyms.db")
        index = SemanticIndex(sessions)
        index.refresh()
        val = [q for q in queries if q[2] == "val"]
        test = [q for q in queries if q[2] == "test"]
        lexical = VideoSearch(None, None)
        grid = {(w, f): evaluate(sessions, VideoSearch(index, encode, w, 200, f), val)
                [:, 0].mean() for w in WEIGHTS for f in FLOORS}
        w, floor = max(grid, key=lambda k: (grid[k], k[0]))
        blend = VideoSearch(index, encode, w, 200, floor)
        lex_val, lex_test = evaluate(sessions, lexical, val), evaluate(sessions, lexical, test)
        blend_test = evaluate(sessions, blend, test)
        sem_only = evaluate(sessions, VideoSearch(index, encode, 0.0, 200, floor), test)
    rows = [[name, f"{m[:, 0].mean():.3f}", f"{m[:, 1].mean():.3f}"]
            for name, m in (("lexical alone (FTS5 BM25)", lex_test),
                            (f"blend (w={w}, floor={floor})", blend_test),
                            ("semantic alone (w=0)", sem_only))]
    gains = [[metric, *(f"{x:+.3f}" for x in bootstrap_gain(lex_test[:, j], blend_test[:, j]))]
             for j, metric in enumerate((f"recall@{K_RECALL}", f"nDCG@{K_NDCG}"))]
    grid_rows = [[f"{f}", *(f"{grid[(w_, f)]:.3f}" for w_ in WEIGHTS)] for f in FLOORS]
    sample = " (a seeded random sample)" if limit else ""
    body = f"""
Command: `reelrank bench search-synonyms{f" --titles {limit}" if limit else ""}`.
Corpus: {len(titles):,} MicroLens-50K titles{sample} (MiniLM encoding {encode_s:.1f} s,
cached after the first run); {len(queries)} two-concept synonym queries from {len(GROUPS)}
synonym groups, {len(val)} for validation and {len(test)} held out. Relevant: titles
mentioning both concepts in any word of their group. Lexical recall@50 on validation:
{lex_val[:, 0].mean():.3f}.

## Held-out test queries

{table(["search", f"recall@{K_RECALL}", f"nDCG@{K_NDCG}"], rows)}

Gain of the blend over lexical alone (paired bootstrap, 2,000 resamples):

{table(["metric", "mean gain", "95% low", "95% high"], gains)}

## Validation grid (mean recall@{K_RECALL}): lexical weight w across, similarity floor down

{table(["floor", *map(str, WEIGHTS)], grid_rows)}

Chosen on validation: w = {w}, floor = {floor} (ties go to the larger lexical weight); the
settings `search_lexical_weight` / `search_min_similarity` default to them.
Example test queries: {", ".join(repr(q) for q, _, _ in test[:8])}.
"""
    return write_report("search_synonyms", "Search: lexical vs lexical + semantic blend on "
                        "synonym queries", body, out_dir)


