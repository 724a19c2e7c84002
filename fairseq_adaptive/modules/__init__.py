from .adaptive_input import AdaptiveInput
from .adaptive_softmax import AdaptiveSoftmax

__all__ = ["AdaptiveInput", "AdaptiveSoftmax"]
