"""An attention explorer in one self-contained HTML page: no CDN, no server, no kernel.

    page = explorer_html(model, input_ids, tokens)      # a str: inline CSS, JSON data and JavaScript
    save_explorer("attention.html", model, input_ids, tokens)
    show_explorer(model, input_ids, tokens)             # in JupyterLab or a Jupyter Book page (iframe)

The page shows, for every layer and head, each scaled term of the score (c2c, c2p, p2c, ...), their
sum (the score before the softmax) and the attention probabilities, drawn on a canvas. Click a layer, a
term or a head thumbnail; hover a cell to read its value. Everything is computed once in Python by
``viz.attention_maps`` and shipped as JSON inside the page, so the page works offline and as a static
file. ``load_demo`` finds the course's trained checkpoint, or builds a clearly labelled random model.

The page itself (CSS, JavaScript, two placeholders) is package data beside this module, ``explorer.html``.
"""

from __future__ import annotations

import html
import json
import os
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from deberta_edu.facts import (
    DATA_ENV,
    MODEL_FILE,
    PROJECT_ROOT,
    SPECIAL_PIECES,
    TOKENIZER_FILE,
    encode_pair,
)
from deberta_edu.model.checkpoint import describe_checkpoint, is_smoke_run, load_pretrained, run_config
from deberta_edu.model.config import make_config
from deberta_edu.model.encoder import DebertaModel

from .viz import AttentionMaps, attention_maps

PAGE_FILE = "explorer.html"  # package data: the page, read by page_template()
MAX_TOKENS = 64  # the page draws L × L cells per map; longer inputs become unreadable and heavy
SPECIALS = list(SPECIAL_PIECES)  # ids 0 … 4, as in the course's tokenizer

DESCRIPTIONS = {
    "c2c": "content-to-content: does token i's content look for token j's content?",
    "c2p": "content-to-position: does token i's content look for tokens at distance δ(i,j)?",
    "p2c": "position-to-content: seen from distance δ(i,j), does token j's content stand out?",
    "p2p": "position-to-position: a bias that depends only on i − j (DeBERTa drops it)",
    "sum": "the score before the softmax: the sum of the terms (each already divided by √(3d))",
    "probs": "attention probabilities: softmax of the sum over each row (each row sums to 1)",
}


def explorer_html(
    model,
    input_ids,
    tokens=None,
    *,
    title: str = "DeBERTa attention explorer",
    note: str = "",
    attention_mask=None,
) -> str:
    """The whole page as a string, for ``model`` (DebertaModel or DebertaForMaskedLM) on one sequence."""
    ids = torch.as_tensor(input_ids).reshape(-1)
    if ids.numel() > MAX_TOKENS:
        raise ValueError(
            f"the explorer draws at most {MAX_TOKENS} tokens, got {ids.numel()}; use a shorter sentence"
        )
    bad = [name for name, p in model.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise ValueError(
            f"the model has non-finite weights (NaN or inf) in {len(bad)} tensors, e.g. {bad[0]!r}: its attention "
            "maps would be NaN and the page could not draw them. Load a checkpoint saved before training diverged."
        )
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        maps = attention_maps(model, ids, tokens, attention_mask)
    finally:
        model.train(was_training)
    return maps_html(maps, title=title, note=note)


def maps_html(maps: AttentionMaps, *, title: str = "DeBERTa attention explorer", note: str = "") -> str:
    """The page for maps already computed with ``viz.attention_maps``."""
    finite = np.isfinite(maps.maps)  # (layers, kinds, heads, L, L)
    if not finite.all():
        l, t, h = np.argwhere(~finite)[0][:3]
        raise ValueError(
            f"the attention maps hold NaN or inf (first at layer {l}, {maps.kinds[t]}, head {h}); JSON cannot "
            "carry them and the page would stay blank. Check the model's weights and the input."
        )
    data = {
        "title": title,
        "note": note,
        "tokens": maps.tokens,
        "kinds": list(maps.kinds),
        "descriptions": {k: DESCRIPTIONS.get(k, k) for k in maps.kinds},
        "layers": maps.num_layers,
        "heads": maps.num_heads,
        # maps[layer][kind][head] = the L × L map, row-major, rounded to keep the page small
        "maps": [
            [
                [[round(float(v), 4) for v in maps.maps[l, t, h].reshape(-1)] for h in range(maps.num_heads)]
                for t in range(len(maps.kinds))
            ]
            for l in range(maps.num_layers)
        ],
    }
    payload = embedded_json(data)
    head, tail = page_template().split("__DATA__")  # one placeholder each, filled once: text in the
    return head.replace("__TITLE__", html.escape(title)) + payload + tail  # title or data is never re-read


# Inside <script> the HTML parser, not JSON, decides where the data ends: "</script" closes it, and "<!--"
# followed later by "<script" makes it skip the real "</script>". JSON strings may spell any character as
# \uXXXX, so "<", ">" and "&" are written that way and the parser never sees them; U+2028/U+2029 too.
_SCRIPT_SAFE = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def embedded_json(data) -> str:
    """``data`` as JSON that is inert inside a <script> element; NaN and inf are refused (JSON has neither)."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False)
    return re.sub("[<>&\u2028\u2029]", lambda m: _SCRIPT_SAFE[m[0]], text)


@cache
def page_template() -> str:
    """``explorer.html``: the page with the placeholders ``__TITLE__`` (in <title>) and ``__DATA__`` (JSON)."""
    return resources.files(__package__).joinpath(PAGE_FILE).read_text(encoding="utf-8")


def save_explorer(path: str | Path, model, input_ids, tokens=None, **kwargs) -> Path:
    """Write the page to ``path`` (UTF-8) and return the path; open it in any browser."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(explorer_html(model, input_ids, tokens, **kwargs), encoding="utf-8")
    return path


def iframe(page: str, height: int = 720):
    """The page inside an iframe (srcdoc), as IPython HTML: its own document, so several can share a notebook.

    Works in JupyterLab and in a static Jupyter Book page (the HTML is stored in the notebook's output).
    """
    from IPython.display import HTML

    return HTML(
        f'<div class="deberta-edu-explorer"><iframe srcdoc="{html.escape(page, quote=True)}" '
        f'style="width:100%;height:{height}px;border:1px solid #ddd;border-radius:4px" '
        'title="attention explorer"></iframe></div>'
    )


def cell_size(length: int) -> int:
    """Pixels per cell of the main map (the page's JavaScript uses the same rule)."""
    return max(8, min(30, 480 // length))


def show_explorer(model, input_ids, tokens=None, height: int | None = None, **kwargs):
    """``explorer_html`` wrapped in ``iframe``: the last expression of a cell displays it.

    ``height`` (pixels) defaults to what the page needs to show the whole map without scrolling.
    """
    length = torch.as_tensor(input_ids).numel()
    height = height or 420 + length * cell_size(length)
    return iframe(explorer_html(model, input_ids, tokens, **kwargs), height)


# --- a model and a sentence to explore -----------------------------------------------------------
@dataclass
class Demo:
    """A model in eval mode, one tokenized sentence, and where the model came from."""

    model: torch.nn.Module
    input_ids: torch.Tensor  # (L,)
    tokens: list[str]
    trained: bool
    source: str  # a sentence for the reader: which checkpoint, or "randomly initialised"


def _shown(path: str | Path) -> str:
    """``path`` as the reader may see it in a page: relative to the repository or to $DEBERTA_EDU_DATA.

    Printed labels end up in executed notebooks and the course site, so they must not name this machine.
    """
    path = Path(os.path.abspath(path))
    data = os.environ.get(DATA_ENV)
    for base, prefix in ((data, f"${DATA_ENV}/"), (PROJECT_ROOT, "")):
        if base:
            try:
                return prefix + path.relative_to(Path(os.path.abspath(base))).as_posix()
            except ValueError:
                pass
    return path.name


def load_demo(sentence: str, folder: str | Path | None = None, seed: int = 0) -> Demo:
    """The model the lessons show (``pretrained.lesson_model_folder``: the course model, or a better lesson 4
    run) with its SentencePiece tokenizer; or the checkpoint in ``folder``; a random model when none is there.

    The random stand-in is a tiny model with v1's position clamp at k = 4 (the rest the v2/v3 layout) over a
    word-level vocabulary built
    from ``sentence``; it is initialised with a wider spread (0.1 instead of 0.02) so that its maps are
    not flat. Its patterns are those of random weights: structure from the equations, not from language.
    """
    label = None
    if folder is None:
        from .pretrained import lesson_model_folder

        folder, label = lesson_model_folder()
    folder = Path(folder)
    weights, spm_file = folder / MODEL_FILE, folder / TOKENIZER_FILE
    if weights.exists() and spm_file.exists():
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=str(spm_file))
        model = load_pretrained(folder).float().eval()
        pieces = sp.encode(sentence, out_type=int)
        ids = torch.tensor(encode_pair(pieces))  # [CLS] … [SEP]
        tokens = ["[CLS]", *(sp.id_to_piece(i) for i in pieces), "[SEP]"]
        vocab = model.config.vocab_size
        if int(ids.max()) >= vocab:
            raise ValueError(
                f"the tokenizer in {folder} produced id {int(ids.max())} but the model's vocabulary "
                f"has {vocab} entries; the two files do not belong together"
            )
        return Demo(model, ids, tokens, not is_smoke_run(run_config(folder)), label or describe_checkpoint(folder, model))
    torch.manual_seed(seed)
    words = re.findall(r"\w+|[^\w\s]", sentence.lower())
    vocab = SPECIALS + sorted(set(words))
    config = make_config(
        "tiny",
        vocab_size=len(vocab),
        initializer_range=0.1,
        position_buckets=-1,
        max_relative_positions=4,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    model = DebertaModel(config).eval()
    ids = torch.tensor(encode_pair(vocab.index(w) for w in words))  # [CLS] … [SEP]
    tokens = ["[CLS]", *words, "[SEP]"]
    return Demo(
        model,
        ids,
        tokens,
        False,
        f"RANDOMLY INITIALISED tiny model (no checkpoint in {_shown(folder)}); run lesson 4 to train one",
    )

