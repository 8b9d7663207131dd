#!/usr/bin/env python3
"""Look-alike families: does each image of a folder of similar-looking images find itself and
nothing else?

    IMGSEARCH_HOME=/tmp/httpbench python bench/lookalikes.py ../shared/eval/pool/distractors [--quality 75]

The folder's images must be stored in the database already, under their paths (`imgsearch ingest
FOLDER`, or `bench/http_load.py prepare`, which ingests the whole pool). Each image is re-encoded as
a JPEG (`--quality`), so it is no byte-for-byte copy, and searched (`engine.search.search`, up to
50 matches). A match is *wrong* when its URI is not the image's own file; stored images without a
URI (the HTTP benchmark's synthetic rows) are counted apart. The pool's distractors are 183 star
fields (a bright round blob on black) whose pHashes cluster: docs/benchmarks.md, "What PDQ must
confirm".
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections import Counter
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import db  # noqa: E402
from engine.fingerprint import query_fingerprint  # noqa: E402
from engine.search import search  # noqa: E402

SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path)
    ap.add_argument("--quality", type=int, default=75)
    args = ap.parse_args()
    files = sorted(p for p in args.folder.iterdir() if p.suffix.lower() in SUFFIXES)
    found = with_wrong = 0
    wrong: Counter = Counter()
    synthetic = 0
    with db.connect() as conn:
        for f in files:
            buf = io.BytesIO()
            Image.open(f).convert("RGB").save(buf, "JPEG", quality=args.quality)
            matches = search(conn, query_fingerprint(buf.getvalue(), name=f.name), limit=50)
            own = [m for m in matches if m.uri and Path(m.uri).name == f.name]
            others = [m for m in matches if m not in own]
            found += bool(matches) and matches[0] in own
            with_wrong += bool(others)
            for m in others:
                wrong["+".join(m.evidence)] += 1
                synthetic += m.uri is None
    print(json.dumps({"queries": len(files), "top1_is_itself": found, "queries_with_a_wrong_match": with_wrong,
                      "wrong_matches": sum(wrong.values()), "of_which_without_uri": synthetic,
                      "wrong_by_evidence": dict(wrong.most_common())}))


if __name__ == "__main__":
    main()
