"""An attention explorer in one self-contained HTML page: no CDN, no server, no kernel.

    page = explorer_html(model, input_ids, tokens)      # a str: inline CSS, JSON data and JavaScript
    save_explorer("attention.html", model, input_ids, tokens)
    show_explorer(model, input_ids, tokens)             # in JupyterLab or a Jupyter Book page (iframe)

The page shows, for every layer and head, each scaled term of the score (c2c, c2p, p2c, ...), their
sum (the score before the softmax) and the attention probabilities, drawn on a canvas. Click a layer, a
term or a head thumbnail; hover a cell to read its value. Everything is computed once in Python by
``viz.attention_maps`` and shipped as JSON inside the page, so the page works offline and as a static
file. ``load_demo`` finds the course's trained checkpoint, or builds a clearly labelled random model.
"""

from __future__ import annotations

import html
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from deberta_edu.facts import DATA_ENV, PROJECT_ROOT, SPECIAL_PIECES, checkpoint_dir
from deberta_edu.model import checkpoint
from deberta_edu.model.config import make_config
from deberta_edu.model.encoder import DebertaModel

from .viz import AttentionMaps, attention_maps

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
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        maps = attention_maps(model, ids, tokens, attention_mask)
    finally:
        model.train(was_training)
    return maps_html(maps, title=title, note=note)


def maps_html(maps: AttentionMaps, *, title: str = "DeBERTa attention explorer", note: str = "") -> str:
    """The page for maps already computed with ``viz.attention_maps``."""
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
    payload = json.dumps(data, ensure_ascii=False).replace("</", "<\\/")  # safe inside <script>
    return _PAGE.replace("__TITLE__", html.escape(title)).replace("__DATA__", payload)


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


def lesson_checkpoint_folder() -> Path:
    """Where lesson 4 writes its checkpoint: ``$DEBERTA_EDU_DATA/checkpoints/lesson4``.

    The data root defaults to ``<repo>/data``.
    """
    return checkpoint_dir("lesson4")


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


def checkpoint_label(folder: str | Path, model=None) -> str:
    """A label that names no path on this machine: ``trained checkpoint: lesson 4 (tiny deberta, 400 steps on bbc)``.

    The details come from the run's ``train_config.json`` (written by ``pretrain.train``), else from
    ``model.config``. The folder is called "lesson 4" when it is lesson 4's, else by its own name; the
    run's name is added when it differs from the folder's.
    """
    folder = Path(folder)
    where = "lesson 4" if os.path.abspath(folder) == os.path.abspath(lesson_checkpoint_folder()) else folder.name
    try:
        run = json.loads((folder / "train_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        run = {}
    if isinstance(run, dict) and run.get("steps"):
        name = run.get("name") if run.get("name") not in (None, folder.name) else None  # a run of another name
        what = " ".join(str(run[k]) for k in ("size", "variant") if run.get(k))
        steps = f"{run['steps']} steps" + (f" on {run['source']}" if run.get("source") else "")
        details = ", ".join(str(part) for part in (name, what, steps) if part)
    elif model is not None and hasattr(model, "config"):
        c = model.config
        details = f"{c.num_hidden_layers} layers, {c.num_attention_heads} heads, hidden size {c.hidden_size}"
    else:
        details = ""
    return f"trained checkpoint: {where}" + (f" ({details})" if details else "")


def load_demo(sentence: str, folder: str | Path | None = None, seed: int = 0) -> Demo:
    """The trained lesson-4 checkpoint and its SentencePiece tokenizer when they exist, else a random model.

    The random stand-in is a tiny v1-style model (clamp at k = 4) over a word-level vocabulary built
    from ``sentence``; it is initialised with a wider spread (0.1 instead of 0.02) so that its maps are
    not flat. Its patterns are those of random weights: structure from the equations, not from language.
    """
    folder = lesson_checkpoint_folder() if folder is None else Path(folder)
    weights, spm_file = folder / checkpoint.MODEL_FILE, folder / checkpoint.TOKENIZER_FILE
    if weights.exists() and spm_file.exists():
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=str(spm_file))
        model = checkpoint.load_pretrained(folder)
        pieces = sp.encode(sentence, out_type=int)
        ids = torch.tensor([1, *pieces, 2])  # [CLS] … [SEP]
        tokens = ["[CLS]", *(sp.id_to_piece(i) for i in pieces), "[SEP]"]
        vocab = model.config.vocab_size
        if int(ids.max()) >= vocab:
            raise ValueError(
                f"the tokenizer in {folder} produced id {int(ids.max())} but the model's vocabulary "
                f"has {vocab} entries; the two files do not belong together"
            )
        return Demo(model, ids, tokens, True, checkpoint_label(folder, model))
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
    ids = torch.tensor([1, *(vocab.index(w) for w in words), 2])
    tokens = ["[CLS]", *words, "[SEP]"]
    return Demo(
        model,
        ids,
        tokens,
        False,
        f"RANDOMLY INITIALISED tiny model (no checkpoint in {_shown(folder)}); run lesson 4 to train one",
    )


_PAGE = r"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<script>
// Errors are recorded for the browser test (and shown on the page), before anything else runs.
window.__errors = [];
window.addEventListener("error", function (e) { window.__errors.push(String(e.message)); });
(function () { var ce = console.error; console.error = function () {
  window.__errors.push(Array.prototype.join.call(arguments, " ")); ce.apply(console, arguments); }; })();
</script>
<style>
  body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 12px; color: #222; }
  h1 { font-size: 18px; margin: 0 0 4px; }
  .note { color: #a33; margin: 0 0 8px; font-size: 13px; }
  .row { display: flex; flex-wrap: wrap; align-items: center; gap: 6px; margin: 6px 0; }
  .label { width: 52px; color: #666; font-size: 12px; }
  button { font: inherit; padding: 3px 10px; border: 1px solid #bbb; border-radius: 4px; background: #f7f7f7;
           cursor: pointer; }
  button.on { background: #2166ac; border-color: #2166ac; color: white; }
  .thumb { display: inline-flex; flex-direction: column; align-items: center; cursor: pointer; padding: 3px;
           border: 2px solid transparent; border-radius: 4px; font-size: 11px; color: #555; }
  .thumb.on { border-color: #2166ac; color: #2166ac; }
  #desc { color: #444; font-size: 13px; min-height: 1.4em; }
  #readout { font-family: ui-monospace, monospace; font-size: 12px; min-height: 1.4em; color: #333; }
  #errors { color: #b00; font-family: monospace; white-space: pre-wrap; }
  label { font-size: 12px; color: #444; }
</style></head>
<body>
<h1 id="title"></h1>
<p class="note" id="note"></p>
<div class="row"><span class="label">layer</span><span id="layers"></span></div>
<div class="row"><span class="label">map</span><span id="kinds"></span>
  <label><input type="checkbox" id="shared"> one colour scale for all terms of this head</label></div>
<div id="desc"></div>
<div class="row"><span class="label">head</span><span id="heads"></span></div>
<canvas id="main" width="600" height="600"></canvas>
<div id="readout">hover over a cell: query i (row) attends to key j (column)</div>
<div id="errors"></div>
<script id="explorer-data" type="application/json">__DATA__</script>
<script>
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("explorer-data").textContent);
  var L = D.tokens.length;
  var state = { layer: 0, head: 0, kind: D.kinds.indexOf("sum") >= 0 ? "sum" : D.kinds[0] };
  var termKinds = D.kinds.filter(function (k) { return k !== "probs"; });

  function cellSize(n) { return Math.max(8, Math.min(30, Math.floor(480 / n))); }  // as cell_size() in Python
  function map(layer, kind, head) { return D.maps[layer][D.kinds.indexOf(kind)][head]; }
  function maxAbs(values) {
    var m = 1e-9;
    for (var i = 0; i < values.length; i++) m = Math.max(m, Math.abs(values[i]));
    return m;
  }
  function scaleFor(layer, kind, head) {
    if (kind === "probs") return maxAbs(map(layer, kind, head));
    if (!document.getElementById("shared").checked) return maxAbs(map(layer, kind, head));
    var m = 1e-9;
    termKinds.forEach(function (k) { m = Math.max(m, maxAbs(map(layer, k, head))); });
    return m;
  }
  function lerp(a, b, t) {
    return [0, 1, 2].map(function (i) { return Math.round(a[i] + (b[i] - a[i]) * t); });
  }
  function colour(v, kind, vmax) {
    var t = Math.max(-1, Math.min(1, v / vmax)), c;
    if (kind === "probs") c = lerp([255, 255, 255], [8, 48, 107], Math.max(0, t));
    else if (t >= 0) c = lerp([247, 247, 247], [178, 24, 43], t);   // red: attracts
    else c = lerp([247, 247, 247], [33, 102, 172], -t);             // blue: repels
    return "rgb(" + c.join(",") + ")";
  }
  function drawCells(ctx, values, kind, vmax, x0, y0, cell) {
    for (var i = 0; i < L; i++) for (var j = 0; j < L; j++) {
      ctx.fillStyle = colour(values[i * L + j], kind, vmax);
      ctx.fillRect(x0 + j * cell, y0 + i * cell, Math.ceil(cell), Math.ceil(cell));
    }
  }

  var main = document.getElementById("main");
  var geometry = null;
  function drawMain() {
    var ctx = main.getContext("2d");
    var cell = cellSize(L);
    ctx.font = "12px system-ui, sans-serif";
    var margin = 10 + Math.max.apply(null, D.tokens.map(function (t) { return ctx.measureText(t).width; }));
    var width = margin + L * cell + 90, height = margin + L * cell + 10;
    var dpr = window.devicePixelRatio || 1;
    main.width = width * dpr; main.height = height * dpr;
    main.style.width = width + "px"; main.style.height = height + "px";
    ctx = main.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = "white"; ctx.fillRect(0, 0, width, height);
    ctx.font = "12px system-ui, sans-serif";
    var values = map(state.layer, state.kind, state.head);
    var vmax = scaleFor(state.layer, state.kind, state.head);
    drawCells(ctx, values, state.kind, vmax, margin, margin, cell);
    ctx.fillStyle = "#222"; ctx.textBaseline = "middle";
    D.tokens.forEach(function (t, i) {             // query tokens down the left, key tokens across the top
      ctx.textAlign = "right"; ctx.fillText(t, margin - 4, margin + (i + 0.5) * cell);
      ctx.save(); ctx.translate(margin + (i + 0.5) * cell, margin - 4); ctx.rotate(-Math.PI / 2);
      ctx.textAlign = "left"; ctx.fillText(t, 0, 0); ctx.restore();
    });
    var bx = margin + L * cell + 20, bh = L * cell;   // colour bar
    for (var y = 0; y < bh; y++) {
      var top = kindTop(state.kind, vmax), bottom = kindBottom(state.kind, vmax);
      var v = top - (y / bh) * (top - bottom);
      ctx.fillStyle = colour(v, state.kind, vmax); ctx.fillRect(bx, margin + y, 14, 1);
    }
    ctx.fillStyle = "#222"; ctx.textAlign = "left";
    ctx.fillText(fmt(kindTop(state.kind, vmax)), bx + 18, margin + 6);
    ctx.fillText(fmt(kindBottom(state.kind, vmax)), bx + 18, margin + bh - 6);
    ctx.fillStyle = "#888"; ctx.textAlign = "left"; ctx.font = "11px system-ui, sans-serif";
    ctx.fillText("rows: query i", 2, 10); ctx.fillText("columns: key j", 2, 24);
    geometry = { margin: margin, cell: cell };
    main.setAttribute("data-state", state.layer + "/" + state.head + "/" + state.kind);
  }
  function kindTop(kind, vmax) { return vmax; }
  function kindBottom(kind, vmax) { return kind === "probs" ? 0 : -vmax; }
  function fmt(v) { return Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(3); }

  function drawThumbs() {
    var box = document.getElementById("heads"); box.innerHTML = "";
    var cell = Math.max(2, Math.floor(84 / L));
    for (var h = 0; h < D.heads; h++) {
      var wrap = document.createElement("span");
      wrap.className = "thumb" + (h === state.head ? " on" : "");
      wrap.setAttribute("data-head", h); wrap.title = "head " + h;
      var c = document.createElement("canvas"); c.width = c.height = cell * L;
      drawCells(c.getContext("2d"), map(state.layer, state.kind, h), state.kind,
                scaleFor(state.layer, state.kind, h), 0, 0, cell);
      wrap.appendChild(c); wrap.appendChild(document.createTextNode("head " + h));
      wrap.addEventListener("click", (function (h) { return function () { state.head = h; render(); }; })(h));
      box.appendChild(wrap);
    }
  }
  function buttons(id, items, isOn, onClick, attr) {
    var box = document.getElementById(id); box.innerHTML = "";
    items.forEach(function (item) {
      var b = document.createElement("button");
      b.textContent = item.label; b.className = isOn(item.value) ? "on" : "";
      b.setAttribute(attr, item.value); if (item.title) b.title = item.title;
      b.addEventListener("click", function () { onClick(item.value); render(); });
      box.appendChild(b);
    });
  }
  function render() {
    var layers = []; for (var l = 0; l < D.layers; l++) layers.push({ label: String(l), value: l });
    buttons("layers", layers, function (v) { return v === state.layer; },
            function (v) { state.layer = v; }, "data-layer");
    buttons("kinds", D.kinds.map(function (k) { return { label: k, value: k, title: D.descriptions[k] }; }),
            function (v) { return v === state.kind; }, function (v) { state.kind = v; }, "data-kind");
    document.getElementById("desc").textContent = D.descriptions[state.kind];
    drawThumbs(); drawMain();
  }
  main.addEventListener("mousemove", function (e) {
    if (!geometry) return;
    var r = main.getBoundingClientRect();
    var j = Math.floor((e.clientX - r.left - geometry.margin) / geometry.cell);
    var i = Math.floor((e.clientY - r.top - geometry.margin) / geometry.cell);
    var out = document.getElementById("readout");
    if (i < 0 || j < 0 || i >= L || j >= L) { out.textContent = "\u00a0"; return; }
    var v = map(state.layer, state.kind, state.head)[i * L + j];
    out.textContent = "query " + i + " '" + D.tokens[i] + "' \u2192 key " + j + " '" + D.tokens[j] + "'  " +
                      state.kind + " = " + v.toFixed(4) + "   (i \u2212 j = " + (i - j) + ")";
  });
  document.getElementById("shared").addEventListener("change", render);
  document.getElementById("title").textContent = D.title;
  document.getElementById("note").textContent = D.note;
  render();
  window.__explorer = { state: state, render: render };
})();
</script>
<script>
if (window.__errors.length) document.getElementById("errors").textContent = window.__errors.join("\n");
</script>
</body></html>
"""
