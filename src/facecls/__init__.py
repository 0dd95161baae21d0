"""facecls: face-identity CNN classifiers on imbalanced data."""
