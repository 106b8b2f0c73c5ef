# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown] slideshow={"slide_type": "slide"}
# # Lesson 3 — The Enhanced Mask Decoder
#
# *DeBERTa* (He et al., 2021, [arXiv 2006.03654](https://arxiv.org/abs/2006.03654)), §3.2 and appendices A.7
# and A.8.
#
# Lessons 1 and 2 built attention that only knows **how far apart** two tokens are. The paper's example:
#
# > "a new **store** opened beside the new **mall**"
#
# Mask "store" and "mall". Both follow "new" at the same distance, so their local context is alike, yet one
# is the subject and the other the object, and that depends on **where** they are in the sentence. DeBERTa
# therefore adds absolute positions, but late: in the *Enhanced Mask Decoder* (EMD), right before the softmax
# layer that predicts the masked words.
#
# How blind is relative attention to *where*, really? We measure the answer in three steps:
#
# 1. Relative attention sees distances only: move a whole input and nothing changes.
# 2. But every real input starts with `[CLS]`. A token can read its absolute position off its distance to
#    `[CLS]`, **while that distance is inside the relative window** (eq. 3 gives distances up to k − 2 rows of
#    their own, and k − 1 and beyond share the last row). With the anchor inside the window, a relative-only
#    model learns "subject or object slot" perfectly (above 99% held out, every seed).
# 3. Beyond the clamp (or inside one coarse log bucket), positions that differ only in absolute place look
#    exactly the same to relative attention: there relative-only is at chance, and BERT-style input positions
#    and the EMD succeed.
#
# Then the EMD itself: its equations, where the paper and the released code differ, what it costs.

# %%
import dataclasses
import inspect
import math

import torch
import torch.nn.functional as F

from deberta_edu import (
    DebertaForMaskedLM,
    DebertaModel,
    EnhancedMaskDecoder,
    exercises,
    make_config,
    relative_distance,
    viz,
    widgets,
)
from deberta_edu.facts import CLS_ID, PAD_ID, SEP_ID, smoke
from deberta_edu.model.positions import log_bucket
from deberta_edu.training.probe import (
    VARIANTS,
    ProbeBatch,
    anchor_tasks,
    format_table,
    held_out,
    majority_rate,
    placement_difference,
    probe_batch,
    probe_config,
    probe_table,
    train_probe,
)

SMOKE = smoke()  # CI runs a smaller probe
torch.manual_seed(0)
torch.set_num_threads(1)  # tiny models: one thread avoids the cost of coordinating threads

# %% [markdown] slideshow={"slide_type": "slide"}
# ## (a) Relative attention sees distances only
#
# Take the sentence as a model reads it, `[CLS] … [SEP]`, then the same input moved five places to the right
# behind five padding tokens that the attention mask hides. Every distance between two real tokens is
# unchanged, so a model with relative positions only (DeBERTa without EMD, `variant="no_emd"`) must produce
# exactly the same outputs. A BERT-style model (`variant="bert"`: absolute position embeddings added at the
# input) sees every word at a new position.

# %%
words = "a new store opened beside the new mall".split()
vocab = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]", *sorted(set(words))]
assert [vocab.index(t) for t in ("[PAD]", "[CLS]", "[SEP]")] == [PAD_ID, CLS_ID, SEP_ID]
tokens = ["[CLS]", *words, "[SEP]"]
ids = torch.tensor([[vocab.index(w) for w in tokens]])  # (1, 10)
kw = {"vocab_size": len(vocab), "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}

torch.manual_seed(0)
relative = DebertaModel(make_config("tiny", "no_emd", **kw)).eval()
bert = DebertaModel(make_config("tiny", "bert", **kw)).eval()
runs = {
    "relative only (−EMD)": lambda x, mask: relative(x, mask).last_hidden_state,
    "BERT-style (absolute at input)": lambda x, mask: bert(x, mask).last_hidden_state,
}
shift = 5
diffs = {name: viz.shift_difference(run, ids, shift) for name, run in runs.items()}
for name, d in diffs.items():
    print(f"{name:32s} max |change| = {d.max():.2e}")
assert diffs["relative only (−EMD)"].max() < 1e-5  # identical up to float rounding
assert diffs["BERT-style (absolute at input)"].min() > 1e-2  # every token's output moved

# %%
SHIFT_MODELS = "tiny models, random weights: a property of the architecture, not of training"
viz.plot_shift_difference(diffs, tokens, shift, models=SHIFT_MODELS)

# %% [markdown] slideshow={"slide_type": "subslide"}
# Both models are untrained: this is a property of the architecture. But notice what moved: **everything**,
# `[CLS]` included. Inside one input, `[CLS]` always sits at position 0, so "how far am I from `[CLS]`" *is*
# "where am I", as long as relative attention can tell that distance apart from others.
#
# ## (b) What `[CLS]` can tell a token
#
# Eq. (3) gives token p the table row δ(p, 0) for `[CLS]`: positions 0 … k − 2 get rows of their own, and every
# p ≥ k − 1 shares the last row (the clamp). The v2/v3 log buckets (lesson 1) keep distances up to
# `position_buckets / 2` exact. Beyond, with 256 buckets and k = 512, eleven distances still get a row of their
# own (129, 130, 133, …, 169), all other rows are shared by two or more distances, and every distance from 506
# on shares the last row. Where two positions get the same row, `[CLS]` cannot tell them apart. Three schemes of
# the released models:

# %%
schemes = {
    "v1, k = 512, 512 tokens": viz.anchor_rows(512, 512),
    "v1, k = 512, 2,048 tokens": viz.anchor_rows(2048, 512),
    "v2/v3, 256 buckets, k = 512, 2,048 tokens": viz.anchor_rows(2048, 512, position_buckets=256),
}
for name, rows in schemes.items():
    print(f"{name:42s} {len(set(rows.tolist())):5,} distinct rows for [CLS] over {len(rows):,} positions")
v1_512, v1_long, v3_long = schemes.values()
assert len(set(v1_512.tolist())) == 512  # a 512-token input: every position has a row of its own
assert (v1_long[511:] == v1_long[511]).all() and v1_long[510] != v1_long[511]  # one row from k − 1 = 511 on
assert len(set(v1_long[:511].tolist())) == 511  # and a row of its own for each position before
assert len(set(v3_long[:131].tolist())) == 131  # log buckets: exact up to position 130 …
alone = [p for p in range(129, 2048) if (v3_long == v3_long[p]).sum() == 1]  # past 128, rows of their own
assert alone == [129, 130, 133, 136, 139, 142, 145, 150, 155, 160, 169]  # … eleven; every other row is shared
assert (v3_long[500:506] == v3_long[500]).all()  # positions 500–505 are one row
assert (v3_long[506:] == v3_long[506]).all() and v3_long[505] != v3_long[506]  # one row from 506 on

# %%
viz.plot_anchor_rows(schemes)

# %% [markdown]
# So in a 512-token input of DeBERTa v1 nothing about position is *missing*: every token can know exactly where
# it is. In v2/v3 a token at position 500 knows its place only to within six, and in longer inputs (appendix
# A.5: relative attention reaches them by stacking layers) every token from position 506 on (511 in v1)
# shares one row: no absolute place at all.
# Real inputs also end with `[SEP]`, a second anchor whose place varies with the sentence's length.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## The Enhanced Mask Decoder
#
# The EMD lets the encoder stay relative and adds absolute positions $P$ only where the masked words are
# decoded. With $H$ the output of encoder layer L − 1, the last layer runs twice more with new *queries* and
# the same keys and values. Written out, with the post-LN block of every layer (residual through the queries):
#
# $$
# \begin{aligned}
# Q_0 &= H + P \qquad \text{(absolute positions enter here, and only here)}\\
# A_t &= \mathrm{LN}_1\!\big(Q_{t-1} + \mathrm{Attn}(\text{queries } Q_{t-1};\ \text{keys, values } H)\,W_o\big)\\
# Q_t &= \mathrm{LN}_2\!\big(A_t + \mathrm{FFN}(A_t)\big) \qquad t = 1, 2\\
# \mathrm{Attn} &= \mathrm{softmax}\!\Big(\tfrac{1}{\sqrt{3d}}\big[\underbrace{Q^c K^{c\top}}_{\text{c2c}}
#   + \underbrace{Q^c_i K^{r\top}_{\delta(i,j)}}_{\text{c2p}} + \underbrace{K^c_j Q^{r\top}_{\delta(i,j)}}_{\text{p2c}}\big]\Big) V^c\\
# & Q^c = Q_{t-1}W_q,\quad K^c = HW_k,\quad V^c = HW_v\\
# \text{logits} &= \mathrm{MLMHead}(Q_2)
# \end{aligned}
# $$
#
# Read where $P$ can reach the output: the **residual** $Q_{t-1} + \dots$ carries it straight through, and the
# query side of attention, $Q^c$ in c2c and c2p, lets it choose what to read. $V^c$ comes from $H$ only, so
# what is read is position-free; p2c reads $K^c$ of $H$ and the relative table, no query. Both EMD passes
# keep c2p and p2c: the decoder is still relative attention, with an absolute query.
#
# "Layer$_L$" is the encoder's own last layer, used twice with the same weights. The library's code is short
# enough to read here:

# %% slideshow={"slide_type": "skip"}
print(inspect.getsource(EnhancedMaskDecoder.forward))

# %% [markdown] slideshow={"slide_type": "subslide"}
# **Where the paper and the code differ.** Appendix A.8 says the EMD's first layer takes as its input $I$
# *the absolute position embedding*, and that its n = 2 layers share one set of weights. The released code
# (`emd_context_layer` in `DeBERTa/apps/models/masked_language_model.py`) uses $I = P + H$ (as appendix A.9
# describes it: the absolute position embedding "added to the hidden state of content as the query vector")
# and runs the encoder's own last layer, `encoder.layer[-1]`, for both passes. We follow the code: the
# equations above are what it computes.
#
# Three claims, three checks that would fail if the claim were wrong: DeBERTa with EMD has exactly one table
# more than without (P, max_position_embeddings × hidden_size, and nothing else: the EMD owns no layer);
# the last layer runs three times per forward pass (once in the encoder, twice in the EMD); and with P = 0
# the first EMD pass *is* layer L, bit for bit.

# %%
torch.manual_seed(0)
config = make_config("tiny", "deberta", **kw)
mlm = DebertaForMaskedLM(config).eval()
mlm_no_emd = DebertaForMaskedLM(make_config("tiny", "no_emd", **kw)).eval()


def n_params(model):
    return sum(p.numel() for p in model.parameters())


extra = n_params(mlm) - n_params(mlm_no_emd)
assert extra == config.max_position_embeddings * config.hidden_size

calls = []
hook = mlm.deberta.encoder.layers[-1].register_forward_hook(lambda module, args, output: calls.append(1))
with torch.no_grad():
    result = mlm(ids)
hook.remove()
assert len(calls) == 3

with torch.no_grad():
    out = mlm.deberta(ids, output_hidden_states=True)
    no_positions = dataclasses.replace(
        out.encoder_state, positions=torch.zeros_like(out.encoder_state.positions)
    )
    one_pass = EnhancedMaskDecoder()
    one_pass.steps = 1
    first_pass = one_pass(mlm.deberta.encoder.layers[-1], no_positions)
assert torch.equal(first_pass, out.last_hidden_state)  # P = 0: the EMD's first pass is the encoder's layer L
print(
    f"extra parameters with EMD: {extra:,} (the table P); layer L calls per forward: {len(calls)}; "
    "P = 0 first pass == layer L: True"
)

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### The EMD by hand, from the equations
#
# A different code path: attention written with the O(N²d) tensor of relative embeddings (N tokens)
# $P_{\delta(i,j)}$ that §3.1.1 avoids, `einsum` instead of the gather and `scaled_dot_product_attention`,
# the residuals and LayerNorms spelled out. Only the weights come from the model.


# %%
def norm(x, ln):
    return F.layer_norm(x, ln.normalized_shape, ln.weight, ln.bias, ln.eps)


def heads(x, weight, bias, n_heads):  # (..., D) -> (..., heads, d)
    return (x @ weight.T + (0 if bias is None else bias)).unflatten(-1, (n_heads, -1))


def layer_by_hand(layer, H, Q, P_rel):
    """One post-LN block, queries Q (L, D), keys and values H (L, D), P_rel[i, j] = P_{δ(i,j)} (L, L, D)."""
    W, h = layer.attention.projection_weights(), layer.attention.num_heads
    Qc, Kc, Vc = heads(Q, *W["q"], h), heads(H, *W["k"], h), heads(H, *W["v"], h)  # (L, h, d)
    Qr, Kr = heads(P_rel, *W["q_r"], h), heads(P_rel, *W["k_r"], h)  # (L, L, h, d)
    c2c = torch.einsum("ihd,jhd->hij", Qc, Kc)
    c2p = torch.einsum("ihd,ijhd->hij", Qc, Kr)  # Q^c_i · K^r_δ(i,j)
    p2c = torch.einsum("jhd,ijhd->hij", Kc, Qr)  # K^c_j · Q^r_δ(i,j), the released index (lesson 2)
    probs = torch.softmax((c2c + c2p + p2c) / math.sqrt(3 * Qc.shape[-1]), dim=-1)  # (h, L, L)
    context = torch.einsum("hij,jhd->ihd", probs, Vc).flatten(-2)  # (L, D)
    A = norm(
        Q + F.linear(context, layer.attention_out.weight, layer.attention_out.bias), layer.attention_norm
    )
    ffn = layer.ffn.ffn_out(F.gelu(layer.ffn.ffn_in(A)))
    return norm(A + ffn, layer.ffn_norm)


with torch.no_grad():
    H = out.hidden_states[-2][0]  # (L, D) output of layer L − 1: keys and values
    rel = out.encoder_state.rel
    P_rel = rel.table[rel.index]  # (L, L, D) the relative embedding of every pair
    last_layer = mlm.deberta.encoder.layers[-1]
    assert torch.allclose(layer_by_hand(last_layer, H, H, P_rel), out.last_hidden_state[0], atol=1e-5)
    query = H + out.encoder_state.positions[0]  # Q_0 = H + P
    for _ in range(2):  # Q_1, Q_2
        query = layer_by_hand(last_layer, H, query, P_rel)
gap = (query - result.decoder_hidden_state[0]).abs().max()
print(f"by hand vs the library's EMD output: max |difference| = {gap:.1e}")
assert gap < 1e-5

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Where absolute positions enter, measured
#
# Move the input again. In DeBERTa with EMD the **encoder** output (`last_hidden_state`, what fine-tuning
# uses) is still exactly unchanged: every encoder layer is relative. Only the **EMD output** moves: absolute
# positions enter there and nowhere else. In BERT they enter at the input and reach every layer.

# %%
runs = {
    "relative only (−EMD)": lambda x, mask: relative(x, mask).last_hidden_state,
    "BERT-style": lambda x, mask: bert(x, mask).last_hidden_state,
    "DeBERTa encoder": lambda x, mask: mlm(x, mask).last_hidden_state,
    "DeBERTa EMD output": lambda x, mask: mlm(x, mask).decoder_hidden_state,
}
diffs = {name: viz.shift_difference(run, ids, shift) for name, run in runs.items()}
assert diffs["DeBERTa encoder"].max() < 1e-5
assert diffs["DeBERTa EMD output"].min() > 1e-3

# %% [markdown]
# **Try it** (in Jupyter; on the website the controls show a saved picture): move the input with the slider. Bars
# below the dotted line are float rounding (under 10⁻⁵, the cell
# above checks it).

# %%
shift_panel = widgets.shift_widget(runs, ids, tokens, shift=shift, models=SHIFT_MODELS)
shift_panel

# %% [markdown] slideshow={"slide_type": "slide"}
# ## What the EMD costs (appendix A.7)
#
# A.7 argues that the EMD is cheap: the decoder only reconstructs the masked tokens, so with 15% masked and two
# decoder passes over a model of L layers its extra cost is about $0.15 \times 2/L$: 2.5% for the base model
# (L = 12), which the paper rounds to 3%.
# What the code does:
#
# - The released code runs both passes over **every** position, then keeps the masked rows: $2/L$.
# - This library (`only_masked_logits=True`, what pretraining uses) decodes only the masked queries, exactly
#   (each query is updated on its own), but keys and values are still H at **all** positions: K, V and the p2c
#   keys are projected for every token in both passes.
#
# Counted, in matrix FLOPs, on a batch of 128-token inputs with 15% of the tokens to predict:

# %%
torch.manual_seed(0)
cost_ids = torch.randint(5, len(vocab), (4, 128))
chosen = torch.rand(cost_ids.shape, generator=torch.Generator().manual_seed(0)) < 0.15
with torch.no_grad():
    state = mlm.deberta(cost_ids).encoder_state
    layer_cost = (
        viz.matrix_flops(lambda: mlm.deberta(cost_ids)) / config.num_hidden_layers
    )  # one encoder layer
    full = viz.matrix_flops(lambda: mlm.emd(last_layer, state))
    masked_only = viz.matrix_flops(lambda: mlm.emd(last_layer, state, select=chosen))
    exact = torch.allclose(
        mlm.emd(last_layer, state, select=chosen), mlm.emd(last_layer, state)[chosen], atol=1e-6
    )
share = chosen.float().mean().item()
assert math.isclose(100 * 0.15 * 2 / 12, 2.5)  # A.7's count for L = 12: 2.5% (the paper rounds it up to 3%)
print(
    f"{share:.0%} of the tokens decoded; EMD cost in encoder layers: every position {full / layer_cost:.2f}, "
    f"masked only {masked_only / layer_cost:.2f}, A.7's count {2 * share:.2f}"
)
assert exact  # decoding only the chosen queries gives exactly their rows
assert abs(full / layer_cost - 2) < 0.05  # two passes of the last layer
assert (
    2 * share < masked_only / layer_cost < 0.5 * full / layer_cost
)  # cheaper, but not A.7's 0.15 × 2 layers

# %% [markdown]
# Most of the remaining work has no query in it: K and V of H, the projections of the relative table, and p2c,
# which scores $K^c$ of H against every row of $Q^r$. H is the input of the encoder's own layer L, which
# computed the same numbers with the same weights. Counted, and taken away from the masked-only cost:

# %%
attention = last_layer.attention
with torch.no_grad():
    H_cost = state.penultimate  # (4, 128, D): keys and values of both EMD passes
    _, keys, _ = attention.content_qkv(H_cost, H_cost)
    table_q, _ = attention.position_qk(state.rel.table)
    kv = viz.matrix_flops(lambda: (attention.key_proj(H_cost), attention.value_proj(H_cost)))
    table_proj = viz.matrix_flops(lambda: attention.position_qk(state.rel.table))
    p2c_all = viz.matrix_flops(lambda: attention.p2c(keys, table_q, state.rel.index))
query_free = 2 * (kv + table_proj + p2c_all)  # both passes
cached = masked_only - query_free
print(
    f"work without a query: {query_free / masked_only:.0%} of the masked-only EMD; the rest "
    f"{cached / layer_cost:.2f} encoder layers, A.7's count {2 * share:.2f}"
)
assert query_free > 0.5 * masked_only  # most of it
assert abs(cached / layer_cost - 2 * share) < 0.25 * 2 * share  # the rest: close to A.7's count

# %% [markdown]
# Cached from the encoder pass, those numbers would bring the EMD's cost close to A.7's count; neither the
# released code nor this library caches them.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## (c) A probe: subject slot or object slot?
#
# A toy version of "store" vs "mall". A window of 2k = 16 positions (k = 8 in the probe models) holds `[CLS]` at
# position 0 and the phrase "the new ⟨noun⟩" once; the rest is padding that attention masks out. The noun is
# the *subject* in the first two of its five positions and the *object* in the last three: its label
# depends on its **absolute position** only. Two settings, the same models:
#
# - **anchor within the window**: nouns at 3 … 7, so in these windows every distance to `[CLS]` (1 … 7) reads
#   a row no other distance here reads (7 = k − 1 reads the top row, which eq. (3) gives every distance ≥ k − 1
#   too, but no token of these windows sits k or more from `[CLS]`);
# - **anchor beyond the window**: nouns at 10 … 14, so "the" sits at 8 or later and every distance between
#   `[CLS]` and the phrase is clamped (rows 0 and 2k − 1, whatever the slot).
#
# Three models, each with a linear classifier on the noun's final state: **relative only** (`no_emd`, reads
# `last_hidden_state`), **BERT-style** (`bert`, absolute positions at the input), **DeBERTa + EMD** (reads the
# EMD output). The probe lives in the library, `deberta_edu.training.probe`.

# %%
task_words = ("store", "mall", "opened", "beside", "a")  # any word will do as the noun
tasks = anchor_tasks(vocab.index("the"), vocab.index("new"), [vocab.index(w) for w in task_words])
for setting, task in tasks.items():
    example = probe_batch(task, 16, torch.Generator().manual_seed(0))
    print(setting, "| subject slot", list(task.slots()[0]), "| object slot", list(task.slots()[1]))
    for label in (0, 1):  # one window of each slot
        row = example.ids[example.label == label][0].tolist()
        print(
            "   ", " ".join(vocab[t] if t != PAD_ID else "·" for t in row), "→", ["subject", "object"][label]
        )
# the rows the phrase reads to [CLS] (δ(p, 0), eq. (3), k = 8): one per distance near it, the top row far from it
near, far = ([relative_distance(p, 0, 8) for p in range(t.first - 2, t.last)] for t in tasks.values())
assert len(set(near)) == len(near) == 7 and set(far) == {2 * 8 - 1}, (near, far)

# %% [markdown] slideshow={"slide_type": "subslide"}
# First without any training: can two placements of the same phrase, one in each slot, give the noun different
# states at all? `placement_difference` reads every placement with a freshly drawn model and reports the
# largest difference between a subject-slot and an object-slot state.

# %%
blindness = {
    (setting, model): placement_difference(task, variant, vocab_size=len(vocab))
    for setting, task in tasks.items()
    for model, variant in VARIANTS.items()
}
for (setting, model), d in blindness.items():
    print(f"{setting:26s} {model:14s} max |Δ| between the slots = {d:.1e}")
assert blindness["anchor beyond the window", "relative only"] < 1e-5  # the same state: no training can help
assert blindness["anchor within the window", "relative only"] > 1e-4  # [CLS] within reach: the slots differ
assert (
    min(d for (s, m), d in blindness.items() if m != "relative only") > 1e-3
)  # absolute positions: they differ

# %% [markdown]
# The same blindness inside one log bucket of v2/v3 (b = 256, K = 512: distances 500 … 505 share bucket 254).
# Windows of 512 with `[CLS]` at 0: the noun at 502 or at 503 puts "the", "new" and the noun 500 … 503 from
# `[CLS]`, one bucket whichever slot. Three positions earlier, 499 or 500, the noun itself crosses from bucket 253
# to 254:

# %%
v3_buckets = dict(position_buckets=256, max_relative_positions=512)
assert log_bucket(torch.arange(499, 507), 256, 512).tolist() == [253, *[254] * 6, 255]  # 500 … 505: bucket 254
bucket_blindness = {
    nouns_at: placement_difference(
        dataclasses.replace(tasks["anchor within the window"], window=512, first=nouns_at[0], last=nouns_at[1] + 1),
        "no_emd", vocab_size=len(vocab), **v3_buckets,
    )
    for nouns_at in ((502, 503), (499, 500))
}
for (a, b), d in bucket_blindness.items():
    print(f"relative only, log buckets: noun at {a} or {b}: max |Δ| = {d:.1e}")
assert bucket_blindness[502, 503] < 1e-5 < 1e-4 < bucket_blindness[499, 500]  # one bucket: the same state

# %% [markdown] slideshow={"slide_type": "subslide"}
# Now train every model in both settings, with the same data, steps and seeds, and score each on 2,000 held-out
# windows. Chance is the majority class of the held-out labels. Beyond the window the relative-only model's
# prediction can depend on *which* noun it reads, never on where: the best any such rule can do on the held-out
# windows is the "noun only" ceiling, and its accuracy must not exceed it.

# %%
steps = 100 if SMOKE else 120
seeds = (0, 1) if SMOKE else (0, 1, 2)
table = probe_table(tasks, VARIANTS, vocab_size=len(vocab), steps=steps, seeds=seeds)
print(format_table(table) + (" (SMOKE size: fewer seeds and steps than the full lesson)" if SMOKE else ""))

beyond = held_out(tasks["anchor beyond the window"])
nouns = beyond.ids[torch.arange(len(beyond.ids)), beyond.pos]
ceiling = sum(max(int((beyond.label[nouns == n] == y).sum()) for y in (0, 1)) for n in nouns.unique()) / len(
    nouns
)
print(f"beyond the window, the best rule that sees only the noun: {ceiling:.1%}")

for setting in tasks:
    for model in ("BERT-style", "DeBERTa + EMD"):
        assert table.worst(setting, model) > 0.99, (setting, model)  # absolute positions: solved, every seed
assert table.worst("anchor within the window", "relative only") > 0.99  # [CLS] in reach: solved without them
assert (
    table.best("anchor beyond the window", "relative only") <= ceiling + 0.005
)  # no better than the noun alone
beyond_best = table.best("anchor beyond the window", "relative only")
assert abs(beyond_best - table.chance["anchor beyond the window"]) < 0.03  # at chance (the majority class)

# %%
viz.plot_probe_table(table, "subject or object slot? tiny probe models" + (" (smoke size)" if SMOKE else ""))

# %% [markdown] slideshow={"slide_type": "subslide"}
# How fast does each model learn the slot when `[CLS]` is in reach? The same training, stopped after 5 and
# after 20 steps, scored on 500 held-out windows (chance: their majority class):

# %%
within = tasks["anchor within the window"]
quick_test = held_out(within, 500)
early = {
    (model, n, s): train_probe(
        variant, within, vocab_size=len(vocab), steps=n, lr=2e-3, seed=s, test=quick_test
    ).accuracy
    for model, variant in VARIANTS.items()
    for n in (5, 20)
    for s in seeds
}
quick_chance = majority_rate(quick_test.label)
print(f"chance on these windows: {quick_chance:.0%}")
for model in VARIANTS:
    print(f"{model:14s} " + ", ".join(
        f"{n} steps {min(early[model, n, s] for s in seeds):.0%}–{max(early[model, n, s] for s in seeds):.0%}"
        for n in (5, 20)))
assert min(early[model, 20, s] for model in VARIANTS for s in seeds) > 0.98  # 20 steps: every model, every seed
assert min(early["BERT-style", 5, s] for s in seeds) > 0.98  # positions at the input: 5 steps are enough
at_5 = [early[m, 5, s] for m in ("relative only", "DeBERTa + EMD") for s in seeds]
assert max(abs(a - quick_chance) for a in at_5) < 0.05  # 5 steps: both still at chance, the EMD no faster

# %% [markdown] slideshow={"slide_type": "slide"}
# ## (d) What this means
#
# - **Short inputs.** With `[CLS]` inside the relative window, relative attention has the absolute position:
#   our relative-only model learns the slot in 20 steps, as DeBERTa + EMD does (BERT-style, with positions at
#   its input, needs 5). In DeBERTa v1 at 512 tokens every token is within k = 512 of `[CLS]`; nothing about
#   position is missing.
# - **Long inputs and coarse buckets.** Past the clamp (one row for every i − j ≥ k − 1, one for every
#   i − j ≤ −k), or within one log bucket of v2/v3,
#   positions that differ only in absolute place are *exactly* the same to relative attention, and no training
#   separates them. That is where absolute positions, at the input or in the EMD, add information.
# - **The store/mall argument** is therefore about what is *easy to learn*, not about information that is
#   missing: a relative-only model must learn to find `[CLS]` and read its distance off the relative table,
#   where the EMD hands every query its absolute position. Our toy does not show that difficulty: after 5 steps
#   neither DeBERTa + EMD nor relative only is above chance yet (within 5 points of the majority class on every
#   seed, while BERT-style has it), and after 20 every model has it. The paper's evidence is its pretraining
#   results below.

# %%
k_probe = 8
assert probe_config("no_emd", len(vocab)).max_relative_positions == k_probe  # the probe models' k
row_of = {d: relative_distance(max(d, 0), max(-d, 0), k_probe) for d in range(-3 * k_probe, 3 * k_probe)}
shared = {d for d, r in row_of.items() if list(row_of.values()).count(r) > 1}
assert shared == {d for d in row_of if d >= k_probe - 1 or d <= -k_probe}  # the clamp's two ends

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### The course model, measured
#
# The course model (results/course-model/, pretrained with the EMD on 128-token rows) is a short-input model:
# its v3 log buckets keep every distance below 128 exact, so `[CLS]` is always inside the window. By (d) it
# should not *need* the EMD's absolute positions. Test it: score its masked-token guesses on held-out BBC rows
# with its position table P as trained, set to zero, and shuffled.

# %%
from deberta_edu import load_course_model  # noqa: E402
from deberta_edu.data.corpus import load_split  # noqa: E402
from deberta_edu.model.positions import relative_distance_matrix  # noqa: E402
from deberta_edu.training.course import course_label  # noqa: E402
from deberta_edu.training.masking import mask_tokens  # noqa: E402

course, course_tok = load_course_model()
cc = course.config
rows_seen = relative_distance_matrix(128, k=cc.max_relative_positions, position_buckets=cc.position_buckets)
assert len(rows_seen.unique()) == 2 * 128 - 1  # every distance in a 128-token row has a table row of its own
_, held_out_docs = load_split("bbc")
pieces = [i for doc in held_out_docs[: 20 if SMOKE else 60] for i in course_tok.encode(doc)]
rows = torch.tensor([[course_tok.cls_id, *pieces[s: s + 126], course_tok.sep_id]
                     for s in range(0, len(pieces) - 126, 126)][:48])
masked, labels = mask_tokens(rows, vocab_size=course_tok.vocab_size, mask_token_id=course_tok.mask_id,
                             special_token_ids=list(course_tok.special_ids), generator=torch.Generator().manual_seed(0))
table_p = course.deberta.embeddings.position_embeddings.weight
trained_p = table_p.detach().clone()


def masked_accuracy(p_table):
    with torch.no_grad():
        table_p.copy_(p_table)
        logits = course(masked).logits
        table_p.copy_(trained_p)
    hidden = labels != -100
    return (logits[hidden].argmax(-1) == labels[hidden]).double().mean().item()


shuffle = torch.randperm(len(trained_p), generator=torch.Generator().manual_seed(0))
p_runs = {"P as trained": trained_p, "P = 0": torch.zeros_like(trained_p), "P shuffled": trained_p[shuffle]}
p_acc = {name: masked_accuracy(p) for name, p in p_runs.items()}
print(course_label())
print(f"{int((labels != -100).sum())} masked held-out tokens in {len(rows)} rows of 128:")
for name, a in p_acc.items():
    print(f"  {name:13s} accuracy {a:.1%}")
assert p_acc["P as trained"] > 0.3  # the model works on these rows
assert max(abs(a - p_acc["P as trained"]) for a in p_acc.values()) < 0.02  # and P does not matter to it

# %% [markdown]
# Within a point or two either way: the course model learned to do without the absolute positions it was
# handed, exactly as (b) and (d) predict for inputs shorter than the window. The EMD's P would matter to a model
# trained on rows longer than its exact window; this one never saw any. (Its EMD still runs two more layers
# over the encoder's output, with queries that are free to ignore P.)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Two ways to add absolute positions
#
# Both BERT-style input positions and the EMD solve the probe beyond the window. They differ in *where* the
# positions live:
#
# - **BERT** adds them to every token at the input, so every layer mixes "which word" with "which place"
#   (part (a): every output moved).
# - **DeBERTa** keeps all encoder layers relative (the encoder output did not move at all) and lets absolute
#   positions only *complement* the relative information when the masked words are decoded. The paper
#   conjectures that adding them early "might undesirably hamper the model from learning sufficient
#   information of relative positions" (§3.2).
#
# The paper's evidence (it reports no spread over pretraining runs): its ablation (§5.2.1, Table 4) removes
# the EMD from the base model: RACE 71.7 → 70.3, SQuAD v2.0 F1 82.5 → 81.3, SQuAD v1.1 F1 92.1 → 91.8,
# MNLI-m/mm 86.3/86.2 → 86.1/86.1. Table 10 (Wikitext-103 perplexity, dev/test) compares the EMD with absolute
# positions at the input of the same model, DeBERTa-AP: 20.5/19.9 for DeBERTa against 20.7/20.0 for DeBERTa-AP
# (RoBERTa 21.6/21.6).
#
# The EMD is used for pretraining: fine-tuning reads the encoder output, where every layer is relative.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Exercises
#
# **Exercise 1.** Write the EMD yourself: `my_emd(model, out)` gets a `DebertaModel` with an absolute position
# table and `out = model(ids, attention_mask, output_hidden_states=True)`; return what `EnhancedMaskDecoder`
# returns. Use `out.hidden_states`, `model.encoder.layers[-1]` and what the encoder built once,
# `out.encoder_state`: `.positions` (P), `.keep` (True at real tokens) and `.rel` (the relative table).
# The checker recognises the usual slips (keys from the wrong layer, one pass instead of two, positions in the keys…).


# %%
def my_emd(model, out):
    raise NotImplementedError  # your code here


exercises.check_emd(my_emd)


# %% tags=["hide-input", "solution"] jupyter={"source_hidden": true}
# Solution
def my_emd(model, out):
    H = out.hidden_states[-2]  # keys and values: layer L − 1
    state = out.encoder_state
    query = H + state.positions  # absolute positions, in the query only
    for _ in range(2):  # the last layer, twice, same weights
        query = model.encoder.layers[-1](H, state.keep, state.rel, query_states=query)
    return query


exercises.check_emd(my_emd)

# %% [markdown] slideshow={"slide_type": "subslide"}
# **Exercise 2.** Predict before you measure: which of these outputs stay *exactly* the same when an input is
# moved right behind masked padding? Put `True` (unchanged) or `False` (changes) for each; the checker measures
# all four on random models it builds (always the same draw) and tells you where you were wrong.

# %%
my_answers = {
    "no_emd": None,  # relative-only DeBERTa: encoder output
    "bert": None,  # BERT-style model: encoder output
    "deberta_encoder": None,  # DeBERTa with EMD: encoder output (last_hidden_state)
    "deberta_decoder": None,  # DeBERTa with EMD: EMD output (decoder_hidden_state)
}
exercises.check_shift_answers(my_answers)

# %% tags=["hide-input", "solution"] jupyter={"source_hidden": true}
# Solution: an output changes exactly when absolute positions entered before it.
my_answers = {"no_emd": True, "bert": False, "deberta_encoder": True, "deberta_decoder": False}
exercises.check_shift_answers(my_answers)

# %% [markdown] slideshow={"slide_type": "subslide"}
# **Exercise 3. Beat the clamp.** Beyond the window the relative-only model is at chance. Without absolute
# positions, without moving the phrase and without changing any label, change the windows so that it can tell
# the slots apart: write `make_batch(task, n, generator)` returning a `ProbeBatch(ids, mask, pos, label)`
# (start from `probe_batch(task, n, generator)`). Outside the phrase every window must hold the same tokens
# (a token that follows the label would put the answer in the words). Think first: what did `[CLS]` do in the
# first setting, and where in these windows could something play that part? The checker takes its own
# `exercises.anchor_task()` (ids 0 … 11), shows whether relative attention can see a difference between the
# slots at all, then trains a relative-only probe on your windows.


# %%
def make_batch(task, n, generator):
    raise NotImplementedError  # your code here


exercises.check_anchor_batch(make_batch)


# %% tags=["hide-input", "solution"] jupyter={"source_hidden": true}
# Solution: a second anchor at the window's last position (never used by the phrase), within k − 1 of every noun.
def make_batch(task, n, generator):
    ids, mask, pos, label = probe_batch(task, n, generator)
    ids[:, -1] = SEP_ID  # the same token at the same place in every window: like [SEP] closing an input
    return ProbeBatch(ids, (ids != PAD_ID).long(), pos, label)


exercises.check_anchor_batch(make_batch)

# %% [markdown]
# Which of the three models would solve your windows, and would BERT-style and the EMD still need their
# absolute positions? (Two layers can also relay a distance: an anchor that only "the" sees within the
# window works too. Why?)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## What we built
#
# - Relative attention sees distances only: outputs are identical when a whole input moves.
# - With `[CLS]` within the relative window, distances to it give the absolute position, and a relative-only
#   model learns "subject or object slot" as well as BERT-style input positions or the EMD.
# - Beyond the clamp, or inside a coarse log bucket, the two slots are exactly the same to relative attention:
#   it stays at chance, while absolute positions at the input (BERT) or in the EMD solve it. The paper's case
#   for the EMD is about what is easy to learn, and its evidence is Table 4 and Table 10.
# - The EMD runs the encoder's last layer twice more, with queries H + P (the released code; A.8 writes P
#   alone), keys and values H, c2p and p2c as in every layer; P reaches the output through the query residual
#   and query-side attention. It adds one table and no layer, and decoding only the masked tokens costs more
#   than A.7's count unless K and V of H are reused.
