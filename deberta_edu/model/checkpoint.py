"""Saving and loading models as safetensors (no pickle), written atomically, checked when read.

A model folder holds ``model.safetensors`` (weights; the config as JSON in the file's metadata) and,
when given, ``tokenizer.model`` (SentencePiece). Writes go to a temporary file in the same folder and
are renamed into place (``deberta_edu.files``), so a crash never leaves a half-written checkpoint behind.
Every file carries a checksum of its tensors; loading checks it, and checks the config written with
the weights against their names and shapes before a model is built.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import safetensors.torch
import torch

from deberta_edu import files
from deberta_edu.facts import CONFIG_FILE, MODEL_FILE, TOKENIZER_FILE, checkpoint_dir

from .config import DebertaConfig
from .emd import DebertaForMaskedLM
from .encoder import DebertaModel

CHECKSUM_KEY = "tensors_sha256"  # metadata: SHA-256 of the file's tensor bytes, checked on every load


def _header(head: bytes, size: int, path) -> tuple[int, dict]:
    """(header length, header) of a safetensors file of ``size`` bytes whose first bytes are ``head``."""
    what = f"{path} is not a safetensors file"
    if size < 8:
        raise ValueError(f"{what}: {size} bytes, shorter than any (was the write cut short?)")
    n = int.from_bytes(head[:8], "little")
    if n > size - 8 or n > 100 << 20:
        raise ValueError(f"{what}: its header claims {n:,} bytes, the file has {size:,} (truncated or damaged?)")
    if len(head) < 8 + n:
        return n, {}
    try:
        header = json.loads(head[8: 8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError(f"{what}: its header is not JSON (damaged, or another kind of file)") from None
    if not isinstance(header, dict):
        raise ValueError(f"{what}: its header is not a table of tensors")
    return n, header


def read_header(path: str | Path) -> tuple[dict[str, str], dict[str, tuple[int, ...]]]:
    """(metadata, {name: shape}) of a safetensors file, reading only its header: what to check before loading."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        n, _ = _header(head, size, path)
        _, header = _header(head + f.read(n), size, path)
    meta = header.pop("__metadata__", None) or {}
    try:
        shapes = {k: tuple(int(d) for d in v["shape"]) for k, v in header.items()}
    except (TypeError, KeyError, ValueError):
        raise ValueError(f"{path} is not a safetensors file: its header does not describe tensors") from None
    return meta, shapes


def save_tensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None):
    """safetensors file of contiguous CPU tensors, written atomically, with a checksum of its tensors.

    The checksum (``tensors_sha256`` in the metadata) covers the tensor bytes, so a flipped byte is found
    on load instead of being trained on. Temporary files of ``path`` left by a killed writer are removed.
    """
    path = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    meta = {k: v for k, v in (metadata or {}).items() if k != CHECKSUM_KEY}
    first = safetensors.torch.save(tensors, metadata=meta)
    n = int.from_bytes(first[:8], "little")
    meta[CHECKSUM_KEY] = hashlib.sha256(memoryview(first)[8 + n:]).hexdigest()
    files.remove_stale_temps(path.parent, path.name)
    files.write_bytes(path, safetensors.torch.save(tensors, metadata=meta))
    return path


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file; refuses, naming the file, one that is damaged or not one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no file at {path}")
    blob = path.read_bytes()
    n, header = _header(blob, len(blob), path)
    meta = header.get("__metadata__") or {}
    try:
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (TypeError, KeyError, ValueError, IndexError):
        raise ValueError(f"{path} is not a safetensors file: its header does not describe tensors") from None
    if len(blob) - 8 - n < end:
        raise ValueError(f"{path} is truncated or damaged: its tensors need {end:,} bytes after the header, "
                         f"the file has {len(blob) - 8 - n:,}")
    expected = meta.get(CHECKSUM_KEY)
    if expected is not None and hashlib.sha256(memoryview(blob)[8 + n:]).hexdigest() != expected:
        raise ValueError(f"{path} is damaged: its tensors do not match the checksum written with them. "
                         "Use an earlier copy, or start the run afresh")
    try:
        tensors = safetensors.torch.load(blob)
    except Exception as err:  # safetensors' own error types say little about which file
        raise ValueError(f"{path} is not a readable safetensors file ({err})") from None
    return tensors, dict(meta)


def _shape(x) -> tuple[int, ...]:
    return tuple(x.shape) if hasattr(x, "shape") else tuple(x)


def check_sizes(config: DebertaConfig, shapes: dict, prefix: str, what: str) -> None:
    """The config's sizes against the tensors (or their shapes), before a model is built: a config that claims
    100,000 layers over the weights of 2 must not allocate 100,000 layers first."""
    layers = {int(m[1]) for k in shapes if (m := re.match(re.escape(prefix) + r"encoder\.layers?\.(\d+)\.", k))}
    if layers != set(range(config.num_hidden_layers)):
        raise ValueError(
            f"the config of {what} says num_hidden_layers={config.num_hidden_layers}, but its weights hold "
            f"{len(layers)} layers; the config and the weights do not belong together"
        )
    word = shapes.get(prefix + "embeddings.word_embeddings.weight")
    if word is not None and _shape(word) != (config.vocab_size, config.hidden_size):
        raise ValueError(
            f"the config of {what} says vocab_size={config.vocab_size}, hidden_size={config.hidden_size}, "
            f"but the word embeddings have shape {_shape(word)}"
        )


def check_fits(model_class, config: DebertaConfig, shapes: dict, what: str) -> None:
    """Every tensor ``model_class(config)`` needs is in ``shapes`` with its shape (built on the meta device)."""
    check_sizes(config, shapes, "deberta." if model_class is DebertaForMaskedLM else "", what)
    with torch.device("meta"):  # names and shapes, without allocating a weight
        expected = {k: tuple(v.shape) for k, v in model_class(config).state_dict().items()}
    missing = sorted(set(expected) - set(shapes))
    wrong = [f"{k}: {_shape(shapes[k])}, expected {v}" for k, v in expected.items()
             if k in shapes and _shape(shapes[k]) != v]
    if missing or wrong:
        listed = "; ".join(wrong[:3] + [f"no {k!r}" for k in missing[:3]])
        raise ValueError(f"the weights of {what} do not fit the config written with them ({listed})")


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
        files.copy(tokenizer_file, folder / TOKENIZER_FILE)
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
    meta, shapes = read_header(path)  # the config is checked against the shapes before anything is built
    if "config" not in meta:
        raise ValueError(f"{path} has no deberta_edu config in its metadata; was it written by save_pretrained?")
    try:
        config = DebertaConfig.from_dict(json.loads(meta["config"]))
    except (json.JSONDecodeError, TypeError) as err:
        raise ValueError(f"{path}: the config in its metadata is not a DebertaConfig ({err})") from None
    cls = DebertaForMaskedLM if meta.get("kind") == "mlm" else DebertaModel
    check_fits(cls, config, shapes, str(path))
    state, _ = load_tensors(path)
    model = cls(config)
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
        budget = cfg.get("budget_seconds")  # a clock budget: ``steps`` is then only a cap, not what was run
        steps = (f"a {budget:.0f} s budget" if budget else f"{cfg.get('steps')} steps") + \
            f" of {cfg.get('batch_size')} x {cfg.get('seq_length')} tokens"
        origin = f"{cfg.get('name')} ({steps}, {cfg.get('source')}), checkpoint {folder.name}"
    return origin
