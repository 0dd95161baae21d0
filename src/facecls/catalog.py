"""Names the command line offers, readable without importing torch or numpy (fast start-up).

``facecls models`` prints :data:`MODELS` so that it answers at once; the registry
(``models/registry.py``) is the source of truth, and ``tests/test_startup.py`` checks that the
two agree. A model registered by a user's own code is listed by ``facecls.list_models()``.
"""

from __future__ import annotations

# (name, description) of every model facecls registers, sorted by name.
MODELS: tuple[tuple[str, str], ...] = (
    ("baseline", "Seed report Table 1: 4 convs, BatchNorm, 2 linear (no ReLU on logits)"),
    ("baseline-report", "Table 1 as printed, with the harmful ReLU on the logits"),
    (
        "facenet",
        "FaceNet Inception-ResNet-v1, 512-d embedding; weights: facecls weights get facenet",
    ),
    ("mobilenet_v2", "torchvision MobileNetV2, ImageNet weights"),
    ("resnet18", "torchvision ResNet-18 (report §3.4), ImageNet weights"),
    (
        "sface",
        "SFace (OpenCV Zoo), 128-d embedding of 112 px aligned faces; weights: facecls weights "
        "get sface",
    ),
    ("tronnet", "Seed report Table 2: 7 convs, 2 max-pools, BatchNorm, Xavier init"),
    ("tronnet-report", "Table 2 as the report ran it: F = 1210 at 224 px, double ReLU"),
)

# The open-set scores (``openset.py``, which re-exports this tuple).
METHODS: tuple[str, ...] = ("msp", "energy", "centroid", "margin", "fused")

# How ``facecls cluster`` groups a library's faces (``library/cluster.py``, which re-exports it).
CLUSTER_METHODS: tuple[str, ...] = ("agglomerative", "chinese-whispers", "hdbscan", "dbscan")
