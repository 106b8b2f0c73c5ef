"""Saving and loading models as safetensors (no pickle), written atomically.

A model folder holds ``model.safetensors`` (weights; the config as JSON in the file's metadata) and,
when given, ``tokenizer.model`` (SentencePiece). Writes go to a temporary file in the same folder and
are renamed into place, so a crash never leaves a half-written checkpoint behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from deberta_edu.facts import CONFIG_FILE, MODEL_FILE, TOKENIZER_FILE, checkpoint_dir

from .config import DebertaConfig
from .emd import DebertaForMaskedLM
from .encoder import DebertaModel


def atomic_write(path: str | Path, write) -> Path:
    """Call ``write(tmp_path)`` and rename the result onto ``path`` (atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def save_tensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None):
    """safetensors file of contiguous CPU tensors (tied weights are stored once each name)."""
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}


def save_pretrained(model: DebertaModel | DebertaForMaskedLM, folder: str | Path, tokenizer_file=None,
                    dtype: torch.dtype | None = None) -> Path:
    """Write ``folder/model.safetensors`` (+ ``tokenizer.model`` when a SentencePiece file is given).

    ``dtype=torch.float16`` halves the file (the committed course model); loading casts back to float32.
    """
    folder = Path(folder)
    kind = "mlm" if isinstance(model, DebertaForMaskedLM) else "encoder"
    meta = {"config": json.dumps(model.config.to_dict()), "kind": kind, "format": "deberta_edu/1"}
    state = model.state_dict()
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    save_tensors(state, folder / MODEL_FILE, meta)
    if tokenizer_file is not None:
        atomic_write(folder / TOKENIZER_FILE, lambda tmp: shutil.copyfile(tokenizer_file, tmp))
    return folder


def load_pretrained(folder: str | Path, map_location: str | torch.device = "cpu"):
    """The model saved in ``folder`` (DebertaForMaskedLM or DebertaModel), in eval mode."""
    folder = Path(folder)
    path = folder / MODEL_FILE if folder.is_dir() else folder
    if not path.exists():
        raise FileNotFoundError(
            f"no checkpoint at {path}; lesson 4 (notebooks/04_mlm_pretraining) or "
            "`python -m deberta_edu.pretrain` writes one"
        )
    state, meta = load_tensors(path)
    if "config" not in meta:
        raise ValueError(f"{path} has no deberta_edu config in its metadata; was it written by save_pretrained?")
    config = DebertaConfig.from_dict(json.loads(meta["config"]))
    model = DebertaForMaskedLM(config) if meta.get("kind") == "mlm" else DebertaModel(config)
    model.load_state_dict(state)
    return model.to(map_location).eval()


def lesson_checkpoint(name: str = "lesson4") -> Path:
    """Where a lesson's trained model lives: <data root>/checkpoints/<name> (data root: $DEBERTA_EDU_DATA)."""
    return checkpoint_dir(name)


def describe_checkpoint(folder: str | Path) -> str:
    """One line for a reader: which run made the model in ``folder`` (from its train_config.json)."""
    folder = Path(folder)
    origin = f"checkpoint {folder.name}"
    config_file = folder / CONFIG_FILE
    if config_file.exists():
        cfg = json.loads(config_file.read_text())
        steps = f"{cfg.get('steps')} steps of {cfg.get('batch_size')} x {cfg.get('seq_length')} tokens"
        origin = f"{cfg.get('name')} ({steps}, {cfg.get('source')}), checkpoint {folder.name}"
    return origin
