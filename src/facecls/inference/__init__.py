"""Inference wing: a trained bundle in use — loading it (``model``), running it (``backends``:
PyTorch or ONNX Runtime), photos → faces (``faces``, ``detect``), ``predict``, open-set
``calibration``, ``enroll``, ``strangers`` and ONNX ``export``. It never imports training."""
