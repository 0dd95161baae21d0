"""The face library: every face of a photo collection indexed once (store, vectors, index),
clustered into people and named. Uses ``inference/``, ``data/``, ``models/`` and the floor;
only the service and the top import it."""
