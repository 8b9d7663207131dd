#!/usr/bin/env python3
"""Measure content-aligned regions (engine.regions) on a corpus made by make_corpus.py.

    python bench/regions.py CORPUS [--workers 2] [--cache regions.pkl] [--textures 0,4,8,12] [--radii 6,8,10]
                                   [--only face,negative] [--set faces.DETECT_SHORT_SIDE=360 ...]

Every indexed image (stored side) and every query is loaded as the engine loads it, gets its
global pHash and its regions (faces, pictures, shapes). A query *finds* a source when some
query-side hash is within r bits of some stored-side hash of that source, comparing only
compatible kinds: global/face/picture with each other, shape with shape, cutout with cutout.
Per transform it prints the share of (query, source) pairs found at r = 6, 8 and 10, first with
global hashes only, then adding each region kind, then all; and how many *wrong* indexed images
each query hits likewise (mean per query; for negatives, the share that hit anything).
Then time per image per stage and regions per image. ``--textures`` sweeps the minimum region
texture (engine.regions.MIN_TEXTURE is the default in use). ``--set module.NAME=value`` changes a
parameter of engine.regions.<module> (a Python literal) before anything is computed; ``--only``
limits the queries to some transforms (every indexed image is still analysed).
"""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import pickle
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import hashes, regions  # noqa: E402
from engine.loading import load_image  # noqa: E402

TARGET_SIDE = 1024  # as engine.fingerprint decodes
GROUP = {"global": 0, "face": 0, "picture": 0, "shape": 1, "cutout": 2}
KIND_SETS = {  # column -> region kinds used on both sides, besides global pHashes
    "global": set(),
    "+face": {"face"},
    "+picture": {"picture"},
    "+shape": {"shape", "cutout"},
    "all": {"face", "picture", "shape", "cutout"},
}


def analyse(path: str, query: bool = False) -> dict:
    """Global pHash, regions (with their texture) and timings of one image (``query``: as a query's)."""
    t = time.perf_counter()
    loaded = load_image(path, target_size=TARGET_SIDE)
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    global_hash = hashes.phash(loaded.image)
    timings = {"load": load_s, "global": time.perf_counter() - t}
    found = regions.find_regions(loaded.image, loaded.alpha_mask, min_texture=0.0, timings=timings, query=query)
    small = regions.texture_image(loaded.image)
    rows = [("global", (0.0, 0.0, 1.0, 1.0), global_hash.value, 999.0)]
    for r in found:
        tex = regions.texture(small, r.box) if r.kind in ("face", "picture") else 999.0
        rows.append((r.kind, r.box, r.hash.value, tex))
    return {"rows": rows, "timings": timings}


def compute(corpus: Path, workers: int, only: set[str] | None = None) -> dict:
    truth = json.loads((corpus / "truth.json").read_text())
    if only:
        truth["queries"] = [q for q in truth["queries"] if q["transform"] in only]
    index = sorted(p.name for p in (corpus / "index").iterdir())
    paths = [(str(corpus / "index" / n), False) for n in index]
    paths += [(str(corpus / "queries" / q["query"]), True) for q in truth["queries"]]
    with Pool(workers) as pool:  # forked: parameters changed with --set are inherited
        results = pool.starmap(analyse, paths, chunksize=4)
    return {"index": index, "queries": truth["queries"], "stored": results[: len(index)], "query": results[len(index):]}


def arrays(items: list[dict], kinds: set[str], min_texture: float):
    """Flattened (hash, group, image number) of the rows kept."""
    h, g, img = [], [], []
    for i, item in enumerate(items):
        for kind, _, value, tex in item["rows"]:
            if (kind == "global" or kind in kinds) and tex >= min_texture:
                h.append(value)
                g.append(GROUP[kind])
                img.append(i)
    return np.array(h, dtype=np.uint64), np.array(g), np.array(img)


def score(data: dict, kinds: set[str], min_texture: float, radius: int) -> dict[str, dict]:
    """Per transform: found pairs, pairs, wrong images hit, queries, queries hitting anything wrong."""
    names = {n: i for i, n in enumerate(data["index"])}
    sh, sg, simg = arrays(data["stored"], kinds, min_texture)
    out: dict[str, dict] = {}
    for q, item in zip(data["queries"], data["query"], strict=True):
        qh, qg, _ = arrays([item], kinds, min_texture)
        hit = np.zeros(len(data["index"]), dtype=bool)
        for value, group in zip(qh, qg, strict=True):
            close = (np.bitwise_count(sh ^ value) <= radius) & (sg == group)
            hit[simg[close]] = True
        true = {names[s["file"]] for s in q["sources"]}
        row = out.setdefault(q["transform"], {"found": 0, "pairs": 0, "wrong": 0, "queries": 0, "any_wrong": 0})
        row["found"] += sum(bool(hit[i]) for i in true)
        row["pairs"] += len(true)
        wrong = int(hit.sum()) - sum(bool(hit[i]) for i in true)
        row["wrong"] += wrong
        row["queries"] += 1
        row["any_wrong"] += wrong > 0
    return out


def report(data: dict, textures: list[float], radii: list[int]) -> None:
    print(f"## Recall (found / pairs) and wrong images hit per query, min texture {regions.MIN_TEXTURE}\n")
    cols = list(KIND_SETS)
    for radius in radii:
        scores = {c: score(data, KIND_SETS[c], regions.MIN_TEXTURE, radius) for c in cols}
        print(f"r = {radius}\n\n| transform | n | " + " | ".join(cols) + " | wrong/query (all) | queries w/ wrong |")
        print("|---|---|" + "---|" * len(cols) + "---|---|")
        for t in scores["all"]:
            all_ = scores["all"][t]
            rec = " | ".join("-" if s[t]["pairs"] == 0 else f"{s[t]['found'] / s[t]['pairs']:.2f}"
                             for s in scores.values())
            print(f"| {t} | {all_['queries']} | {rec} | {all_['wrong'] / all_['queries']:.2f} "
                  f"| {all_['any_wrong'] / all_['queries']:.2f} |")
        print()
    print("## Minimum texture sweep (all kinds): recall of region transforms, negatives hitting anything\n")
    focus = ["face", "paste", "composite2", "composite4", "border", "text", "icon_bg"]
    print("| min texture | r | " + " | ".join(focus) + " | negatives w/ wrong | wrong/query (all queries) |")
    print("|---|---|" + "---|" * len(focus) + "---|---|")
    for tex in textures:
        for radius in radii:
            s = score(data, KIND_SETS["all"], tex, radius)
            rec = " | ".join(f"{s[t]['found'] / s[t]['pairs']:.2f}" if t in s else "-" for t in focus)
            neg = s.get("negative", {"any_wrong": 0, "queries": 1})
            wrong = sum(v["wrong"] for v in s.values()) / sum(v["queries"] for v in s.values())
            print(f"| {tex:g} | {radius} | {rec} | {neg['any_wrong'] / neg['queries']:.2f} | {wrong:.2f} |")
    print("\n## Time per image (ms): mean / p90\n")
    items = data["stored"] + data["query"]
    stages = list(items[0]["timings"])
    print("| " + " | ".join(stages) + " |\n|" + "---|" * len(stages))
    ms = {s: 1000 * np.array([i["timings"][s] for i in items]) for s in stages}
    print("| " + " | ".join(f"{ms[s].mean():.0f} / {np.percentile(ms[s], 90):.0f}" for s in stages) + " |")
    print("\n## Regions per image (kept at the default min texture): mean / max\n")
    print("| side | face | picture | shape | cutout | all |\n|---|---|---|---|---|---|")
    for side in ("stored", "query"):
        counts = {k: [sum(1 for kind, _, _, tex in i["rows"] if kind == k and tex >= regions.MIN_TEXTURE)
                      for i in data[side]] for k in ("face", "picture", "shape", "cutout")}
        total = [sum(c) for c in zip(*counts.values(), strict=True)]
        cells = [f"{np.mean(v):.2f} / {max(v)}" for v in [*counts.values(), total]]
        print(f"| {side} | " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cache", type=Path, help="reuse (or write) the computed regions here")
    ap.add_argument("--textures", default="0,4,8,12", help="minimum textures to sweep")
    ap.add_argument("--radii", default="6,8,10", help="Hamming radii to report")
    ap.add_argument("--only", help="comma-separated transforms to query (default: all)")
    ap.add_argument("--set", action="append", default=[], metavar="MODULE.NAME=VALUE",
                    help="override a parameter of engine.regions.MODULE, e.g. pictures.MIN_SIDE_COVERAGE=0.6")
    args = ap.parse_args()
    for item in args.set:
        target, value = item.split("=", 1)
        module, name = target.rsplit(".", 1)
        mod = importlib.import_module(f"engine.regions.{module}" if module != "regions" else "engine.regions")
        if not hasattr(mod, name):
            sys.exit(f"engine.regions.{module} has no parameter {name}")
        setattr(mod, name, ast.literal_eval(value))
        print(f"set {target} = {value}")
    if args.cache and args.cache.exists():
        data = pickle.loads(args.cache.read_bytes())
    else:
        t = time.perf_counter()
        data = compute(args.corpus, args.workers, set(args.only.split(",")) if args.only else None)
        print(f"computed {len(data['stored'])} stored images and {len(data['query'])} queries "
              f"in {time.perf_counter() - t:.0f} s with {args.workers} workers\n")
        if args.cache:
            args.cache.write_bytes(pickle.dumps(data))
    report(data, [float(v) for v in args.textures.split(",")], [int(v) for v in args.radii.split(",")])


if __name__ == "__main__":
    main()
