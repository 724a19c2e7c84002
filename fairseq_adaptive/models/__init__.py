from . import adaptive_lm, adaptive_transformer, lm_architectures, txl_architectures, txl_lm  # noqa: F401
