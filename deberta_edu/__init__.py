"""deberta-edu: the DeBERTa paper (He et al., 2020, arXiv 2006.03654) built in readable PyTorch.

Reading order follows the data: positions -> attention -> model -> emd -> masking; interop checks the
whole against Hugging Face transformers.
"""

from .attention import DisentangledSelfAttention, DisentangledSelfAttentionV1, naive_attention
from .checkpoint import lesson_checkpoint, load_pretrained, save_pretrained
from .config import VARIANTS, DebertaConfig, make_config
from .emd import DebertaForMaskedLM, EnhancedMaskDecoder, MLMHead
from .interop import from_hf, to_hf
from .masking import mask_tokens
from .model import DebertaModel
from .positions import log_bucket, relative_distance, relative_distance_matrix

__all__ = [
    "DebertaConfig",
    "lesson_checkpoint",
    "load_pretrained",
    "save_pretrained",
    "DebertaForMaskedLM",
    "DebertaModel",
    "DisentangledSelfAttention",
    "DisentangledSelfAttentionV1",
    "EnhancedMaskDecoder",
    "MLMHead",
    "VARIANTS",
    "from_hf",
    "log_bucket",
    "make_config",
    "mask_tokens",
    "naive_attention",
    "relative_distance",
    "relative_distance_matrix",
    "to_hf",
]
