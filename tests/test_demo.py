"""The quick start's main job: `imgsearch demo` ingests the samples and answers the demo queries."""

from __future__ import annotations

from engine.demo import HELD_BACK, demo_queries, run_demo, sample_files


def test_samples_are_bundled_with_their_sources():
    files = {p.name for p in sample_files()}
    assert len(files) >= 8 and HELD_BACK in files
    sources = (sample_files()[0].parent / "SOURCES.csv").read_text()
    assert all(name in sources for name in files)


def test_demo_finds_what_it_should(database_url):
    lines: list[str] = []
    found, total = run_demo(out=lines.append)
    assert total == len(demo_queries({p.name: p for p in sample_files()}))
    text = "\n".join(lines)
    # crops, mirrors, faces and composites are found with their relation; the negative finds nothing
    assert "ok   a 30% crop of the bridge" in text and "crop" in text
    assert "ok   the cat, mirrored and desaturated" in text and "mirrored" in text
    assert "ok   a 2-up composite" in text
    assert "ok   an unrelated photo: 0 match(es)" in text
    assert "ok   the cat pasted onto another photo" in text
    assert found == total
