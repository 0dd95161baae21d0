"""Re-sampling for imbalanced identities: class-balanced and square-root sampling on the device.

With ``n_c`` training images of identity ``c``, an epoch draws as many images as the training part
holds, with replacement, each draw picking identity ``c`` with probability

* ``class-balanced``: ``1 / K`` (every identity equally often; Kang et al., ICLR 2020, "class-balanced
  sampling"; Shen et al. 2016),
* ``sqrt``: ``√n_c / Σ √n`` (square-root sampling; Mahajan et al., ECCV 2018; Kang et al. 2020),

and then one of that identity's images uniformly. Draws are ``torch.multinomial`` over per-image
weights on the device the indices live on, with a generator seeded per epoch, so an epoch's batches
depend only on (seed, fold, epoch), as with :class:`~facecls.data.batches.IndexBatches`.
"""

from __future__ import annotations

import numpy as np
import torch

from facecls.config import SAMPLERS as config_samplers
from facecls.data.batches import IndexBatches, Shard

SAMPLERS = tuple(s for s in config_samplers if s != "none")  # the schemes drawn here


def class_probabilities(counts: np.ndarray, scheme: str) -> np.ndarray:
    """Probability that one draw picks each class, for classes with ``counts`` images (``(K,)``)."""
    counts = np.asarray(counts, dtype=np.float64)
    if scheme == "class-balanced":
        raw = (counts > 0).astype(np.float64)
    elif scheme == "sqrt":
        raw = np.sqrt(counts)
    elif scheme == "none":
        raw = counts
    else:
        raise ValueError(f"unknown sampler {scheme!r}; choose 'none', {', '.join(SAMPLERS)}")
    return raw / raw.sum()


def sample_weights(targets: torch.Tensor, num_classes: int, scheme: str) -> torch.Tensor:
    """Per-image draw weights (float32, same device as ``targets``): class probability / n_c."""
    counts = torch.bincount(targets, minlength=num_classes).double()
    probs = torch.from_numpy(class_probabilities(counts.cpu().numpy(), scheme)).to(targets.device)
    per_class = torch.where(counts > 0, probs / counts.clamp_min(1), torch.zeros_like(probs))
    return per_class[targets].float()


class SampledBatches(IndexBatches):
    """:class:`IndexBatches` whose epochs are drawn with replacement by ``scheme``.

    Args:
        scheme: ``class-balanced`` or ``sqrt``.
        num_classes: classes of the targets (absent ones get no draws).
        Others as :class:`IndexBatches`; ``shuffle`` is implied.
    """

    def __init__(
        self,
        images: torch.Tensor,
        targets: torch.Tensor,
        indices: torch.Tensor,
        batch_size: int,
        device: torch.device,
        scheme: str,
        num_classes: int,
        drop_last: bool = False,
        shard: Shard | None = None,
    ) -> None:
        super().__init__(images, targets, indices, batch_size, device, True, drop_last, shard)
        self.scheme = scheme
        self.weights = sample_weights(self.targets[self.indices], num_classes, scheme)

    def draw(self, seed: int) -> torch.Tensor:
        """The epoch's image indices, ``(len(indices),)``, drawn on the indices' device."""
        generator = torch.Generator(device=self.weights.device).manual_seed(seed)
        picks = torch.multinomial(
            self.weights, self.indices.numel(), replacement=True, generator=generator
        )
        return self.indices[picks]

    def _order(self, seed: int | None) -> torch.Tensor:
        # The drawn order replaces the permutation; IndexBatches.epoch then cuts each rank's rows
        # of every global batch, so the sampler works unchanged across processes.
        return self.draw(seed or 0)
