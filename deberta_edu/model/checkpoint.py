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
import os
import re
from pathlib import Path

import safetensors.torch
import torch

from deberta_edu import files
from deberta_edu.facts import CONFIG_FILE, MODEL_FILE, STATE_FILE, TOKENIZER_FILE, checkpoint_dir

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
    if folder.suffix == ".safetensors":
        raise ValueError(f"save_pretrained takes a folder and writes {MODEL_FILE} in it; got the file name {folder}")
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
        cut = folder.is_dir() and (folder / STATE_FILE).exists()  # a run cut before its end: no model.safetensors yet
        raise FileNotFoundError(
            f"no checkpoint at {path}; " + (f"{folder} holds a run that did not finish: go on with `python -m "
                                            f"deberta_edu.pretrain --resume --out {folder}` (and its --config)"
                                            if cut else "lesson 4 (notebooks/04_mlm_pretraining) or "
                                            "`python -m deberta_edu.pretrain` writes one")
        )
    meta, shapes = read_header(path)  # the config is checked against the shapes before anything is built
    if "config" not in meta:
        raise ValueError(f"{path} has no deberta_edu config in its metadata; was it written by "
                         "deberta_edu.save_pretrained? A transformers checkpoint loads with deberta_edu.from_hf(folder)")
    try:
        saved = json.loads(meta["config"])
        if not isinstance(saved, dict):
            raise TypeError(f"a {type(saved).__name__}, not a mapping of fields")
        config = DebertaConfig.from_dict(saved)
    except (json.JSONDecodeError, TypeError, ValueError) as err:
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


def run_config(folder: str | Path) -> dict:
    """The train_config.json that ``pretrain.train`` wrote in ``folder``, as a dict; {} when there is none or
    it cannot be read."""
    try:
        run = json.loads((Path(folder) / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return run if isinstance(run, dict) else {}


def is_smoke_run(run: dict) -> bool:
    """A smoke-size run (its config named "<name>-smoke"): a test that the code runs, never a trained model."""
    return str(run.get("name", "")).endswith("-smoke")


def describe_checkpoint(folder: str | Path, model=None) -> str:
    """One line for a reader, naming no path on this machine: ``trained checkpoint: lesson 4 (tiny deberta,
    400 steps on bbc)``.

    The details come from the run's train_config.json, else from ``model.config``. The folder is called
    "lesson 4" when it is lesson 4's, else by its own name; the run's name is added when it differs from the
    folder's. A smoke-size run is called what it is: ``SMOKE-size checkpoint, not trained: ...``.
    """
    folder = Path(folder)
    where = "lesson 4" if os.path.abspath(folder) == os.path.abspath(lesson_checkpoint("lesson4")) else folder.name
    run = run_config(folder)
    if run.get("steps"):
        name = run.get("name") if run.get("name") not in (None, folder.name) else None  # a run of another name
        what = " ".join(str(run[k]) for k in ("size", "variant") if run.get(k))
        budget = run.get("budget_seconds")  # a clock budget: steps is then only a cap, not what was run
        steps = (f"{budget:.0f} s of training" if budget else f"{run['steps']} steps") + (
            f" on {run['source']}" if run.get("source") else "")
        details = ", ".join(str(part) for part in (name, what, steps) if part)
    elif model is not None and hasattr(model, "config"):
        c = model.config
        details = f"{c.num_hidden_layers} layers, {c.num_attention_heads} heads, hidden size {c.hidden_size}"
    else:
        details = ""
    kind = "SMOKE-size checkpoint, not trained" if is_smoke_run(run) else "trained checkpoint"
    return f"{kind}: {where}" + (f" ({details})" if details else "")
