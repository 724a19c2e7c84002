from . import adaptive_cross_entropy  # noqa: F401
