from . import (  # noqa: F401
    adaptive_lm,
    adaptive_transformer,
    lm_architectures,
    lstm_architectures,
    lstm_lm,
    txl_architectures,
    txl_lm,
)
