"""Rebuild engine/data/embedding_mean.npy: the average raw MobileNetV2 feature vector of the pool's photos.

Embeddings are centred with this mean before they are L2-normalised (engine/embedding.py). Every
photo under POOL/photos (recursively: the faces too) is loaded as ingest loads it, turned into the
stored thumbnail (engine.loading.thumbnail_jpeg) and run through the network; the 1280 averages
of the features are averaged over the photos and saved as float32.

    .venv/bin/python bench/embedding_mean.py [--pool /work/shared/eval/pool] [--out engine/data/embedding_mean.npy]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import embedding  # noqa: E402
from engine.fingerprint import WORKING_SIDE  # noqa: E402
from engine.loading import load_image, thumbnail_jpeg  # noqa: E402

SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}


def photos(pool: Path) -> list[Path]:
    return sorted(p for p in (pool / "photos").rglob("*") if p.suffix.lower() in SUFFIXES)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pool", type=Path, default=Path("/work/shared/eval/pool"))
    ap.add_argument("--out", type=Path,
                    default=Path(__file__).resolve().parents[1] / "engine" / "data" / embedding.MEAN_FILE)
    args = ap.parse_args()
    files = photos(args.pool)
    started = time.perf_counter()
    raw = []
    for path in files:
        thumb = thumbnail_jpeg(load_image(path, target_size=WORKING_SIDE).image)
        raw.append(embedding.features([embedding.thumbnail_image(thumb)])[0])
    mean = np.mean(raw, axis=0).astype(np.float32)
    np.save(args.out, mean)
    norms = np.linalg.norm(raw, axis=1)
    print(f"{len(files)} photos, {time.perf_counter() - started:.1f} s -> {args.out} "
          f"(norm of the mean {np.linalg.norm(mean):.3f}, mean norm of a vector {np.mean(norms):.3f})")


if __name__ == "__main__":
    main()
