#!/usr/bin/env python3
"""Measure local features on a benchmark corpus (shared/eval/make_corpus.py): retrieval keys and verification.

    python bench/keypoints.py CORPUS [--side 768] [--features 400] [--query-features 400]
                              [--vocab engine/data/orb_vocab.npz] [--depth D] [--assign 1] [--min-shared 3]
                              [--top 20] [--out report.json]

Every index image is extracted as the engine stores it, every query as the engine searches
(plain and mirrored). Per transform it prints:
  rep       share of (query, true source) pairs sharing >= min-shared distinct visual words
  r@1 r@10  rank of the true source among all indexed images by tf-idf shared-word score
  wrong     mean number of wrong images sharing >= min-shared words with the query
  true_inl  median distinct inliers of the true pair; ok: share >= MIN_INLIERS
  false_inl max distinct inliers over the top-`top` wrong candidates by score
  e2e@1/10  words -> top-`top` candidates -> verify -> rank by inliers, accepted only
and timings, storage, and rows an inverted index of 1M images would touch per query.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from collections import defaultdict
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from scipy import sparse

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import keypoints as K  # noqa: E402
from engine import verify as V  # noqa: E402

OPTS: dict = {}


def load(path: Path) -> Image.Image:
    im = ImageOps.exif_transpose(Image.open(path))
    if im.mode in ("RGBA", "LA", "P"):
        im = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)), im)
    return im.convert("RGB")


def _init(opts: dict) -> None:
    OPTS.update(opts)


def _extract(job: tuple[str, bool]) -> tuple[list[bytes], float, float]:
    """Packed keypoints (plain, and mirrored for queries), extract seconds, words seconds."""
    path, query = job
    im = load(Path(path))
    n = OPTS["query_features"] if query else OPTS["features"]
    t0 = time.perf_counter()
    side = OPTS["query_side"] if query else OPTS["side"]
    kps = [K.extract(im, max_features=n, working_side=side)]
    if query:
        kps.append(K.extract(im, max_features=n, working_side=side, mirror=True))
    K.vocabulary(Path(OPTS["vocab"]))
    t1 = time.perf_counter()
    K.words(kps[0], vocab=K.vocabulary(Path(OPTS["vocab"])))
    t2 = time.perf_counter()
    return [K.to_bytes(k) for k in kps], t1 - t0, t2 - t1


def word_matrix(word_lists: list[np.ndarray], size: int) -> sparse.csr_matrix:
    rows = np.concatenate([np.full(len(np.unique(w)), i) for i, w in enumerate(word_lists)])
    cols = np.concatenate([np.unique(w) for w in word_lists])
    return sparse.csr_matrix((np.ones(len(cols), np.float32), (rows, cols)), shape=(len(word_lists), size))


def best_verify(qkps: list[K.Keypoints], stored: K.Keypoints, timings: list[float]) -> V.Verification | None:
    found = []
    for q in qkps:
        t0 = time.perf_counter()
        found.append(V.verify(q, stored, min_inliers=0))
        timings.append(time.perf_counter() - t0)
    return max((v for v in found if v), key=lambda v: v.distinct, default=None)


def inverted(stored: list[K.Keypoints], vocab: K.Vocabulary) -> dict[str, np.ndarray]:
    """All stored postings (engine.keypoints.postings) sorted by word, as keypoint_words would hold them."""
    rows = [K.postings(k, vocab=vocab) for k in stored]
    word = np.concatenate([r.word for r in rows])
    order = np.argsort(word, kind="stable")
    image = np.concatenate([np.full(len(r.word), i) for i, r in enumerate(rows)])
    return {"word": word[order], "image": image[order], "angle": np.concatenate([r.angle for r in rows])[order],
            "level": np.concatenate([r.level for r in rows])[order]}


def wgc_scores(post: dict, queries: list[K.Postings], weight: np.ndarray, count: int) -> np.ndarray:
    """Weak geometric consistency, with the bins of engine/wordvotes.py (which votes on the look-up's postings
    for the top candidates; this scores every image of an in-memory index): per image, the best weighted vote
    of distinct shared words over (rotation, scale change) bins of 45 degrees x 2 pyramid levels, on two
    grids shifted by half a bin; each word votes once per bin, so bursts of one pattern count once."""
    best = np.zeros(count, np.float32)
    for q in queries:
        lo = np.searchsorted(post["word"], q.word, "left")
        hi = np.searchsorted(post["word"], q.word, "right")
        if (hi - lo).sum() == 0:
            continue
        row = np.repeat(np.arange(len(q.word)), hi - lo)
        at = np.concatenate([np.arange(a, b) for a, b in zip(lo, hi, strict=True) if b > a])
        turn = post["angle"][at].astype(np.int64) - q.angle[row]
        zoom = post["level"][at].astype(np.int64) - q.level[row] + 64
        word = q.word[row].astype(np.int64)
        for shift in (0, 1):
            angle_bin = ((turn + 16 * shift) & 255) >> 5
            key = (post["image"][at] * 8 + angle_bin) * 40 + np.clip((zoom + 2 * shift) >> 2, 0, 39)
            once = np.unique(key * (1 << 32) + word)
            total = np.bincount(once >> 32, weight[once & 0xFFFFFFFF], minlength=count * 320)
            best = np.maximum(best, total.reshape(count, 320).max(axis=1))
    return best


def box_error(found: tuple, truth: list[float]) -> float:
    return float(np.abs(np.array(found) - np.array(truth)).max())


def main() -> None:  # noqa: C901 -- one linear measurement script
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--side", type=int, default=K.WORKING_SIDE)
    ap.add_argument("--query-side", type=int, default=K.QUERY_WORKING_SIDE)
    ap.add_argument("--features", type=int, default=K.MAX_FEATURES)
    ap.add_argument("--query-features", type=int, default=K.QUERY_FEATURES)
    ap.add_argument("--vocab", type=Path, default=K.VOCABULARY)
    ap.add_argument("--depth", type=int, help="use a coarser level of the vocabulary tree (--score words only)")
    ap.add_argument("--refine", type=int, help="use only this many per-leaf bits (--score words only)")
    ap.add_argument("--related", default="src00050.jpg:src00088.jpg,icon00026.png:icon00039.png",
                    help="index pairs that share content (checked by eye): not counted as wrong")
    ap.add_argument("--stop", type=float, default=0.02, help="ignore words in more than this share of images")
    ap.add_argument("--weighting", choices=("idf", "count"), default="idf")
    ap.add_argument("--score", choices=("wgc", "words"), default="wgc",
                    help="wgc: shared words voting for one rotation and scale change; words: all shared words")
    ap.add_argument("--no-verify", action="store_true", help="retrieval only")
    ap.add_argument("--assign", type=int, default=1, help="query-side leaves per descriptor")
    ap.add_argument("--min-shared", type=int, default=3)
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--cache", type=Path, help="folder to keep extracted keypoints in between runs")
    args = ap.parse_args()
    truth = json.loads((args.corpus / "truth.json").read_text())
    index = sorted(p.name for p in (args.corpus / "index").iterdir())
    position = {name: i for i, name in enumerate(index)}
    queries = truth["queries"]
    opts = {"side": args.side, "query_side": args.query_side, "features": args.features,
            "query_features": args.query_features, "vocab": str(args.vocab)}
    jobs = [(str(args.corpus / "index" / n), False) for n in index]
    jobs += [(str(args.corpus / "queries" / q["query"]), True) for q in queries]
    t0 = time.perf_counter()
    key = f"{args.side}_{args.features}_{args.query_side}_{args.query_features}_{K.SCALE_FACTOR}"
    cache = args.cache / f"kp_{key}.pickle" if args.cache else None
    if cache and cache.exists():
        done = pickle.loads(cache.read_bytes())
    else:
        with Pool(args.workers, _init, (opts,)) as pool:
            done = pool.map(_extract, jobs, chunksize=4)
        if cache:
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_bytes(pickle.dumps(done))
    print(f"extracted {len(jobs)} images in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    stored = [K.from_bytes(d[0][0]) for d in done[: len(index)]]
    qkps = [[K.from_bytes(b) for b in d[0]] for d in done[len(index):]]
    storage = [len(d[0][0]) for d in done[: len(index)]]
    t_extract_stored = [d[1] for d in done[: len(index)]]
    t_extract_query = [d[1] for d in done[len(index):]]
    t_words = [d[2] for d in done]

    vocab = K.Vocabulary.load(args.vocab)
    depth = args.depth or vocab.depth
    size = vocab.branching**depth
    refine = vocab.refine if args.refine is None else args.refine
    size = size << refine if depth == vocab.depth else size
    sw = [vocab.lookup(k.descriptors, 1, depth, refine)[:, 0] for k in stored]
    t0 = time.perf_counter()
    qw = [[vocab.lookup(k.descriptors, args.assign, depth, refine).reshape(-1) for k in ks] for ks in qkps]
    t_qwords = (time.perf_counter() - t0) / len(qkps)
    X = word_matrix(sw, size)  # images x words, binary
    df = np.asarray(X.sum(axis=0)).ravel()
    idf = np.log((len(index) + 1) / (df + 1)).astype(np.float32)
    if args.stop:  # stop words: too common to tell images apart
        idf[df > args.stop * len(index)] = 0
    if args.weighting == "count":
        idf = np.where(idf > 0, 1.0, 0.0).astype(np.float32)
    share = df / len(index)  # postings per word per image
    Xi = X.multiply(idf[None, :]).tocsr()
    post = inverted(stored, vocab) if args.score == "wgc" else {}

    pairs = [tuple(p.split(":")) for p in args.related.split(",") if p]
    pairs += [(b, a) for a, b in pairs]
    per: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    verify_times: list[float] = []
    rows_touched = []
    all_false: list[int] = []
    for q, ks, ws in zip(queries, qkps, qw, strict=True):
        kind = q["transform"]
        m = per[kind]
        Q = word_matrix(ws, size)
        shared = np.asarray((X @ Q.T).todense())  # images x (plain, mirror)
        if args.score == "wgc":
            scores = wgc_scores(post, [K.postings(k, args.assign, side == 1, vocab) for side, k in enumerate(ks)],
                                idf, len(index))
        else:
            scores = np.asarray((Xi @ Q.T).todense()).max(axis=1)
        shared = shared.max(axis=1)
        union = np.unique(np.concatenate(ws))
        rows_touched.append(float(share[union][idf[union] > 0].sum()) * 1e6)  # stop words are not looked up
        true = [position[s["file"]] for s in q["sources"]]
        order = np.argsort(-scores, kind="stable")
        related = {position[b] for a, b in pairs for s in q["sources"] if s["file"] == a}
        wrong_order = [i for i in order if i not in true and i not in related]
        m["wrong"].append(int(sum(shared[i] >= args.min_shared for i in wrong_order)))
        m["queries"].append(1)
        candidates = list(order[: args.top])
        verdicts = {} if args.no_verify else {i: best_verify(ks, stored[i], verify_times)
                                              for i in set(candidates) | set(true) | set(wrong_order[: args.top])}
        distinct = defaultdict(int, {i: (v.distinct if v else 0) for i, v in verdicts.items()})
        false_max = max((distinct[i] for i in wrong_order[: args.top]), default=0)
        m["false_inl"].append(false_max)
        all_false.append(false_max)
        accepted = sorted((i for i in candidates if distinct[i] >= V.MIN_INLIERS and i not in related),
                          key=lambda i: -distinct[i])
        m["any_wrong_accepted"].append(any(i not in true for i in accepted))
        for src, i in zip(q["sources"], true, strict=True):
            rank = int(np.flatnonzero(order == i)[0]) + 1
            m["rep"].append(shared[i] >= args.min_shared)
            m["shared"].append(int(shared[i]))
            m["r@1"].append(rank <= len(true) if len(true) > 1 else rank == 1)
            m["r@10"].append(rank <= 10)
            m["r@top"].append(rank <= args.top)
            m["true_inl"].append(distinct[i])
            m["ok"].append(distinct[i] >= V.MIN_INLIERS)
            m["e2e@1"].append(i in accepted[: max(1, len(true) if len(true) > 1 else 1)])
            m["e2e@10"].append(i in accepted[:10])
            v = verdicts.get(i)
            if v is not None and v.distinct >= V.MIN_INLIERS:
                m["box_err"].append(box_error(v.stored_box, src["box"]))

    cols = ["n", "rep", "shared", "r@1", "r@10", "r@top", "wrong", "true_inl", "ok", "false_inl", "e2e@1", "e2e@10",
            "box_err", "wrong_acc"]
    print(f"side={args.side} features={args.features}/{args.query_features} vocab={args.vocab.name} "
          f"words={size} (depth {depth}, refine {refine}) assign={args.assign} min_shared={args.min_shared} "
          f"top={args.top} query_side={args.query_side} "
          f"min_inliers={V.MIN_INLIERS}")
    print("| " + " | ".join(["transform"] + cols) + " |")
    print("|" + "---|" * (len(cols) + 1))
    report = {}
    for kind, m in per.items():
        row = {"n": len(m["queries"]), "wrong": np.mean(m["wrong"]), "false_inl": int(max(m["false_inl"])),
               "wrong_acc": np.mean(m["any_wrong_accepted"])}
        if m["rep"]:
            row.update({c: np.mean(m[c]) for c in ("rep", "r@1", "r@10", "r@top", "ok", "e2e@1", "e2e@10")})
            row["shared"] = float(np.median(m["shared"]))
            row["true_inl"] = float(np.median(m["true_inl"]))
            row["box_err"] = float(np.median(m["box_err"])) if m["box_err"] else float("nan")
        report[kind] = row
        cells = [kind] + [("-" if c not in row else f"{row[c]:.2f}" if isinstance(row[c], float) else str(row[c]))
                          for c in cols]
        print("| " + " | ".join(cells) + " |")
    ms = 1000
    timing = {"extract_stored_ms": np.median(t_extract_stored) * ms, "extract_query_both_ms":
              np.median(t_extract_query) * ms, "words_ms": np.median(t_words) * ms,
              "query_words_ms": t_qwords * ms, "verify_ms_median": np.median(verify_times or [0]) * ms,
              "verify_ms_p90": np.percentile(verify_times or [0], 90) * ms,
              "storage_bytes_median": float(np.median(storage)), "keypoints_median": float(np.median(
                  [len(k) for k in stored])), "rows_per_query_at_1M_median": float(np.median(rows_touched)),
              "rows_per_query_at_1M_p90": float(np.percentile(rows_touched, 90)),
              "false_inliers_max_all": int(max(all_false, default=0)),
              "false_inliers_p99": float(np.percentile(all_false, 99))}
    for k, v in timing.items():
        print(f"{k}: {v:.1f}")
    if args.out:
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "per_transform": report,
                                        "summary": timing}, indent=1, default=float))


if __name__ == "__main__":
    main()
