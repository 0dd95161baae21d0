"""MTCNN face detector with 5-point landmarks, offline, on any torch device.

The three cascaded nets of Zhang et al. 2016 (:mod:`facecls.data.mtcnn_nets`): P-Net proposes
12 px windows over an image pyramid, R-Net re-scores 24 px crops, O-Net re-scores 48 px crops and
places the landmarks. Weights: facenet-pytorch 2.6.0's, shipped as package data in
``facecls/weights/mtcnn.safetensors`` (MIT, see ``MTCNN-LICENSE.txt``; regenerate with
``scripts/convert_mtcnn.py``).

Conventions: boxes are ``x1, y1, x2, y2`` in image pixels, half-open (``x2 - x1`` is the width),
not clipped to the image, so a face cut by the border keeps its full box. Crops of boxes that
reach outside the image are zero-filled there, as in the original MTCNN.

Photos whose longer side exceeds ``max_side`` (1600 px) are downscaled before the pyramid and the
results scaled back: P-Net's first pyramid level is ``12 / min_face_size`` (0.6) times the image,
so a 6000 x 4000 photo would feed a 3600 x 2400 map through a 10-channel conv (~350 MB per image),
and faces in such photos are big anyway. ``min_face_size`` then applies to the downscaled photo.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision.ops import batched_nms, roi_align

from facecls.data.detections import Detections  # the faces found, re-exported here
from facecls.data.mtcnn_nets import ONet, PNet, RNet, load_nets


def _normalise(x: torch.Tensor) -> torch.Tensor:
    # MTCNN's input scaling: uint8 range to about [-1, 1].
    return (x - 127.5) * 0.0078125


def _regress(boxes: torch.Tensor, reg: torch.Tensor) -> torch.Tensor:
    """Shift ``(K, 4)`` boxes by ``(K, 4)`` regression offsets given in box widths/heights."""
    size = (boxes[:, 2:4] - boxes[:, 0:2]).repeat(1, 2)  # (K, 4): w, h, w, h
    return boxes + reg * size


def _square(boxes: torch.Tensor) -> torch.Tensor:
    """Grow ``(K, 4)`` boxes to squares about their centres, on whole pixels, at least 1 px."""
    side = (boxes[:, 2:4] - boxes[:, 0:2]).amax(dim=1, keepdim=True)  # (K, 1)
    corner = ((boxes[:, 0:2] + boxes[:, 2:4] - side) / 2).floor()
    side = side.round().clamp(min=1)
    return torch.cat([corner, corner + side], dim=1)


def _crops(
    images: list[torch.Tensor], boxes: torch.Tensor, owner: torch.Tensor, size: int
) -> torch.Tensor:
    """Normalised ``(K, 3, size, size)`` crops of whole-pixel ``boxes`` from ``images[owner]``."""
    out = torch.empty(len(boxes), 3, size, size, device=boxes.device)
    for k, ((x1, y1, x2, y2), i) in enumerate(
        zip(boxes.long().tolist(), owner.tolist(), strict=True)
    ):
        image = images[i]  # (3, H, W) float 0..255
        h, w = image.shape[1:]
        ya, yb, xa, xb = max(y1, 0), min(y2, h), max(x1, 0), min(x2, w)
        if (ya, yb, xa, xb) == (y1, y2, x1, x2):
            canvas = image[None, :, y1:y2, x1:x2]
        else:  # zero-filled canvas of the whole box; the part inside the image is copied in
            canvas = image.new_zeros(1, 3, y2 - y1, x2 - x1)
            if yb > ya and xb > xa:
                canvas[0, :, ya - y1 : yb - y1, xa - x1 : xb - x1] = image[:, ya:yb, xa:xb]
        mode = "area" if y2 - y1 >= size else "bilinear"
        out[k] = F.interpolate(canvas, size=(size, size), mode=mode)[0]
    return _normalise(out)


def _roi_crops(
    images: list[torch.Tensor], boxes: torch.Tensor, owner: torch.Tensor, size: int
) -> torch.Tensor:
    """:func:`_crops` in one ``roi_align`` per image instead of a resize per box (the fast
    detector): bilinear samples averaged over each output cell, about the same as area
    resizing; a box past the border samples zeros there as the canvas does."""
    out = torch.empty(len(boxes), 3, size, size, device=boxes.device)
    for i in owner.unique().tolist():
        mine = (owner == i).nonzero()[:, 0]
        out[mine] = roi_align(images[i][None], [boxes[mine].float()], size, aligned=True)
    return _normalise(out)


def _min_nms(
    boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, thr: float
) -> torch.Tensor:
    """Greedy NMS on intersection over the smaller box (drops a box nested in a better one)."""
    order = scores.argsort(descending=True)
    boxes, groups = boxes[order], groups[order]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])  # (K,)
    lt = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])  # (K, K, 2)
    rb = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    overlap = inter / torch.minimum(area[:, None], area[None, :]).clamp(min=1e-6)
    suppress = (overlap > thr) & (groups[:, None] == groups[None, :])  # (K, K)
    keep = torch.ones(len(boxes), dtype=torch.bool, device=boxes.device)
    for k in range(len(boxes)):
        if keep[k]:
            keep[k + 1 :] &= ~suppress[k, k + 1 :]
    return order[keep]


class MTCNN:
    """Batched MTCNN detector; the weights load on first use.

    Args:
        device: torch device the nets and images go to.
        min_face_size: smallest face side looked for, in pixels (after any ``max_side`` cap).
        thresholds: face probability needed by P-Net, R-Net and O-Net.
        factor: scale step between pyramid levels.
        max_side: photos with a longer side are downscaled to it first (see the module notes).
        fast: build the pyramid with uint8 antialiased bilinear resizing and cut R-Net/O-Net
            crops with ``roi_align`` (several times faster on the CPU; boxes within a pixel or
            so of the default's, which reproduces facenet-pytorch and which the training
            caches were made with).
    """

    def __init__(
        self,
        device: str | torch.device = "cpu",
        min_face_size: int = 20,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
        factor: float = 0.709,
        max_side: int = 1600,
        fast: bool = False,
    ) -> None:
        self.device = torch.device(device)
        self.min_face_size = min_face_size
        self.thresholds = thresholds
        self.factor = factor
        self.max_side = max_side
        self.fast = fast
        self._nets: tuple[PNet, RNet, ONet] | None = None

    def nets(self) -> tuple[PNet, RNet, ONet]:
        """P-Net, R-Net and O-Net, loaded once."""
        if self._nets is None:
            self._nets = load_nets(self.device)
        return self._nets

    @torch.inference_mode()
    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """Find the faces in RGB uint8 ``(H, W, 3)`` photos (sizes may differ); one result each."""
        if isinstance(images, np.ndarray) and images.ndim == 3:
            raise TypeError("detect takes a sequence of images: pass [image] for one photo")
        tensors, shrink = [], []
        for array in images:
            if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
                raise ValueError(f"expected RGB uint8 (H, W, 3), got {array.dtype} {array.shape}")
            s = min(1.0, self.max_side / max(1, *array.shape[:2]))
            if s < 1.0:  # shrink in uint8 (box filter) before a float copy of a huge photo exists
                size = (max(1, round(array.shape[1] * s)), max(1, round(array.shape[0] * s)))
                array = np.asarray(Image.fromarray(array).resize(size, Image.Resampling.BOX))
            image = torch.tensor(array, device=self.device)  # a copy: the input may be read-only
            tensors.append(image.permute(2, 0, 1).float())  # (3, H, W), 0..255
            shrink.append(s)
        boxes, owner = self._propose(tensors)  # (K, 4), (K,)
        if len(boxes):
            boxes, owner = self._refine(tensors, boxes, owner)
        boxes, scores, points, owner = self._output(tensors, boxes, owner)
        results = []
        for i, s in enumerate(shrink):
            mine = (owner == i).nonzero()[:, 0]
            mine = mine[scores[mine].argsort(descending=True)]
            results.append(
                Detections(
                    boxes=(boxes[mine] / s).cpu().numpy().reshape(-1, 4),
                    scores=scores[mine].cpu().numpy().reshape(-1),
                    landmarks=(points[mine] / s).cpu().numpy().reshape(-1, 5, 2),
                )
            )
        return results

    def _scales(self, h: int, w: int) -> list[float]:
        """Pyramid scales: a ``min_face_size`` face maps to 12 px, down to a 12 px short side."""
        scale, scales = 12.0 / self.min_face_size, []
        while min(h, w) * scale >= 12:
            scales.append(scale)
            scale *= self.factor
        return scales

    def _propose(self, images: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """P-Net over every pyramid: squared candidate boxes ``(K, 4)`` and their image ``(K,)``."""
        pnet = self.nets()[0]
        by_size: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, image in enumerate(images):
            by_size[(image.shape[1], image.shape[2])].append(i)
        found = [torch.empty(0, 9, device=self.device)]  # rows: x1 y1 x2 y2 score reg(4)
        owners = [torch.empty(0, dtype=torch.long, device=self.device)]
        for (h, w), members in by_size.items():
            scales = self._scales(h, w)  # none for images under 12 px: no face there
            # Same-size images share a batch, capped at ~16 M input pixels per P-Net pass.
            step = max(1, 16_000_000 // max(1, h * w))
            for start in range(0, len(members), step):
                ids = torch.tensor(members[start : start + step], device=self.device)
                batch = torch.stack([images[i] for i in ids.tolist()])  # (B, 3, H, W)
                pixels = batch.to(torch.uint8) if self.fast else batch  # whole numbers: lossless
                for scale in scales:
                    size = (int(h * scale + 1), int(w * scale + 1))
                    if self.fast:
                        level = F.interpolate(pixels, size, mode="bilinear", antialias=True)
                    else:
                        level = F.interpolate(batch, size=size, mode="area")
                    reg, prob = pnet(_normalise(level.float()))
                    # Cells with a face: (M, 3) rows of (batch index, y, x).
                    cells = (prob[:, 1] >= self.thresholds[0]).nonzero()
                    b, y, x = cells.unbind(1)
                    corner = torch.stack([x, y], 1).float() * 2  # stride 2 in the scaled image
                    boxes = torch.cat([corner, corner + 12], 1) / scale  # (M, 4)
                    score = prob[b, 1, y, x]
                    pick = batched_nms(boxes, score, b, 0.5)
                    reg = reg[b, :, y, x]  # (M, 4)
                    found.append(torch.cat([boxes, score[:, None], reg], 1)[pick])
                    owners.append(ids[b[pick]])
        rows, owner = torch.cat(found), torch.cat(owners)
        pick = batched_nms(rows[:, :4], rows[:, 4], owner, 0.7)  # across scales
        rows, owner = rows[pick], owner[pick]
        return _square(_regress(rows[:, :4], rows[:, 5:])), owner

    def _refine(
        self, images: list[torch.Tensor], boxes: torch.Tensor, owner: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """R-Net on 24 px crops of all candidates of all images at once."""
        crops = (_roi_crops if self.fast else _crops)(images, boxes, owner, 24)
        reg, prob = _chunked(self.nets()[1], crops)
        keep = prob[:, 1] > self.thresholds[1]
        boxes, owner, reg, score = boxes[keep], owner[keep], reg[keep], prob[keep, 1]
        pick = batched_nms(boxes, score, owner, 0.7)
        return _square(_regress(boxes[pick], reg[pick])), owner[pick]

    def _output(
        self, images: list[torch.Tensor], boxes: torch.Tensor, owner: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """O-Net on 48 px crops: boxes ``(n, 4)``, scores, landmarks ``(n, 5, 2)``, owners."""
        if len(boxes) == 0:
            empty = torch.empty(0, device=self.device)
            return empty.view(0, 4), empty, empty.view(0, 5, 2), owner[:0]
        crops = (_roi_crops if self.fast else _crops)(images, boxes, owner, 48)
        reg, marks, prob = _chunked(self.nets()[2], crops)
        keep = prob[:, 1] > self.thresholds[2]
        boxes, owner, reg, marks = (t[keep] for t in (boxes, owner, reg, marks))
        score = prob[keep, 1]
        # Landmarks are fractions of the (square) O-Net input box: (n, 5, 2) of x, y.
        size = boxes[:, 2:4] - boxes[:, 0:2]  # (n, 2)
        points = boxes[:, None, 0:2] + torch.stack([marks[:, :5], marks[:, 5:]], 2) * size[:, None]
        boxes = _regress(boxes, reg)
        pick = _min_nms(boxes, score, owner, 0.7)
        return boxes[pick], score[pick], points[pick], owner[pick]


def _chunked(net: nn.Module, x: torch.Tensor, chunk: int = 2048) -> tuple[torch.Tensor, ...]:
    """``net(x)`` in chunks of ``chunk`` crops, so thousands of candidates stay within memory."""
    outs = [net(x[i : i + chunk]) for i in range(0, len(x), chunk)]
    if not outs:
        outs = [net(x)]
    return tuple(torch.cat(parts) for parts in zip(*outs, strict=True))
