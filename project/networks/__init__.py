"""Networks: plain ``nn.Module`` classes with no training logic, and the contract they keep.

- :mod:`project.networks.base`: :class:`Network`, the contract (read it first), and the check that a network takes
  its data's input;
- :mod:`project.networks.convnet`: :class:`ConvNet`, the classic MNIST CNN;
- :mod:`project.networks.adapted`: :class:`AdaptedNetwork`, any ``nn.Module`` whose last layer is linear;
- :mod:`project.networks.library`: :class:`LibraryNetwork`, a torchvision, timm or Hugging Face backbone;
- :mod:`project.networks.text_transformer`: :class:`TextTransformer`, a small transformer encoder for text;
- :mod:`project.networks.hf_text`: :class:`HuggingFaceText`, a BERT-family text model from Hugging Face;
- :mod:`project.networks.lora`: LoRA adapters on a frozen backbone (peft).
"""

from project.networks.adapted import AdaptedNetwork
from project.networks.base import Network, check_input
from project.networks.convnet import ConvNet
from project.networks.hf_text import HuggingFaceText
from project.networks.library import LibraryNetwork
from project.networks.text_transformer import TextTransformer

__all__ = [
    "AdaptedNetwork",
    "ConvNet",
    "HuggingFaceText",
    "LibraryNetwork",
    "Network",
    "TextTransformer",
    "check_input",
]
