"""Inference wing: a trained bundle in use — loading it (``model``, ``model_inputs``), running it
(``backends``: PyTorch or ONNX Runtime), photos → faces (``faces``, ``photos``, ``detect``),
``predict``, ``annotate``, open-set ``calibration``, ``enroll``, ``strangers``, ONNX ``export``,
``verify`` (embed, 1:1), ``search`` (1:N) and ``video``. It never imports training; the HTTP
service that uses it is ``facecls.service``."""
