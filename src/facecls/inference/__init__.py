"""Inference wing: a trained bundle in use — loading it (``model``), running it (``backends``:
PyTorch or ONNX Runtime), photos → faces (``faces``, ``detect``), ``predict``, open-set
``calibration``, ``enroll``, ``strangers``, ONNX ``export``, ``verify`` (embed, 1:1), ``search``
(1:N), ``video``, and the local service (``serve``, ``service``, ``store``, ``batching``,
``uploads``, ``page``). It never imports training."""
