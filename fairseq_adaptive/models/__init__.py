from . import adaptive_lm, adaptive_transformer, lm_architectures  # noqa: F401
