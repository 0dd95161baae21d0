"""Training wing: the loops, one fold's trainer, whole runs (``fit``, ``cross_validate``), test
evaluation, losses, optimisation, fine-tuning, checkpoints, interrupts, resume and several
processes. It may use inference (it calibrates what it trained) and report (it writes the run's
files); nothing below it imports it."""
