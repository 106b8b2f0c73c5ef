"""deberta-edu: the DeBERTa paper (He et al., 2021, arXiv 2006.03654) built in readable PyTorch.

The package is in wings, and arrows point one way (a test checks it):

    facts, figures,  what every wing shares (ids, paths, file names, the smoke flag; how figures are made;
    files            files written atomically, build locks)
    model/           config → positions → attention → encoder → emd; classify, checkpoint, interop
    data/            text → corpus → tokenizer → packing; sentiment         (never imports the model)
    training/        masking, engine, pretrain, sift, finetune, bench     (imports model and data)
    ablation/        lesson 6: plan → run → report                         (imports training)
    lessons/         viz, plots, widgets, explorer, pretrained, exercises  (imports anything; imported by none)

The public API is re-exported here, so lessons and users never need a wing's path. ``viz``, ``widgets``
and ``exercises`` are loaded on first use (they pull in matplotlib and ipywidgets).
"""

from __future__ import annotations

import importlib

from .model.attention import DisentangledSelfAttention, DisentangledSelfAttentionV1
from .model.checkpoint import lesson_checkpoint, load_pretrained, save_pretrained
from .model.config import VARIANTS, DebertaConfig, make_config
from .model.emd import DebertaForMaskedLM, EnhancedMaskDecoder, MLMHead
from .model.encoder import DebertaModel
from .model.interop import from_hf, to_hf
from .model.naive import naive_attention
from .model.positions import log_bucket, relative_distance, relative_distance_matrix
from .training.masking import mask_tokens

_LAZY = {"viz": "deberta_edu.lessons.viz", "widgets": "deberta_edu.lessons.widgets",
         "exercises": "deberta_edu.lessons.exercises"}


def load_course_model(folder=None):
    """(DebertaForMaskedLM with its EMD, Tokenizer): the committed course model (results/course-model/), offline."""
    from .training.course import load_course_model as load

    return load(folder)


def __getattr__(name: str):
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name])
        globals()[name] = module
        return module
    raise AttributeError(f"module 'deberta_edu' has no attribute {name!r}")


__all__ = [
    "DebertaConfig",
    "lesson_checkpoint",
    "load_course_model",
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
    "viz",
    "widgets",
    "exercises",
]
