"""Embed once: a frozen backbone's embeddings of every image, computed a single time and cached.

A linear probe (``--freeze backbone``, and the frozen phase of ``backbone-then-unfreeze``) trains
only the final ``nn.Linear``; the backbone runs in eval mode, so an image's embedding is the same in
every epoch and every fold. :func:`embed_once` computes it once per image, and once per mirror
image (the flip augmentation of the training loop and the flip test-time augmentation), and stores
``(N, V, D)`` float32 embeddings in ``<cache>/embedded/<key>.npy`` beside the decode cache. The key
hashes the backbone's weights, the data (the decode cache's key and the kept files), the image
size, crop, input normalisation and precision, so a changed weights file, photo, size or crop
computes them again, while other folds, runs and head settings reuse them. An entry is used only
when it is whole: a ``.json`` beside it records its shape and crc32, and the array must be float32
of that shape (every image, every view, the head's input width), match its crc32 and be finite;
anything else (truncated, edited, NaN, pickled, from an older version) is logged, discarded and
computed again.

The head is the model's own final Linear layer (``embedding.final_linear``): training it on the
cached embeddings trains the whole network's head in place, so checkpoints and the saved bundle are
the whole network, exactly as without the cache. The warp of ``augment`` (rotation, scale,
translation) is not applied to a frozen backbone's inputs; the mirror image is, with the same coin
``augment`` would draw for that image.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from facecls.atomic import atomic_path, write_json
from facecls.config import AugmentConfig, RunConfig
from facecls.config_rules import augment_of
from facecls.data.augment import normalize
from facecls.data.batches import IndexBatches
from facecls.data.dataset import FaceDataset
from facecls.data.sources import default_cache_dir
from facecls.models.cpu_pass import FrozenPass
from facecls.models.embedding import final_linear, head_name
from facecls.runtime import Runtime

# Bump when the way embeddings are computed changes, so stale caches are not reused.
EMBED_VERSION = 1
# The draws ``augment`` makes per image before its flip coin: angle, scale, tx, ty.
_DRAWS_BEFORE_FLIP = 4

Log = Callable[[str], None]


def backbone_digest(model: nn.Module) -> str:
    """A digest of every state tensor of ``model`` except its head (what the backbone computes)."""
    head = head_name(model) + "."
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        if name.startswith(head):
            continue
        data = tensor.detach().cpu().contiguous()
        h.update(f"\n{name}\0{data.dtype}\0{tuple(data.shape)}\0".encode())
        h.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def data_digest(dataset: FaceDataset) -> str:
    """The decode cache's key and the kept files; the pixels themselves for synthetic data."""
    h = hashlib.sha256(str(dataset.info.get("decode_key", "")).encode())
    if not dataset.info.get("decode_key"):
        h.update(dataset.images.contiguous().numpy().tobytes())
    for key in ("image_size", "crop", "min_images"):
        h.update(f"\0{key}={dataset.info.get(key)!r}".encode())
    h.update("\n".join(dataset.paths).encode())
    return h.hexdigest()


def embedding_key(
    dataset: FaceDataset, model: nn.Module, mean: list[float], std: list[float],
    runtime: Runtime, views: int,
) -> str:  # fmt: skip
    """The cache key of a frozen ``model``'s embeddings of ``dataset`` (see the module doc)."""
    tag = f"v{EMBED_VERSION}:{type(model).__name__}:{mean}:{std}:{runtime.dtype}:{views}"
    h = hashlib.sha256(tag.encode())
    h.update(data_digest(dataset).encode())
    h.update(backbone_digest(model).encode())
    return h.hexdigest()[:24]


@torch.no_grad()
def compute_embeddings(
    model: nn.Module, images: torch.Tensor, mean: list[float], std: list[float],
    runtime: Runtime, views: int, batch_size: int = 256, log: Log | None = None,
) -> tuple[torch.Tensor, int]:  # fmt: skip
    """``(N, views, D)`` float32 embeddings (view 1: the mirror image) and the number of images
    the backbone ran on. An fp32 pass on the CPU runs on ONNX Runtime when it is installed
    (``models/cpu_pass.py``: 1.5x faster for FaceNet), else on PyTorch."""
    forward = FrozenPass(model, runtime, int(images.shape[-1]), int(images.shape[0]) * views)
    if forward.on_onnx and log is not None:
        log("The frozen backbone runs on ONNX Runtime (faster than PyTorch on the CPU)")
    index = torch.arange(images.shape[0])
    targets = torch.zeros(images.shape[0], dtype=torch.int64, device=images.device)
    parts, ran = [], 0
    size = runtime.batch(batch_size)
    for batch, _ in IndexBatches(images, targets, index, size, runtime.device).epoch():
        x = normalize(batch, mean, std)
        seen = [x, x.flip(3)][:views]
        parts.append(torch.stack([forward(v)[1].to(x.device) for v in seen], 1))
        ran += len(seen) * int(x.shape[0])
    return torch.cat(parts), ran


def _checksum(array: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(array).reshape(-1).view(np.uint8))


def read_entry(path: Path, shape: tuple[int, int, int], log: Log) -> np.ndarray | None:
    """The cached ``(N, V, D)`` embeddings at ``path`` when whole, else ``None`` after logging
    why and discarding the entry (so it is computed again)."""
    meta_path = path.with_suffix(".json")
    try:
        meta = json.loads(meta_path.read_text())
        array = np.load(path, allow_pickle=False)
        if array.dtype != np.float32 or array.shape != shape or meta.get("shape") != list(shape):
            problem = f"shape {array.shape} {array.dtype}, expected {shape} float32"
        elif meta.get("crc32") != _checksum(array):
            problem = "its checksum does not match"
        elif not np.isfinite(array).all():
            problem = "it holds NaN or infinite values"
        else:
            return array
    except FileNotFoundError:
        problem = "its checksum file is missing"
    except (OSError, ValueError, EOFError, TypeError, AttributeError) as error:
        problem = f"unreadable ({type(error).__name__})"
    log(f"Embedding cache entry {path} is damaged ({problem}); discarding it and embedding again")
    path.unlink(missing_ok=True)
    meta_path.unlink(missing_ok=True)
    return None


def embed_once(
    dataset: FaceDataset, model: nn.Module, images: torch.Tensor, mean: list[float],
    std: list[float], runtime: Runtime, views: int, cache_dir: Path, log: Log = print,
    batch_size: int = 256, memo: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:  # fmt: skip
    """The frozen ``model``'s ``(N, views, D)`` embeddings of every image, on ``runtime.device``:
    read from the cache when current, else computed once and written there atomically.

    Args:
        memo: embeddings already in memory by key (the folds of one run share them).
    """
    key = embedding_key(dataset, model, mean, std, runtime, views)
    if memo is not None and key in memo:
        return memo[key]
    path = Path(cache_dir) / "embedded" / f"{key}.npy"
    shape = (int(images.shape[0]), views, int(final_linear(model).in_features))
    cached = read_entry(path, shape, log) if path.is_file() else None
    if cached is not None:
        features = torch.from_numpy(cached).to(runtime.device)
        log(f"Embeddings of {features.shape[0]} images from the cache ({path.name}): "
            "backbone ran on 0 images")  # fmt: skip
    else:
        what = "and its mirror image " if views == 2 else ""
        log(f"Embedding every image {what}once with the frozen backbone (cache: {path.parent})")
        features, ran = compute_embeddings(
            model, images, mean, std, runtime, views, batch_size, log
        )
        array = np.ascontiguousarray(features.cpu().numpy(), dtype=np.float32)
        with atomic_path(path, array.nbytes) as tmp, tmp.open("wb") as f:
            np.save(f, array)
        # written second: an entry without it (a crash in between) is rebuilt, never trusted
        write_json(
            path.with_suffix(".json"), {"shape": list(array.shape), "crc32": _checksum(array)}
        )
        log(f"Embeddings: backbone ran on {ran} images ({features.shape[0]} x {views} views)")
    if memo is not None:
        memo[key] = features
    return features


@dataclass
class HeadOnly:
    """The head of a frozen model and how its inputs come from cached embeddings.

    Attributes:
        head: the model's final Linear layer (the same parameters as in the model).
        features: ``(N, V, D)`` embeddings of every image of the dataset; view 1 is the mirror.
    """

    head: nn.Linear
    features: torch.Tensor
    augment: AugmentConfig
    flip_tta: bool

    @classmethod
    def of(cls, model: nn.Module, features: torch.Tensor, augment: AugmentConfig,
           flip_tta: bool) -> HeadOnly:  # fmt: skip
        return cls(final_linear(model), features, augment_of(augment), flip_tta)

    def train_inputs(
        self, rows: torch.Tensor, generator: torch.Generator, where: tuple[int, int]
    ) -> torch.Tensor:
        """A training batch's embeddings ``(B, D)``: each image mirrored on the coin that
        ``augment`` would have drawn for it (its warp draws are drawn and left unused)."""
        b = rows.shape[0]
        first, total = where
        if not (self.augment.enabled and self.augment.hflip) or rows.shape[1] < 2:
            return rows[:, 0]
        for _ in range(_DRAWS_BEFORE_FLIP):
            torch.rand(total, device=rows.device, generator=generator)
        coins = torch.rand(total, device=rows.device, generator=generator)[first : first + b]
        return torch.where((coins < 0.5)[:, None], rows[:, 1], rows[:, 0])

    def eval_views(self, rows: torch.Tensor) -> list[torch.Tensor]:
        """An evaluated batch's inputs: the embedding, and the mirror's under flip TTA."""
        return [rows[:, 0], rows[:, 1]] if self.flip_tta else [rows[:, 0]]

    def outputs(self, indices: np.ndarray, runtime: Runtime) -> tuple[np.ndarray, np.ndarray]:
        """Logits and embeddings (float32, CPU) of ``indices`` as ``forward_tta`` computes them
        from images: both averaged with the mirror image's under flip TTA."""
        rows = self.features[
            torch.from_numpy(np.asarray(indices, dtype=np.int64)).to(self.features.device)
        ]
        seen = self.eval_views(rows)
        with torch.no_grad(), runtime.autocast():
            logits = sum(self.head(v).float() for v in seen) / len(seen)
        features = sum(seen) / len(seen)
        return logits.cpu().numpy(), features.float().cpu().numpy()


def views_needed(augment: AugmentConfig, flip_tta: bool) -> int:
    """2 when the mirror image is used (flip augmentation or flip TTA), else 1."""
    return 2 if flip_tta or (augment.enabled and augment_of(augment).hflip) else 1


def head_only(
    dataset: FaceDataset, model: nn.Module, images: torch.Tensor, mean: list[float],
    std: list[float], runtime: Runtime, config: RunConfig, log: Log = print,
    memo: dict[str, torch.Tensor] | None = None,
) -> HeadOnly:  # fmt: skip
    """The head of a frozen ``model`` with the embeddings it trains on (:func:`embed_once` in
    the run's cache folder, with the mirror images when the run flips)."""
    t, data = config.train, config.data
    cache_dir = Path(data.cache_dir).expanduser() if data.cache_dir else default_cache_dir()
    views = views_needed(config.augment, bool(t.flip_tta))
    if runtime.device.type == "cpu":
        # The frozen backbone's pass is inference: fp32 on the CPU, as predict runs it (so the
        # head trains on the embeddings predict computes), and faster there: FaceNet at 160 px
        # embedded 70 images/s in fp32 against 49 in bf16 on the AVX-512-BF16 dev VM. (The
        # run's precision is already resolved from ``auto`` here, so it is not consulted.)
        runtime = dataclasses.replace(runtime, dtype=None)
    features = embed_once(
        dataset, model, images, mean, std, runtime, views, cache_dir, log, t.eval_batch_size, memo
    )
    return HeadOnly.of(model, features, config.augment, bool(t.flip_tta))
