from .adaptive_input import AdaptiveInput
from .adaptive_softmax import AdaptiveSoftmax
from .define import DeFINE

__all__ = ["AdaptiveInput", "AdaptiveSoftmax", "DeFINE"]
