"""What several wings share, written once: special token ids, the data root, file names, the smoke flag.

Nothing here imports the rest of the package, so every wing (model, data, training, ablation,
lessons) can read it without an arrow pointing back up.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

# ---------------------------------------------------------------- special tokens (the course's tokenizer)
SPECIAL_PIECES = ("[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]")
PAD_ID, CLS_ID, SEP_ID, UNK_ID, MASK_ID = range(len(SPECIAL_PIECES))
SPECIAL_IDS = (PAD_ID, CLS_ID, SEP_ID, UNK_ID, MASK_ID)

# ---------------------------------------------------------------- where things live
PROJECT_ROOT = Path(__file__).resolve().parent.parent
RESULTS_ROOT = PROJECT_ROOT / "results"  # small committed results of real runs
DATA_ENV = "DEBERTA_EDU_DATA"


def data_root() -> Path:
    """Where corpora, tokenizers, packed arrays and checkpoints live: $DEBERTA_EDU_DATA, else <project>/data."""
    return Path(os.environ.get(DATA_ENV) or PROJECT_ROOT / "data")


def shown_path(path: str | Path) -> str:
    """A path as a page should print it: relative to the project when inside it (``data/checkpoints/lesson4``,
    the same on every machine), else as it is."""
    path = Path(path)
    try:
        return path.resolve().relative_to(PROJECT_ROOT).as_posix()
    except ValueError:
        return str(path)


def checkpoint_dir(name: str = "lesson4") -> Path:
    """Where a named run keeps its model: <data root>/checkpoints/<name>."""
    return data_root() / "checkpoints" / name


# ---------------------------------------------------------------- file names inside a run folder
MODEL_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.model"
STATE_FILE = "trainer_state.safetensors"
LOG_FILE = "metrics.jsonl"  # one JSON record per line: training steps and evaluations
CONFIG_FILE = "train_config.json"

# ---------------------------------------------------------------- the smoke size of heavy work
SMOKE_ENV = "DEBERTA_EDU_SMOKE"


SMOKE_WORDS = {"1": True, "true": True, "yes": True, "on": True, "": False, "0": False, "false": False, "no": False,
               "off": False}


def smoke() -> bool:
    """True when heavy work should run at its smoke size: DEBERTA_EDU_SMOKE=1 (or true, yes, on); 0, false, no,
    off or unset for the full size. Any other value is refused, so DEBERTA_EDU_SMOKE=false means what it says."""
    value = os.environ.get(SMOKE_ENV, "0").strip().lower()
    if value not in SMOKE_WORDS:
        raise ValueError(f"{SMOKE_ENV}={os.environ[SMOKE_ENV]!r}: set it to 1 for the smoke size, 0 for the full size")
    return SMOKE_WORDS[value]


def encode_pair(pieces, max_length: int | None = None) -> list[int]:
    """``[CLS] pieces [SEP]``: one example as the model reads it (cut so the whole fits ``max_length``)."""
    pieces = list(pieces)
    if max_length is not None:
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2 to hold [CLS] and [SEP], got {max_length}")
        pieces = pieces[: max_length - 2]
    return [CLS_ID, *pieces, SEP_ID]


def cpu_name() -> str:
    """The processor's model name (from /proc/cpuinfo where there is one), for the records of a run."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
