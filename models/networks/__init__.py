"""The networks of the reference models (``nn.Module``s and their configurations; no training, no files).

- :mod:`.autoencoders`: VAE, VQ-VAE, RQ-VAE (the MNIST study's encoder/decoder) and :class:`ModelConfig`;
- :mod:`.rq_transformer`: the RQ-Transformer prior over RQ codes (:class:`PriorConfig`), with KV-cached sampling;
- :mod:`.classifier`: the small MNIST CNN that judges generated digits.
"""

from .autoencoders import (
    MODEL_NAMES, RQVAE, VAE, VQVAE, Autoencoder, ModelConfig, build_model, decode_images, encode_images,
)
from .classifier import MNISTClassifier, predict
from .rq_transformer import PriorConfig, RQTransformer, flatten_codes, unflatten_codes

__all__ = [
    "MODEL_NAMES", "Autoencoder", "VAE", "VQVAE", "RQVAE", "ModelConfig", "build_model",
    "encode_images", "decode_images",
    "PriorConfig", "RQTransformer", "flatten_codes", "unflatten_codes",
    "MNISTClassifier", "predict",
]
