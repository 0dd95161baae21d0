"""Embeddings are the input of the final Linear layer, for seed and torchvision models."""

from __future__ import annotations

import pytest
import torch

from facecls.models import create_model
from facecls.models.embedding import embed, final_linear, logits_and_features

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize(
    ("name", "dim"),
    [("baseline", 300), ("tronnet", 300), ("resnet18", 512), ("mobilenet_v2", 1280)],
)
def test_features_feed_the_final_linear(name: str, dim: int) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, image_size=64).eval()
    images = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        logits, features = logits_and_features(model, images)
        assert features.shape == (3, dim) and logits.shape == (3, 7)
        # Oracle: the final layer applied to the captured features gives the logits.
        assert torch.allclose(final_linear(model)(features), logits, atol=1e-5)
        assert torch.allclose(model(images), logits)  # the hook is gone and changed nothing
    unit = embed(model, images)
    assert torch.allclose(unit.norm(dim=1), torch.ones(3), atol=1e-5)


def test_model_without_linear_is_refused() -> None:
    with pytest.raises(ValueError, match="no nn.Linear"):
        final_linear(torch.nn.Conv2d(3, 4, 3))
