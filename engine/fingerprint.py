"""Fingerprint an image: everything we store about it, and the extra a query needs.

Stored (``fingerprint``): SHA-256, size and format; aHash, dHash, pHash (64-bit, equal to
imagehash's), PDQ (256-bit) with its quality; content-aligned regions (faces, pictures inside
the picture, icon shapes) each with its pHash; ORB keypoints (for visual-word retrieval and
geometric verification); a small JPEG thumbnail.

Query side (``query_fingerprint``): the same, plus the pHash and PDQ of the 8 rotations and
flips, and the keypoints of the mirrored image.
"""

from __future__ import annotations

import time
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from . import hashes, keypoints, pdq
from .config import Settings
from .loading import LoadedImage, load_image, thumbnail_jpeg
from .model import Fingerprint, Hash, Keypoints
from .regions import find_regions, start_faces

# Hashes need little: decode JPEGs at a reduced size (draft mode) whose longer side is at least this.
WORKING_SIDE = 1024


def _fingerprint_loaded(loaded: LoadedImage, with_keypoints: bool = True, query: bool = False,
                        faces: Future | None = None, grey: Image.Image | None = None,
                        ) -> tuple[Fingerprint, hashes.GlobalHashes, dict | None]:
    timings: dict[str, float] = {}
    t = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal t
        now = time.perf_counter()
        timings[stage] = timings.get(stage, 0.0) + now - t
        t = now

    image = loaded.image
    grey = hashes.grey(image) if grey is None else grey  # one grey copy for hashes, regions, keypoints
    glob = hashes.global_hashes(grey, with_dihedral=query)
    lap("global_hashes")
    if query:  # the 8 rotations/flips come from one DCT; identity is the image's own PDQ
        pdq_variants, pdq_quality = pdq.pdq_dihedral(image)
        pdq_hash = pdq_variants["identity"]
    else:
        pdq_variants, (pdq_hash, pdq_quality) = None, pdq.pdq_hash(image)
    lap("pdq")
    regions = tuple(find_regions(image, loaded.alpha_mask, faces=faces, grey=grey, query=query))
    lap("regions")
    kp = keypoints.extract(grey) if with_keypoints else None
    lap("keypoints")
    thumb = None if query else thumbnail_jpeg(image)  # a query is not stored: no preview needed
    lap("thumbnail")
    fp = Fingerprint(
        sha256=loaded.sha256, width=loaded.width, height=loaded.height, format=loaded.format,
        file_size=loaded.file_size, ahash=glob.ahash, dhash=glob.dhash, phash=glob.phash,
        pdq=pdq_hash, pdq_quality=pdq_quality,
        regions=regions, keypoints=kp, thumbnail=thumb, timings=timings,
    )
    return fp, glob, pdq_variants


def fingerprint(source: Path | str | bytes, *, name: str | None = None, settings: Settings | None = None,
                with_keypoints: bool = True, with_embedding: bool = False) -> Fingerprint:
    """with_embedding: also the similar-images embedding of the thumbnail (needs the 'semantic' extra)."""
    t = time.perf_counter()
    loaded = load_image(source, name=name, settings=settings, target_size=WORKING_SIDE)
    load_s = time.perf_counter() - t
    fp, _, _ = _fingerprint_loaded(loaded, with_keypoints)
    fp.timings["load"] = load_s
    if with_embedding and fp.thumbnail is not None:
        from .embedding import embed_thumbnail

        t = time.perf_counter()
        fp = replace(fp, embedding=embed_thumbnail(fp.thumbnail))
        fp.timings["embedding"] = time.perf_counter() - t
    return fp


@dataclass(frozen=True, eq=False)
class QueryFingerprint:
    """A fingerprint plus what only queries need: transformed hashes and mirrored keypoints."""

    fp: Fingerprint
    phash_variants: dict[str, Hash]  # dihedral variant name -> pHash of the query so transformed
    pdq_variants: dict[str, Hash]
    mirrored_keypoints: Keypoints | None
    # the grey image the query's keypoints were found on (keypoints.working_image at
    # QUERY_WORKING_SIDE): guided verification describes parts of it again; None for a query
    # made from a stored fingerprint
    working: np.ndarray | None = None


def query_fingerprint(source: Path | str | bytes, *, name: str | None = None,
                      settings: Settings | None = None) -> QueryFingerprint:
    loaded = load_image(source, name=name, settings=settings, target_size=WORKING_SIDE)
    # faces (Haar: the largest cost) in a pool thread (engine.threads), the rest here meanwhile:
    # OpenCV releases the GIL
    grey = hashes.grey(loaded.image)
    faces = start_faces(loaded.image, grey)
    t = time.perf_counter()
    # a query is described once, so it can afford more keypoints than a stored image
    query_side = {"max_features": keypoints.QUERY_FEATURES, "working_side": keypoints.QUERY_WORKING_SIDE,
                  "grid": keypoints.QUERY_GRID}
    working = keypoints.working_image(grey, keypoints.QUERY_WORKING_SIDE)
    kp, mirrored = keypoints.extract_with_mirror(loaded.image, **query_side, grey=working)
    keypoints_s = time.perf_counter() - t
    fp, glob, pdq_variants = _fingerprint_loaded(loaded, with_keypoints=False, query=True, faces=faces, grey=grey)
    fp = replace(fp, keypoints=kp)
    fp.timings["keypoints"] = keypoints_s
    phash_variants = dict(zip(hashes.DIHEDRAL_NAMES, glob.dihedral, strict=True))
    return QueryFingerprint(fp, phash_variants, pdq_variants, mirrored, working)


def to_json(fp: Fingerprint, file: str) -> dict:
    """The `imgsearch hash --json` line for one file (hex at the edge)."""
    return {
        "file": file,
        "sha256": fp.sha256.hex(),
        "width": fp.width,
        "height": fp.height,
        "format": fp.format,
        "ahash": fp.ahash.hex(),
        "dhash": fp.dhash.hex(),
        "phash": fp.phash.hex(),
        "pdq": fp.pdq.hex(),
        "pdq_quality": fp.pdq_quality,
        "regions": [{"kind": r.kind, "box": [round(v, 4) for v in r.box], "phash": r.hash.hex()}
                    for r in fp.regions],
        "keypoints": len(fp.keypoints) if fp.keypoints is not None else 0,
    }
