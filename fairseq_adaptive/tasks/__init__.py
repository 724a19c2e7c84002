from . import adaptive_language_modeling, bptt_lm  # noqa: F401
