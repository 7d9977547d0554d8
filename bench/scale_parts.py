"""Parts of ``bench.scale``: a seeded synthetic catalog from the Home Depot vocabulary, the
stand-in item vectors, and the per-size measurements.

**Synthetic titles.** Each synthetic item starts from a real Home Depot title (drawn at
random), keeps each of its tokens with probability 0.6, replaces the others with tokens drawn
from the catalog's unigram distribution, and ends with a unique model-number token, so titles
look like catalog titles, share its vocabulary and are all distinct. Seeded: same ``n`` and
seed, same catalog.

**Stand-in item vectors (documented substitute).** Encoding 1M titles with the real encoder
(all-MiniLM-L6-v2) takes ~35 min on 2 cores, and the encoder's cost per item is not what
these curves measure. Item vectors are therefore a fixed random projection of each title's
idf-weighted bag of words to the encoder's width (384), L2-normalised — similar titles get
similar vectors, so the semantic-ID clustering and the tree shape behave as on real
vectors. Query latency uses the **real** encoder on the query text (its cost does not depend
on the catalog size) followed by the real constrained decoder over the synthetic tree.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

DIM = 384
TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9./#-]*")


class Vocabulary:
    """Real titles as token-id arrays, and the unigram distribution and idf of their tokens."""

    def __init__(self, products: Path) -> None:
        titles = [json.loads(line)["title"] for line in products.read_text().splitlines() if line.strip()]
        index: dict[str, int] = {}
        rows = []
        for t in titles:
            toks = TOKEN.findall(t) or ["item"]
            rows.append(np.array([index.setdefault(w, len(index)) for w in toks], np.int64))
        self.words = np.array(list(index), dtype=object)
        self.lengths = np.array([len(r) for r in rows])
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)])
        self.flat = np.concatenate(rows)
        counts = np.bincount(self.flat, minlength=len(self.words)).astype(np.float64)
        self.unigram = counts / counts.sum()
        df = np.bincount(np.unique(np.stack([np.repeat(np.arange(len(rows)), self.lengths), self.flat], 1),
                                   axis=0)[:, 1], minlength=len(self.words))
        self.idf = np.log((1 + len(rows)) / (1 + df)).astype(np.float32) + 1.0


def synthetic_catalog(vocab: Vocabulary, n: int, seed: int) -> tuple[list[str], Any]:
    """``n`` synthetic titles and their bag-of-words ``[n, |V|]`` (scipy CSR, idf-weighted)."""
    from scipy import sparse

    rng = np.random.default_rng(seed)
    base = rng.integers(0, len(vocab.lengths), n)
    lens = vocab.lengths[base]
    starts = np.repeat(vocab.offsets[base], lens)
    within = np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens)
    toks = vocab.flat[starts + within]
    swap = rng.random(len(toks)) > 0.6
    toks[swap] = rng.choice(len(vocab.words), int(swap.sum()), p=vocab.unigram)
    row = np.repeat(np.arange(n), lens)
    words = vocab.words[toks]
    bounds = np.cumsum(lens)
    titles = [" ".join(words[b - ln : b]) + f" M{seed % 97:02d}-{i:07d}" for i, (b, ln) in enumerate(zip(bounds, lens))]
    bow = sparse.csr_matrix((vocab.idf[toks], (row, toks)), shape=(n, len(vocab.words)), dtype=np.float32)
    bow.sum_duplicates()
    return titles, bow


def project(bow: Any, seed: int = 7) -> npt.NDArray[np.float32]:
    """The stand-in item vectors: a fixed Gaussian random projection of ``bow``, L2-normalised."""
    rng = np.random.default_rng(seed)
    r = (rng.standard_normal((bow.shape[1], DIM)) / np.sqrt(DIM)).astype(np.float32)
    x = np.asarray(bow @ r, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-9)


def query_vectors(vocab: Vocabulary, queries: list[str]) -> npt.NDArray[np.float32]:
    """Stand-in vectors of query texts, in the items' space (the same projection of their known words)."""
    from scipy import sparse

    index = {w: i for i, w in enumerate(vocab.words.tolist())}
    rows, cols = [], []
    for r, text in enumerate(queries):
        for w in TOKEN.findall(text):
            if w in index:
                rows.append(r)
                cols.append(index[w])
    vals = vocab.idf[np.asarray(cols, np.int64)] if cols else np.zeros(0, np.float32)
    bow = sparse.csr_matrix((vals, (rows, cols)), shape=(len(queries), len(vocab.words)), dtype=np.float32)
    return project(bow)


class StandInEmbedder:
    """An :class:`~tandem.ids.embed.Embedder` returning precomputed vectors (see the module docstring)."""

    def __init__(self, vectors: npt.NDArray[np.float32]) -> None:
        self.vectors = vectors

    def fit(self, texts: list[str]) -> StandInEmbedder:
        return self

    def transform(self, texts: list[str]) -> npt.NDArray[np.float32]:
        if len(texts) != len(self.vectors):
            raise ValueError(f"stand-in vectors for {len(self.vectors)} texts, asked {len(texts)}")
        return self.vectors

    def fit_transform(self, texts: list[str]) -> npt.NDArray[np.float32]:
        return self.transform(texts)

    def state(self) -> dict[str, Any]:
        return {}


def percentiles(ms: list[float]) -> tuple[float, float]:
    """p50 and p99 of per-query milliseconds."""
    qs = statistics.quantiles(ms, n=100, method="inclusive")
    return statistics.median(ms), qs[98]


def build_ids(titles: list[str], vectors: npt.NDArray[np.float32], seed: int) -> tuple[npt.NDArray[np.int64], float]:
    """Semantic IDs as ``tandem train generative`` shapes them (two cluster levels, ~13 items a
    leaf, balanced k-means) over the stand-in vectors; codes and seconds."""
    from tandem.catalog.item import Item
    from tandem.ids.build import build_semantic_ids
    from tandem.training.tree_config import tree_id_config, tree_profile

    items = [Item(item_id=f"s{i}", title=t) for i, t in enumerate(titles)]
    cfg = tree_id_config(tree_profile("full", seed=seed), len(items))
    t0 = time.perf_counter()
    id_map = build_semantic_ids(items, cfg, embedder=StandInEmbedder(vectors))  # type: ignore[arg-type]
    return id_map.as_array(), time.perf_counter() - t0


def trie_figures(codes: npt.NDArray[np.int64]) -> tuple[Any, dict[str, float]]:
    """The decoding trie (:class:`TreeIndex`) with its build time and the memory it holds (traced)."""
    from tandem.generative.tree_decoding import TreeIndex

    tracemalloc.start()
    t0 = time.perf_counter()
    index = TreeIndex(codes)
    index.tables()
    secs = time.perf_counter() - t0
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return index, {"trie_build_s": secs, "trie_mb": held / 2**20, "nodes_per_position": index.nodes_per_position}


def decoder_for(index: Any, vectors: npt.NDArray[np.float32]) -> tuple[Any, dict[str, float]]:
    """The v2 decoder at initialisation (node tables = centroids and item vectors) and its memory."""
    import torch

    from tandem.generative.tree_model import TreeDecoder

    model = TreeDecoder(DIM, index.nodes_per_position)
    with torch.no_grad():
        for p, table in enumerate(index.member_means(vectors)):
            model.nodes[p].copy_(torch.from_numpy(table))
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    return model.eval(), {"decoder_mb": size / 2**20, "decoder_params": sum(p.numel() for p in model.parameters())}


def train_throughput(model: Any, index: Any, vectors: npt.NDArray[np.float32], *, steps: int, batch: int = 64,
                     seed: int = 0) -> float:
    """Samples/s of the tree trainer's step (tree_loss over cached states + AdamW) on a copy of ``model``."""
    import copy

    import torch

    from tandem.generative.tree_model import tree_loss

    m = copy.deepcopy(model).train()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    tables = index.tables()
    seconds = 0.0
    for s in range(steps + 1):
        rows = torch.randint(0, len(index.paths), (batch,), generator=g)
        q = torch.from_numpy(vectors[rows.numpy()])
        states = torch.randn(batch, 16, DIM, generator=g)
        mask = torch.ones(batch, 16, dtype=torch.long)
        t0 = time.perf_counter()
        loss = tree_loss(m, tables, q, states, mask, torch.from_numpy(index.paths[rows.numpy()]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if s:  # the first step warms up
            seconds += time.perf_counter() - t0
    return steps * batch / seconds


def generative_latency(model: Any, index: Any, encoder: Any, queries: list[str], *, beam: int = 100,
                       upper: int = 1000) -> dict[str, float]:
    """Per-query (batch 1) latency: real encoder + constrained decoding, the decoding alone, and the
    process CPU time per query (what a query costs, whatever else shares the machine)."""
    import torch

    from tandem.generative.tree_decoding import tree_beam_search

    beams = [upper] * (index.length - 1) + [beam]
    total, decode, cpu = [], [], []
    for i, text in enumerate(queries + queries[:3]):
        t0, c0 = time.perf_counter(), time.process_time()
        ids, mask = encoder.tokenize([text])
        with torch.inference_mode():
            states = encoder.states(ids, mask)
            q = encoder.pool(states, mask)
        t1 = time.perf_counter()
        tree_beam_search(model, index, q.float(), states.float(), mask, beams=beams)
        t2 = time.perf_counter()
        if i >= 3:  # three warm-ups
            total.append((t2 - t0) * 1000)
            decode.append((t2 - t1) * 1000)
            cpu.append((time.process_time() - c0) * 1000)
    p50, p99 = percentiles(total)
    d50, d99 = percentiles(decode)
    return {"gen_p50_ms": p50, "gen_p99_ms": p99, "decode_p50_ms": d50, "decode_p99_ms": d99,
            "gen_cpu_p50_ms": statistics.median(cpu)}


def bm25_figures(titles: list[str], queries: list[str], work: Path) -> dict[str, float]:
    """Lucene index build time and size on disk, and BM25 per-query latency (k = 100)."""
    from tandem.catalog.item import Item
    from tandem.sparse import SparseRetriever
    from tandem.sparse.index import build_index

    out = work / "bm25"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    build_index((Item(item_id=f"s{i}", title=t) for i, t in enumerate(titles)), out)
    build_s = time.perf_counter() - t0
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(out) for f in fs)
    r = SparseRetriever(out, writable=False)
    try:
        ms = []
        for i, text in enumerate(queries + queries[:3]):
            t1 = time.perf_counter()
            r.retrieve([text], 100)
            if i >= 3:
                ms.append((time.perf_counter() - t1) * 1000)
    finally:
        r.close()
    p50, p99 = percentiles(ms)
    return {"bm25_build_s": build_s, "bm25_index_mb": size / 2**20, "bm25_p50_ms": p50, "bm25_p99_ms": p99}


def sample_queries(titles: list[str], n: int, seed: int) -> list[str]:
    """Queries like the dev set's: 2–4 consecutive words of random titles (model numbers left out)."""
    rng = np.random.default_rng(seed + 1)
    out = []
    for i in rng.integers(0, len(titles), n):
        words = titles[int(i)].split()[:-1] or ["item"]
        w = int(rng.integers(2, 5))
        s = int(rng.integers(0, max(1, len(words) - w + 1)))
        out.append(" ".join(words[s : s + w]))
    return out
