"""The Python side of benches/compare_index.sh.

`gen`: writes the data set both sides use (raw little-endian f32 / i32 files): N base
vectors and Q queries of DIM dimensions, L2-normalised, either "embedding-like" (near a
random 32-dimensional subspace, plus 10% isotropic noise: the recipe of
fusionstream_index::exact::random_embeddings) or "uniform" (uniformly random directions), and
the exact top-K of every query by inner product (numpy, in chunks).

`faiss`: builds faiss HNSW over the same vectors with the same parameters (M,
efConstruction, efSearch; inner product = cosine on unit vectors), one thread, in f16
(IndexHNSWSQ QT_fp16, fusionstream's default storage) and f32 (IndexHNSWFlat), and prints a
JSON line per index like the Rust side's (the storages given, comma-separated).
"""

import json
import resource
import sys
import time

import numpy as np


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def vectors(n, dim, kind, rng):
    if kind == "uniform":
        return unit(rng.standard_normal((n, dim), dtype=np.float32))
    basis = unit(rng.standard_normal((32, dim), dtype=np.float32))
    out = np.empty((n, dim), np.float32)
    for s in range(0, n, 100_000):
        m = min(n, s + 100_000) - s
        v = unit(unit(rng.standard_normal((m, 32), dtype=np.float32)) @ basis)
        out[s : s + m] = unit(v + 0.1 * unit(rng.standard_normal((m, dim), dtype=np.float32)))
    return out


def gen(prefix, n, q, dim, kind, k):
    rng = np.random.default_rng(7)
    base = vectors(n, dim, kind, rng)
    # Queries from the same distribution (another draw of the same subspace's points).
    both = vectors(n + q, dim, kind, np.random.default_rng(7))[n:] if kind != "uniform" else None
    queries = both if both is not None else vectors(q, dim, kind, rng)
    best = np.full((q, k), -np.inf, np.float32)
    ids = np.zeros((q, k), np.int64)
    for s in range(0, n, 50_000):
        scores = queries @ base[s : s + 50_000].T
        cand = np.concatenate([best, scores], axis=1)
        cand_ids = np.concatenate([ids, np.arange(s, s + scores.shape[1])[None, :].repeat(q, 0)], axis=1)
        top = np.argsort(-cand, axis=1, kind="stable")[:, :k]
        best = np.take_along_axis(cand, top, 1)
        ids = np.take_along_axis(cand_ids, top, 1)
    base.tofile(prefix + ".base.f32")
    queries.tofile(prefix + ".queries.f32")
    ids.astype("<i4").tofile(prefix + ".gt.i32")


def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def run_faiss(prefix, dim, k, m, ef_add, ef_search, storages):
    import faiss

    faiss.omp_set_num_threads(1)
    base = np.fromfile(prefix + ".base.f32", np.float32).reshape(-1, dim)
    queries = np.fromfile(prefix + ".queries.f32", np.float32).reshape(-1, dim)
    gt = np.fromfile(prefix + ".gt.i32", "<i4").reshape(-1, k)
    for name, make in [
        ("f16", lambda: faiss.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_fp16, m, faiss.METRIC_INNER_PRODUCT)),
        ("f32", lambda: faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)),
    ]:
        if name not in storages:
            continue
        r0 = rss()
        ix = make()
        ix.hnsw.efConstruction = ef_add
        if not ix.is_trained:
            ix.train(base[:10_000])
        t = time.perf_counter()
        ix.add(base)
        insert_s = time.perf_counter() - t
        r1 = rss()
        ix.hnsw.efSearch = ef_search
        t = time.perf_counter()
        found = np.vstack([ix.search(q[None, :], k)[1] for q in queries])
        query_s = time.perf_counter() - t
        hits = sum(len(set(a) & set(b)) for a, b in zip(gt, found))
        print(json.dumps({
            "engine": f"faiss {faiss.__version__} HNSW ({name})", "n": len(base), "dim": dim, "threads": 1,
            "inserts_per_s": len(base) / insert_s, "queries_per_s": len(queries) / query_s,
            "recall_at_k": hits / gt.size, "k": k,
            "index_bytes_per_vector": len(faiss.serialize_index(ix)) / len(base),
            "rss_bytes_per_vector": (r1 - r0) / len(base),
        }), flush=True)
        del ix


if __name__ == "__main__":
    if sys.argv[1] == "gen":
        _, _, prefix, n, q, dim, kind, k = sys.argv
        gen(prefix, int(n), int(q), int(dim), kind, int(k))
    else:
        _, _, prefix, dim, k, m, ef_add, ef_search, storages = sys.argv
        run_faiss(prefix, int(dim), int(k), int(m), int(ef_add), int(ef_search), storages.split(","))
