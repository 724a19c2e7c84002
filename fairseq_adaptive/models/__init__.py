from . import adaptive_lm  # noqa: F401
