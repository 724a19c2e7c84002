from . import adaptive_cross_entropy, adaptive_label_smoothed_cross_entropy  # noqa: F401
