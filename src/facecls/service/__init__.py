"""The local HTTP service and its pages: above ``inference/`` and ``library/``, below the CLI."""
