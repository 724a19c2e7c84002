from . import adaptive_language_modeling  # noqa: F401
