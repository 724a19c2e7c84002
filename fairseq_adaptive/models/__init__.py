from . import adaptive_lm, lm_architectures  # noqa: F401
