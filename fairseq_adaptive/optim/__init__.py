"""Optimizers and schedules fairseq does not have: NT-ASGD (AWD-LSTM's)."""

from . import nt_asgd  # noqa: F401
