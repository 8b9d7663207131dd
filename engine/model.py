"""Domain values: hashes, regions, fingerprints, matches. All frozen.

Hashes are Python ints inside (bit 0 of the hash string is the most significant bit of the
int) and hex strings only at the edges; ``h1 - h2`` is their Hamming distance, as in
imagehash.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 as fractions of width/height


@dataclass(frozen=True, order=True)
class Hash:
    value: int
    bits: int = 64

    def __post_init__(self):
        if self.value < 0 or self.value >> self.bits:
            raise ValueError(f"{self.value:#x} does not fit in {self.bits} bits")

    def __sub__(self, other: Hash) -> int:
        if self.bits != other.bits:
            raise ValueError(f"cannot compare a {self.bits}-bit hash with a {other.bits}-bit one")
        return (self.value ^ other.value).bit_count()

    def hex(self) -> str:
        return f"{self.value:0{self.bits // 4}x}"

    def bitstring(self) -> str:
        """'0101...' as PostgreSQL's bit(n) type reads it."""
        return f"{self.value:0{self.bits}b}"

    @classmethod
    def from_hex(cls, text: str) -> Hash:
        return cls(int(text, 16), len(text) * 4)

    @classmethod
    def from_bitstring(cls, text: str) -> Hash:
        return cls(int(text, 2), len(text))

    @classmethod
    def from_bools(cls, bools) -> Hash:
        """From a sequence of booleans, first = most significant (imagehash's order)."""
        flat = [bool(b) for b in bools]
        value = 0
        for b in flat:
            value = (value << 1) | b
        return cls(value, len(flat))

    def __str__(self) -> str:
        return self.hex()


@dataclass(frozen=True)
class Region:
    """A part of an image, hashed on its own so that crops and composites can match it.

    kind: 'face', 'picture' (a picture inside a picture), 'mask' (an icon's shape) ...
    box:  where it lies, as fractions of the image (x0, y0, x1, y1).
    """

    kind: str
    box: Box
    hash: Hash


@dataclass(frozen=True, eq=False)
class Keypoints:
    """Local features: N binary descriptors (N x 32 uint8 for ORB) and their geometry.

    xy are in pixels of an image whose size is `size` (width, height); scale and angle
    per keypoint. Arrays are numpy; compared by identity.
    """

    size: tuple[int, int]
    xy: object  # np.ndarray (N, 2) float32
    scale: object  # np.ndarray (N,) float32
    angle: object  # np.ndarray (N,) float32
    descriptors: object  # np.ndarray (N, 32) uint8

    def __len__(self) -> int:
        return len(self.descriptors)

    def take(self, index) -> Keypoints:
        """The keypoints at ``index`` (a numpy index), in the same frame."""
        return Keypoints(self.size, self.xy[index], self.scale[index], self.angle[index], self.descriptors[index])


@dataclass(frozen=True, eq=False)
class Fingerprint:
    sha256: bytes
    width: int
    height: int
    format: str
    file_size: int
    ahash: Hash
    dhash: Hash
    phash: Hash
    pdq: Hash
    pdq_quality: int
    regions: tuple[Region, ...] = ()
    keypoints: Keypoints | None = None
    thumbnail: bytes | None = None
    embedding: object = None  # np.ndarray (1280,) float32, unit length: engine.embedding (the optional extra)
    timings: dict = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Match:
    """One stored image a query matched, and how they relate."""

    id: int
    uri: str | None
    uris: tuple[str, ...]
    score: int  # 0-100
    relation: str  # duplicate | near_duplicate | crop | contains | composite
    distance: int | None  # Hamming bits of the best hash evidence (None: features only)
    query_box: Box  # where the shared content lies in the query (fractions)
    target_box: Box  # ... and in the stored image
    mirrored: bool = False
    rotated: bool = False
    evidence: tuple[str, ...] = ()  # which kinds of evidence agreed: sha256, global, face, picture, keypoints...
    inliers: int | None = None
    width: int = 0
    height: int = 0

    def to_json(self) -> dict:
        return {
            "id": self.id, "uri": self.uri, "uris": list(self.uris), "score": self.score,
            "relation": self.relation, "mirrored": self.mirrored, "rotated": self.rotated,
            "distance": self.distance, "inliers": self.inliers,
            "query_box": list(self.query_box), "target_box": list(self.target_box),
            "evidence": list(self.evidence), "width": self.width, "height": self.height,
        }
