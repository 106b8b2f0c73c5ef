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
# # Lesson 2 — Disentangled attention
#
# *DeBERTa* (He et al., 2021, [arXiv 2006.03654](https://arxiv.org/abs/2006.03654), numbered as in v6), §3.1, eqs. (2)–(4), §3.1.1 and Algorithm 1.
#
# In BERT a token is one vector: its word embedding plus its position embedding, added together at the input.
# DeBERTa keeps **two** vectors apart ("disentangled"): the **content** $H_i$ of token *i*, and the
# **relative position** $P_{i|j}$ of token *i* with respect to token *j*, a row δ(i, j) of the table from
# lesson 1. The attention score between two tokens then splits into terms that each answer one question.
#
# We build those terms with plain loops from the equations, check them against the library's fast version,
# read the paper's Algorithm 1 beside it, find where eq. (2), eq. (4) and the released code pick different
# rows, measure how much of the dropped fourth term the other three can hold and why the scores are divided
# by √(3d), and explore the maps of a model on a real sentence.

# %%
import math

import numpy as np
import torch

from deberta_edu import (
    DebertaForMaskedLM,
    DebertaModel,
    DisentangledSelfAttention,
    exercises,
    make_config,
    naive_attention,
    relative_distance,
    relative_distance_matrix,
    viz,
    widgets,
)
from deberta_edu.lessons.explorer import load_demo, show_explorer
from deberta_edu.training.course import course_label, course_metrics

torch.manual_seed(0)
torch.set_num_threads(1)  # tiny models: one thread avoids the cost of coordinating threads

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Four terms (eq. 2)
#
# Write token *i* as the pair $\{H_i, P_{i|j}\}$. The score of query *i* for key *j* is the dot product of
# the two pairs, which expands into four terms:
#
# $$
# A_{i,j} = \{H_i, P_{i|j}\} \times \{H_j, P_{j|i}\}^\top
#   = \underbrace{H_i H_j^\top}_{\text{content-to-content}}
#   + \underbrace{H_i P_{j|i}^\top}_{\text{content-to-position}}
#   + \underbrace{P_{i|j} H_j^\top}_{\text{position-to-content}}
#   + \underbrace{P_{i|j} P_{j|i}^\top}_{\text{position-to-position}}
# $$
#
# | term | question it answers |
# |---|---|
# | c2c | does the *word* i look for the *word* j? ("store" ↔ "opened") |
# | c2p | does the word i look for a *place*: the token at distance δ(i, j)? ("new" looks one step right) |
# | p2c | seen from that distance, does the word j stand out? (a noun two steps left of me) |
# | p2p | does the distance alone matter, whatever the words? |
#
# DeBERTa keeps c2c, c2p and p2c, and drops p2p (we will read the paper's reason, and measure what it costs).

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### What is new here
#
# Four terms are not new in themselves. BERT adds an absolute position embedding $p_i$ to the word $w_i$ at the
# input, so its first layer's score already expands into four products:
#
# $$(w_i + p_i)\,W_q W_k^\top (w_j + p_j)^\top = w_i W_q W_k^\top w_j^\top + w_i W_q W_k^\top p_j^\top
#   + p_i W_q W_k^\top w_j^\top + p_i W_q W_k^\top p_j^\top .$$
#
# The difference is in what the position vectors are and where they enter:
#
# | model | position in the score | terms |
# |---|---|---|
# | BERT | absolute $p_i$, added to the word once, at the input (and layer-normed with it): only the first layer's score splits into these products, all through the same $W_q, W_k$ | all four, entangled |
# | Shaw et al. (2018) | a relative vector $a_{ij}$ added to the key: $x_i W^Q (x_j W^K + a_{ij})^\top$ | c2c + c2p |
# | Transformer-XL (Dai et al., 2019) | sinusoidal $R_{i-j}$; two learned global vectors u, v: $u W_{k,E}\, x_j$ and $v W_{k,R} R_{i-j}$ | c2c + c2p + a content bias + a per-distance bias |
# | DeBERTa | a learned relative table P, shared by all layers and given to *every* layer, with its own projections (v1) | c2c + c2p + **p2c** |
#
# The paper's point (§3.1): earlier relative schemes amount to c2c + c2p. **p2c**, the relative position of
# the query read against the key's *content*, is the new term; Transformer-XL's u-term reads the key's content
# too, but with one global vector, the same for every distance. p2p is dropped; below we measure how much of
# it c2p can hold: off the clamped top row, all of it with few rows, less than half with many.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## With projections (eq. 4)
#
# As in BERT, each vector is projected before the dot product: $Q^c = HW_q$, $K^c = HW_k$, $V^c = HW_v$ for the
# content, and $Q^r = PW_{q,r}$, $K^r = PW_{k,r}$ for the relative table $P$ (2k rows). Per head:
#
# $$
# \tilde A_{i,j} = \underbrace{Q^c_i \cdot K^c_j}_{\text{c2c}}
#   + \underbrace{Q^c_i \cdot K^r_{\delta(i,j)}}_{\text{c2p}}
#   + \underbrace{K^c_j \cdot Q^r_{\delta(j,i)}}_{\text{p2c}},
# \qquad
# H_o = \operatorname{softmax}\!\left(\frac{\tilde A}{\sqrt{3d}}\right) V^c
# $$
#
# A tiny random model is enough to check the equations: two layers, two heads of size d = 64, k = 4.
# (`share_att_key=False` gives positions their own projections $W_{q,r}, W_{k,r}$ as in eq. (4); v2/v3 reuse
# $W_q, W_k$ for them, which changes none of the equations checked next, and matters for the p2c index below.)

# %%
k = 4
config = make_config(
    "tiny",
    vocab_size=100,
    position_buckets=-1,
    max_relative_positions=k,
    share_att_key=False,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)
model = DebertaModel(config).eval()
ids = torch.randint(5, 100, (1, 8))  # one sentence of 8 random tokens
with torch.no_grad():
    out = model(ids, output_hidden_states=True, return_details=True)
fast = out.attentions[0]  # layer 0: fast.terms[name] (1, heads, L, L), scaled; fast.probs (1, heads, L, L)
L, heads, d = ids.size(1), config.num_attention_heads, config.head_size
print(f"layers = {config.num_hidden_layers}, L = {L}, heads = {heads}, d = {d}, terms = {config.terms}")

# %% [markdown] slideshow={"slide_type": "subslide"}
# The inputs of layer 0: the content H (the embeddings) and the relative table P (2k rows, layer-normed in
# v2/v3). The projections come from the layer itself.

# %%
attention = model.encoder.layers[0].attention
H = out.hidden_states[0][0]  # (L, D) content entering layer 0
P = model.encoder.rel_norm(model.encoder.rel_embeddings.weight).detach()  # (2k, D) relative table
W = attention.projection_weights()  # name -> (weight, bias) of W_q, W_k, W_v, W_{q,r}, W_{k,r}


def project(x, name):
    """x W^T + b, split into heads: (rows, D) -> (heads, rows, d)."""
    weight, bias = W[name]
    y = x @ weight.T + (0 if bias is None else bias)
    return y.unflatten(-1, (heads, d)).transpose(0, 1).detach()


Qc, Kc, Vc = project(H, "q"), project(H, "k"), project(H, "v")  # (heads, L, d)
Qr, Kr = project(P, "q_r"), project(P, "k_r")  # (heads, 2k, d)

# %% [markdown] slideshow={"slide_type": "subslide"}
# Now the three terms, one pair at a time, exactly as written (with one change in p2c, explained next):

# %%
scale = 1 / math.sqrt(3 * d)
c2c, c2p, p2c = (torch.zeros(heads, L, L) for _ in range(3))
for h in range(heads):
    for i in range(L):
        for j in range(L):
            c2c[h, i, j] = Qc[h, i] @ Kc[h, j] * scale
            c2p[h, i, j] = Qc[h, i] @ Kr[h, relative_distance(i, j, k)] * scale
            p2c[h, i, j] = Kc[h, j] @ Qr[h, relative_distance(i, j, k)] * scale  # released code: δ(i, j)
probs = torch.softmax(c2c + c2p + p2c, dim=-1)

for name, naive in {"c2c": c2c, "c2p": c2p, "p2c": p2c}.items():
    assert torch.allclose(naive, fast.terms[name][0], atol=1e-5), name
assert torch.allclose(probs, fast.probs[0], atol=1e-6)
print("the loops equal the library's fast attention, term by term")

# %% [markdown]
# The library keeps its own loop version, `naive_attention`, beside the fast one (a test keeps them equal);
# it agrees with ours too:

# %%
lib_terms, lib_probs, _ = naive_attention(attention, H, P, lambda i, j: relative_distance(i, j, k))
assert all(
    torch.allclose(lib_terms[t], v, atol=1e-5) for t, v in {"c2c": c2c, "c2p": c2p, "p2c": p2c}.items()
)
assert torch.allclose(lib_probs, probs, atol=1e-6)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Which row? Eq. (2), eq. (4) and the released code
#
# The paper writes the relative position in two ways, and they do not pick the same rows. Take $P_{i|j}$, the
# relative position of i with respect to j, to be row δ(i, j) of the table, as §3.1 defines it. Then:
#
# | term | eq. (2) | eq. (4) and Algorithm 1 | released code (and this course) |
# |---|---|---|---|
# | c2p | $H_i P_{j\|i}^\top$: row **δ(j, i)** | $Q^c_i \cdot K^r_{\delta(i,j)}$: row **δ(i, j)** | δ(i, j) |
# | p2c | $P_{i\|j} H_j^\top$: row **δ(i, j)** | $K^c_j \cdot Q^r_{\delta(j,i)}$: row **δ(j, i)** | δ(i, j) |
#
# The released code takes c2p from eq. (4) and p2c from eq. (2): both terms of a pair read the **same** row
# δ(i, j). Eq. (4)'s text explains δ(j, i) for p2c ("for a given position i, position-to-content computes the
# attention weight of the key content at j with respect to the query position at i"). This course follows the
# released code, so that its models load the released weights; the loop above did too.
#
# How far apart are δ(i, j) and δ(j, i)? Inside the window they mirror each other, δ(j, i) = 2k − δ(i, j);
# at the clamp the mirror breaks (lesson 1's asymmetric ends). Over a grid of 40 tokens:

# %%
grid = relative_distance_matrix(40, k=k)  # δ(i, j)
gi, gj = torch.meshgrid(torch.arange(40), torch.arange(40), indexing="ij")
inside = (gi - gj).abs() < k
assert torch.equal(grid.T[inside], (2 * k - grid)[inside])  # δ(j, i) = 2k − δ(i, j) for |i − j| < k
assert (grid.T != 2 * k - grid)[~inside].all()  # … and nowhere else: at the clamp the sum is 2k − 1
assert set((grid + grid.T)[~inside].tolist()) == {2 * k - 1}
print(f"δ(i, j) + δ(j, i) = {2 * k} for |i − j| < {k}, {2 * k - 1} beyond")

# %% [markdown] slideshow={"slide_type": "subslide"}
# So the two p2c terms are different numbers. eq. (4)'s version is the library's p2c given δ(j, i) instead of
# δ(i, j); written with loops as the equation prints it, and compared:

# %%
p2c_paper = torch.zeros(heads, L, L)
for h in range(heads):
    for i in range(L):
        for j in range(L):
            p2c_paper[h, i, j] = Kc[h, j] @ Qr[h, relative_distance(j, i, k)] * scale  # eq. (4): δ(j, i)
delta_L = relative_distance_matrix(L, k=k)
lib_p2c_paper = DisentangledSelfAttention.p2c(Kc[None], Qr, delta_L.T)[0] * scale  # the index transposed
assert torch.allclose(p2c_paper, lib_p2c_paper, atol=1e-6)
off_diagonal = ~torch.eye(L, dtype=torch.bool)
gap = (p2c_paper - fast.terms["p2c"][0]).abs()[:, off_diagonal]
assert (gap > 1e-4).float().mean() > 0.9  # off the diagonal almost every entry differs
print(f"eq. (4) vs released p2c: mean |difference| {gap.mean():.3f}, mean |p2c| {p2c.abs().mean():.3f}")
viz.plot_maps(
    {"p2c, released: δ(i, j)": p2c[0].numpy(), "p2c, eq. (4): δ(j, i)": p2c_paper[0].numpy()},
    [str(t) for t in ids[0].tolist()],
    "head 0, layer 0 of a model at random weights",
    shared_scale=True,
)

# %% [markdown] slideshow={"slide_type": "subslide"}
# ### Why the choice matters: the table is shared
#
# If p2c had a table of its own, the choice would be a relabelling: `viz.mirror_rows` moves row r to 2k − r
# for r ≥ 1, copies the top row 2k − 1 into row 0 and drops the old row 0; released p2c on the mirrored table
# is eq. (4)'s p2c on the original, for every pair with i − j < k. For i − j ≥ k no table can do it: the top
# row δ = 2k − 1 is read by i − j = k − 1 too, where eq. (4) wants row 1, not row 0.

# %%
P_mirror = viz.mirror_rows(P)
assert all(torch.equal(P_mirror[r], P[2 * k - r]) for r in range(1, 2 * k))  # row r moved to 2k − r
assert torch.equal(P_mirror[0], P[2 * k - 1])  # row 0: a copy of the top row
assert not any(torch.equal(row, P[0]) for row in P_mirror)  # the old row 0 is gone
Qr_mirror = project(P_mirror, "q_r")
p2c_on_mirror = DisentangledSelfAttention.p2c(Kc[None], Qr_mirror, delta_L)[0] * scale
agree = ((p2c_on_mirror - p2c_paper).abs() < 1e-5).all(0)  # (L, L): every head agrees
gaps = (gi - gj)[:L, :L]
assert torch.equal(agree, gaps < k)  # agreement exactly where i − j < k
c2p_on_mirror = DisentangledSelfAttention.c2p(Qc[None], project(P_mirror, "k_r"), delta_L)[0] * scale
assert not torch.allclose(c2p_on_mirror, c2p, atol=1e-3)  # but the same table feeds c2p
moved = (c2p_on_mirror - c2p).abs().mean()
print(f"mirrored table: p2c matches eq. (4) for i − j < {k}; c2p moves by {moved:.3f} on average")

# %% [markdown] slideshow={"slide_type": "subslide"}
# But P is **shared**: c2p reads the same rows, so mirroring P for p2c changes c2p (the last assert). Could the
# projection absorb the mirror instead? In v1 layout p2c has its own $W_{q,r}$: a $W'$ with $P W'^\top = P_{\text{mirror}}
# W_{q,r}^\top$ exists when the 2k rows of P are linearly independent, which needs 2k ≤ D. Our tiny model has
# 2k = 8 rows in D = 128 dimensions, so it does:

# %%
W_qr, b_qr = W["q_r"]
W_new = torch.linalg.lstsq(P, P_mirror @ W_qr.detach().T).solution.T  # (D, D): P W'ᵀ = P_mirror W_{q,r}ᵀ
assert torch.allclose(P @ W_new.T, P_mirror @ W_qr.detach().T, atol=1e-4)  # absorbed: 2k = 8 <= D = 128
print(f"2k = {2 * k} rows, D = {P.size(1)}: rank of P = {torch.linalg.matrix_rank(P).item()}")

# %% [markdown]
# So with its own $W_{q,r}$ and few rows, a model trained either way can learn the same function inside the
# window; only the pairs i − j ≥ k differ. That stops at real sizes and in v2/v3:
#
# - DeBERTa v1 uses k = 512: 1024 rows in D = 768 (base) dimensions cannot all be independent, so no $W'$ exists
#   in general, and P is shared with c2p.
# - v2/v3 (`share_att_key`) project the table with the content's own $W_q, W_k$: changing $W_q$ to absorb the
#   mirror would change c2c and every query.
#
# Either way, released weights evaluated with eq. (4)'s index give other numbers: the index is part of the model.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Algorithm 1 beside the fast path (§3.1.1)
#
# Storing a relative position *vector* for every pair costs O(N²d) memory (Shaw et al. do this). §3.1.1
# notices that every pair's vector is one of the 2k rows of $K_r$ (or $Q_r$), so Algorithm 1 multiplies each
# query by all 2k rows once and then *picks* the entry δ(i, j):
#
# | Algorithm 1 | what it does | in `deberta_edu` |
# |---|---|---|
# | line 1 | project content and table | `content_qkv`, `position_qk` |
# | line 2 | $A_{c\to c} = Q_c K_c^\top$ | `q @ k.T` in `term_scores` |
# | lines 3–5 | $\tilde A_{c\to p}[i,:] = Q_c[i,:] K_r^\top$: (N, 2k) | `c2p`: `q @ pos_k.T` |
# | lines 6–10 | $A_{c\to p}[i,j] = \tilde A_{c\to p}[i, \delta[i,j]]$ | `c2p`: `torch.gather(..., index)` |
# | lines 11–13 | $\tilde A_{p\to c}[:,j] = K_c[j,:] Q_r^\top$: (2k, N) | `p2c`: `k @ pos_q.T` |
# | lines 14–18 | $A_{p\to c}[i,j] = \tilde A_{p\to c}[\delta[j,i], j]$ | `p2c`: gather with **δ(i, j)** (released), not δ[j, i] |
# | line 19 | $A = A_{c\to c} + A_{c\to p} + A_{p\to c}$ | `sum(terms)`, or the bias of `scaled_dot_product_attention` |
# | line 20 | $H_o = \mathrm{softmax}(\tilde A / \sqrt{2d})\, V_c$ | softmax with **√(3d)**, as eq. (4) |
#
# Two differences stand in the printed algorithm. Line 16 reads δ[j, i], as eq. (4) does, not the released
# δ(i, j). And line 20 divides by **√(2d)**, while eq. (4), the text under it ("a scaling factor of 1/√(3d)")
# and the released code (√(d · (1 + number of position terms))) use √(3d). The memory saving is the same either
# way: intermediate scores of N × 2k per head instead of N × N vectors of size d.
#
# `viz.algorithm1` transcribes the algorithm line by line for one head. Run as printed, and with the two
# choices the released code makes:

# %%
h = 0
Vc_h = Vc[h]
lib_out = fast.probs[0, h] @ Vc_h  # the library's attention output of head h
as_printed, out_printed = viz.algorithm1(Qc[h], Kc[h], Vc_h, Qr[h], Kr[h], delta_L)  # δ[j, i], √(2d)
as_released, out_released = viz.algorithm1(Qc[h], Kc[h], Vc_h, Qr[h], Kr[h], delta_L, "released", 3)
for name in ("c2c", "c2p", "p2c"):
    assert torch.allclose(as_released[name] * scale, fast.terms[name][0, h], atol=1e-5), name
assert torch.allclose(out_released, lib_out, atol=1e-5)  # the fast path is Algorithm 1 with δ(i, j) and √(3d)
assert torch.allclose(as_printed["p2c"] * scale, p2c_paper[h], atol=1e-5)  # line 16 is eq. (4)'s p2c
_, out_sqrt2d = viz.algorithm1(Qc[h], Kc[h], Vc_h, Qr[h], Kr[h], delta_L, "released", 2)
assert not torch.allclose(out_sqrt2d, lib_out, atol=1e-4)  # line 20's √(2d) is another attention
print(f"head {h}: |H_o(√(2d)) − H_o(√(3d))| up to {(out_sqrt2d - lib_out).abs().max():.4f}")
print(f"memory per head for N = 512, k = 512, d = 64: vectors per pair {512 * 512 * 64:,} floats; "
      f"scores against the table {512 * 2 * 512:,}")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Why DeBERTa drops p2p
#
# $P_{i|j} P_{j|i}^\top$ reads two rows of the relative table, δ(i, j) and δ(j, i). Both depend only on
# i − j, and no content enters: p2p is a learned number per distance, a bias that says "tokens two apart
# attend to each other this much", whatever the words (T5's whole relative attention is such a bias).
#
# The model already has such a bias. The query projection has a bias $b_q$, so c2p splits into
#
# $$Q^c_i \cdot K^r_{\delta(i,j)} = (H_i W_q^\top) \cdot K^r_{\delta(i,j)} \;+\; \underbrace{b_q \cdot K^r_{\delta(i,j)}}_{\text{a number per row } \delta(i,j)} ,$$
#
# and the second part is a per-distance bias too. The claim to test: with the right $b_q$, c2p's bias part
# *is* a p2p term. Keep p2p in a copy of our model (same weights), then fit, per head, the query bias whose
# c2p part comes closest to that p2p map (least squares, `viz.fit_distance_bias`):

# %%
with_p2p = DebertaModel(config.replace(terms=("c2c", "c2p", "p2c", "p2p"))).eval()
with_p2p.load_state_dict(model.state_dict())  # the same weights, one more term
sentence = torch.randint(5, 100, (1, 10))
with torch.no_grad():
    p2p_map = with_p2p(sentence, return_details=True).attentions[0].terms["p2p"][0]  # (heads, L, L), scaled
att_p2p = with_p2p.encoder.layers[0].attention
_, Kr_p2p = att_p2p.position_qk(P)  # (heads, 2k, d): the position keys c2p reads
rows10 = relative_distance_matrix(10, k=k)
fit = viz.fit_distance_bias(p2p_map, Kr_p2p.detach(), rows10, attention.scale)  # c2p as the 3-term model scales it
top_row = rows10 == 2 * k - 1
assert fit.residual[:, ~top_row].abs().max() < 1e-5 * p2p_map.abs().max()  # exact off the top row …
assert fit.residual[:, top_row].abs().max() > 1e-2 * p2p_map.abs().max()  # … but not on it
print(f"fitted query bias: largest error {fit.residual[:, ~top_row].abs().max():.1e} off the top row, "
      f"{fit.residual[:, top_row].abs().max():.1e} on it (p2p up to {p2p_map.abs().max():.3f})")

# %% [markdown] slideshow={"slide_type": "subslide"}
# Exact everywhere but on the top row, and there for a reason we know: row 2k − 1 is read by i − j = k − 1 *and*
# by every i − j ≥ k, while p2p's second index δ(j, i) is 1 for the first and 0 for the others (lesson 1's
# asymmetric clamp). A bias of c2p has one number per row of δ(i, j) and cannot split them.
#
# Now put the fitted bias into the model (the 3-term one) and look at what changes: c2p moves by exactly the
# fitted per-distance map, and c2c moves too, by $b \cdot K^c_j$, a bias per *key* (the query bias also meets the
# content keys). That per-key part is the price of this route; it does not depend on i and so is not a
# per-distance term.

# %%
biased = DebertaModel(config).eval()
biased.load_state_dict(model.state_dict())
with torch.no_grad():
    biased.encoder.layers[0].attention.query_proj.bias += fit.bias.flatten()  # (heads · d,), as laid out
    before = model(sentence, return_details=True).attentions[0].terms
    after = biased(sentence, return_details=True).attentions[0].terms
moved_c2p = (after["c2p"] - before["c2p"])[0]
moved_c2c = (after["c2c"] - before["c2c"])[0]
assert torch.allclose(moved_c2p, fit.fitted, atol=1e-5)  # c2p gained the fitted per-distance bias
assert torch.allclose(moved_c2c, moved_c2c[:, :1, :].expand_as(moved_c2c), atol=1e-5)  # one number per key
print(f"c2p moved by the fitted map; c2c by a per-key bias up to {moved_c2c.abs().max():.3f}")
viz.plot_maps(
    {"p2p (kept)": p2p_map[0].numpy(), "c2p's bias part, fitted": fit.fitted[0].numpy(),
     "difference": fit.residual[0].numpy()},
    [str(n) for n in range(10)],
    "head 0, random weights: a query bias reproduces p2p except on the top row (i − j ≥ k − 1)",
    shared_scale=True,
)

# %% [markdown] slideshow={"slide_type": "subslide"}
# Off the top row the fit was exact because the 2k = 8 rows of $K^r$ are linearly independent in d = 64
# dimensions (rank 8 in every head): any 8 numbers, one per row, are $b \cdot K^r_r$ for some b. The top row
# missed for the other reason above: there p2p is not one number per row. A sequence reads at most 2L − 1
# rows, so the same holds while 2L − 1 ≤ d. With more
# rows than dimensions, the query bias spans only a d-dimensional family of per-distance biases. DeBERTa v1 has
# 1024 rows and d = 64: there p2p could add something c2p cannot hold. The paper's own reason is shorter: with
# relative positions, p2p "does not provide much additional information" (§3.1). The fit is the course's
# account of how much c2p can already hold, not the paper's argument. Measured with k = 128 on 128 tokens (255
# rows read, d = 64), on the pairs off the top row (the top row's miss is the other reason, and how much of the
# variance it holds depends on the draw of the weights):

# %%
config_wide = config.replace(max_relative_positions=128, terms=("c2c", "c2p", "p2c", "p2p"))
torch.manual_seed(0)
wide = DebertaModel(config_wide).eval()
long_sentence = torch.randint(5, 100, (1, 128))
with torch.no_grad():
    p2p_wide = wide(long_sentence, return_details=True).attentions[0].terms["p2p"][0]
    att_wide = wide.encoder.layers[0].attention
    _, Kr_wide = att_wide.position_qk(wide.encoder.rel_norm(wide.encoder.rel_embeddings.weight))
fit_wide = viz.fit_distance_bias(p2p_wide, Kr_wide, relative_distance_matrix(128, k=128), att_wide.scale)


def explained(fit, target, pairs):
    """The fraction of the target's variance over ``pairs`` (an (L, L) mask) that the fitted bias reproduces."""
    residual, target = fit.residual[:, pairs], target[:, pairs]
    return 1 - float(residual.pow(2).sum() / (target - target.mean()).pow(2).sum())


assert all(torch.linalg.matrix_rank(Kr_p2p[h].detach()) == 2 * k for h in range(heads))  # 8 independent rows
off_top_wide = relative_distance_matrix(128, k=128) != 2 * 128 - 1
r2_small, r2_wide = explained(fit, p2p_map, ~top_row), explained(fit_wide, p2p_wide, off_top_wide)
assert r2_small > 0.999 and r2_wide < 0.5  # few rows: all of p2p; many rows: less than half of it
print(f"p2p variance a query bias reproduces off the top row: k = 4 (8 rows) {r2_small:.2f}, "
      f"k = 128 (255 rows) {r2_wide:.2f}")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Why √(3d)?
#
# A dot product of two d-dimensional vectors with independent unit-variance entries has variance d; BERT divides
# by √d to bring the scores back to variance 1 before the softmax. DeBERTa adds **three** such dot products,
# so the variance of the sum is about 3d, and it divides by √(3d).
#
# Check the premise on the model itself rather than on random vectors: run it on an ordinary English paragraph
# (repeated words and all) with its weights drawn so that each projected entry has unit variance
# (std 1/√D, the setting the argument assumes; at the default std 0.02 every score is tiny and any scale
# leaves the softmax flat). Three seeds. On 37 words one draw of a term can miss d by up to a half (repeated
# words are not independent entries); the mean over the seeds comes within a third:

# %%
paragraph = (
    "the council said on monday that the new bridge over the river would open in the spring and that the old "
    "bridge would stay open for people on foot until the work on the road is done"
).split()
vocab = sorted(set(paragraph))
words = torch.tensor([[5 + vocab.index(w) for w in paragraph]])  # (1, 37) ids after the 5 special ids
unit = config.replace(vocab_size=5 + len(vocab), initializer_range=1 / math.sqrt(config.hidden_size))
studies = []
for seed in range(3):
    torch.manual_seed(seed)
    studies.append(viz.scale_study(DebertaModel(unit).eval(), words))
for n, st in enumerate(studies):
    variances = ", ".join(f"{t} {v:.2f}" for t, v in st.term_variance.items())
    print(f"seed {n}: var / d: {variances};  std of the score ÷ √(3d): {st.scores.std():.2f}")
    assert all(0.5 < v < 1.5 for v in st.term_variance.values())  # one draw of 37 words: d within a half
    assert 0.85 < float(st.scores.std()) < 1.15  # their sum, ÷ √(3d): unit variance
term_means = {t: np.mean([st.term_variance[t] for st in studies]) for t in studies[0].term_variance}
print("mean over the seeds, var / d: " + ", ".join(f"{t} {v:.2f}" for t, v in term_means.items()))
assert all(0.75 < v < 1.33 for v in term_means.values())  # each term: variance ≈ d, within a third on average
assert math.isclose(attention.scale, 1 / math.sqrt(3 * d))  # the library's scale for c2c + c2p + p2c
flat = viz.scale_study(DebertaModel(unit.replace(initializer_range=0.02)).eval(), words)  # the default std
print(f"default std 0.02: std of the score {flat.scores.std():.2f}; row entropy ÷ √d {flat.entropy['√d']:.3f} "
      f"nats, uniform {flat.uniform_entropy:.3f}")
assert flat.scores.std() < 0.1 and flat.uniform_entropy - flat.entropy["√d"] < 0.01  # tiny scores, flat rows

# %% [markdown] slideshow={"slide_type": "subslide"}
# Divided by √d instead, the same scores sit √3 times farther out and the softmax sharpens: the rows' mean
# entropy drops and their mean largest probability grows. At initialisation that is "sharper", not one-hot.
# The right panel below multiplies the scores by c: the rows' entropy falls all along (a softmax of c·s always
# sharpens as c grows), and ÷ √d is the point c = √3 of the same curve. Whatever training later does to the
# scores, rows divided by √d start √3 times farther along it, toward one-hot rows, where the softmax's gradient
# vanishes. Measured on the three seeds:

# %%
drop = [st.entropy["√(3d)"] - st.entropy["√d"] for st in studies]
ratio = [st.max_prob["√d"] / st.max_prob["√(3d)"] for st in studies]
for n, st in enumerate(studies):
    entropy, top = st.entropy, st.max_prob
    print(f"seed {n}: row entropy {entropy['√(3d)']:.2f} → {entropy['√d']:.2f} nats (uniform "
          f"{st.uniform_entropy:.2f}); largest probability {top['√(3d)']:.2f} → {top['√d']:.2f}")
print(f"entropy drop {np.mean(drop):.2f} ± {np.std(drop, ddof=1):.2f} nats, largest probability × "
      f"{np.mean(ratio):.2f} ± {np.std(ratio, ddof=1):.2f}")
assert min(drop) > 0.3 and min(ratio) > 1.5  # a clearly sharper softmax on every seed
viz.plot_scale_study(studies[0], "seed 0, layer 0, unit-variance weights, 37 words")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## A real sentence, through a trained model
#
# `load_demo` shows the **course model** (results/course-model/, pretrained once on BBC News and a larger
# English corpus; lesson 4 says how), or your own lesson 4 model once it beats it. The line printed below
# names the model, the tokens it saw and its held-out accuracy; for the course model, the next line gives the
# baseline beside that accuracy: a word-frequency (unigram) model scored on the same held-out tokens.

# %%
SENTENCE = "a new store opened beside the new mall, and on Saturday the shoppers came back to the centre of the town."
demo = load_demo(SENTENCE)
print(("TRAINED: " if demo.trained else "") + demo.source)
course = course_metrics()
shows_course_model = demo.source == course_label(course)  # not a lesson 4 model of yours that beat it
if shows_course_model:
    unigram = course["unigram_baseline"]["val_accuracy"]
    print(f"baseline: a word-frequency (unigram) model, {unigram:.1%} on the same held-out tokens")
    assert course["held_out"]["val_accuracy"] > 10 * unigram  # more than ten times the baseline
print(demo.tokens)
maps = viz.attention_maps(demo.model, demo.input_ids, demo.tokens)
probs_all = maps.maps[:, maps.kinds.index("probs")]  # (layers, heads, L, L)
assert np.allclose(probs_all.sum(-1), 1, atol=1e-5)  # each query's probabilities sum to 1
viz.plot_terms(maps, layer=0, head=0, model=demo.source)

# %% [markdown] slideshow={"slide_type": "subslide"}
# **What to look for.** Three things a trained model does that its random initialisation does not, measured
# below for every head against the same architecture at random weights:
#
# - heads that attend to the **previous** or the **next** token whatever the words (a band just off the
#   diagonal of "probs"; uniform attention would put 1/L there; the same heads do it on a second sentence);
# - in such a head, the **position terms do the work**: c2p and p2c score the neighbour well above the rest of
#   its row ("lift"), c2c does not. In the course model p2c lifts it more than c2p in every neighbour head, but
#   the heads differ in how c2p looks. In one, **c2p is a diagonal band**: its value depends on i − j almost
#   alone ("c2p by offset", the share of the map's variance its diagonals explain, above 0.8 there). In
#   another, p2c carries the neighbour (more than twice c2p's lift) and c2p is no band;
# - **p2c in columns**: part of p2c's variance is one score per key, the same at every distance: the key's
#   content decides, not how far it is ("p2c by column": in the course model, on this sentence, from about a
#   fifth to about half, in every head more than in any head at random weights, where it stays near 0.05).
#
# Random weights are three draws (seeds 0, 1, 2) of the same architecture; their largest values are printed.
# The asserts check these figures on the course model; a lesson 4 model of your own prints its own.

# %%
L = len(demo.tokens)
trained, random_ = viz.head_patterns(maps), []
for seed in range(3):  # the same architecture at random weights, three draws
    torch.manual_seed(seed)
    untrained = DebertaForMaskedLM(demo.model.config).eval()
    random_ += viz.head_patterns(viz.attention_maps(untrained, demo.input_ids, demo.tokens))
for p in trained:
    lift = ", ".join(f"{term} {value:+.1f}" for term, value in p.lift.items())
    print(f"layer {p.layer} head {p.head}: previous {p.previous:.2f}, next {p.following:.2f} "
          f"(uniform {1 / L:.2f}); lift {lift}; c2p by offset {p.offset_share:.2f}; "
          f"p2c by column {p.column_share:.2f}")
print(f"random weights, largest over 3 draws × {len(trained)} heads: previous or next "
      f"{max(max(p.previous, p.following) for p in random_):.2f}; |lift| "
      f"{max(abs(v) for p in random_ for v in p.lift.values()):.2f}; c2p by offset "
      f"{max(p.offset_share for p in random_):.2f}; p2c by column {max(p.column_share for p in random_):.2f}")
neighbours = [p for p in trained if max(p.previous, p.following) > 0.4]
positional = max(neighbours or trained, key=lambda p: p.offset_share)  # the neighbour head, c2p most diagonal
print("neighbour heads: " + ", ".join(f"layer {p.layer} head {p.head}" for p in neighbours)
      + f"; c2p most diagonal in layer {positional.layer} head {positional.head}")
assert max(max(p.previous, p.following) for p in random_) < 3 / L  # random weights: near uniform
assert max(abs(v) for p in random_ for v in p.lift.values()) < 0.1  # at random weights no term lifts a neighbour
if shows_course_model:
    assert max(p.previous for p in trained) > 0.4 and max(p.following for p in trained) > 0.4  # learned
    assert all(min(p.lift["c2p"], p.lift["p2c"]) > 0.5 > p.lift["c2c"] for p in neighbours)  # position terms
    assert all(p.lift["p2c"] > p.lift["c2p"] for p in neighbours)  # p2c lifts the neighbour more, in every one
    assert any(p.lift["p2c"] > 2 * p.lift["c2p"] and p.offset_share < 0.5 for p in neighbours if p is not positional)
    assert positional.offset_share > 0.8 > 0.5 > max(p.offset_share for p in random_)  # its c2p: a diagonal band
    columns = [p.column_share for p in trained]  # p2c: from about a fifth to about half of it in columns,
    assert max(columns) > 0.45 and min(columns) > 0.15 > 0.06 > max(p.column_share for p in random_)  # > random
    other = load_demo("the council said on monday that the new bridge over the river would open in the spring.")
    again = viz.head_patterns(viz.attention_maps(other.model, other.input_ids, other.tokens))
    again = {(p.layer, p.head): p for p in again}
    for p in neighbours:  # "whatever the words": on other words, the same heads attend to the same neighbour
        q = again[p.layer, p.head]
        print(f"second sentence, layer {p.layer} head {p.head}: previous {q.previous:.2f}, next {q.following:.2f}")
        assert (q.previous > 0.4, q.following > 0.4) == (p.previous > 0.4, p.following > 0.4)

# %% [markdown] slideshow={"slide_type": "subslide"}
# That neighbour head, its maps side by side: its c2p panel is nearly constant along each diagonal and changes
# from one diagonal to the next (it depends on i − j almost alone), and "probs" puts much of its weight one step
# off the main diagonal.

# %%
viz.plot_terms(maps, positional.layer, positional.head, model=demo.source)

# %% [markdown] slideshow={"slide_type": "subslide"}
# **Try it** (in Jupyter; on the website the controls show a saved picture): choose a layer, a head and a map.
# Scores are red where they attract and blue where they repel;
# "sum" is what enters the softmax, "probs" what comes out. Look for heads whose c2p or p2c map lifts the cells
# just off the diagonal: they attend to a fixed distance (the previous or the next token) whatever the words.
# It opens on the neighbour head with the diagonal c2p measured above.

# %%
attention_panel = widgets.attention_widget(maps, layer=positional.layer, head=positional.head, kind="c2p",
                                           model=demo.source)
attention_panel

# %% [markdown] slideshow={"slide_type": "subslide"}
# The same maps in a self-contained page (no server, no kernel: it also works in the static book). Click a layer,
# a map or a head thumbnail; hover over a cell to read its value. `deberta_edu.lessons.explorer.save_explorer(path, ...)`
# writes it to a file you can open in any browser.

# %%
show_explorer(demo.model, demo.input_ids, demo.tokens, title=SENTENCE, note=demo.source)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Exercises
#
# Three design questions; none is a copy of a cell above. Each function works on **one head**: contents are
# (L, d), the table's projections (2k, d), k is the maximum distance, and `relative_distance_matrix(L, k=k)`
# gives δ. The checkers draw their own cases, name the one that fails and recognise the usual mistakes.
#
# **Exercise 1. A previous-token head from c2p alone.** Trained heads attend to the previous token whatever
# the words (the section above found them). Build one by hand: return a query bias `bias` (d,) and position
# keys `k_r` (2k, d) such that, for contents X with entries of size about 1, the c2p map
# $(X_i + b)\cdot K^r_{\delta(i,j)}$ peaks at key j = i − 1 in every row i ≥ 1, far keys included. Think first:
# which row of the table does the previous token read, what do the clamped rows need, and how large must the
# bias be so that no word can win?


# %%
def previous_token_head(d, k):
    raise NotImplementedError  # your code here: return bias, k_r


exercises.check_previous_token_head(previous_token_head)


# %% tags=["hide-input", "solution"] jupyter={"source_hidden": true}
# Solution: the previous token is i − j = 1, row δ = k + 1. One large direction in the bias, the same direction
# in row k + 1 and zero elsewhere: (X_i + b) · K^r_(k+1) = 100 + 10 X_i[0], every other row gives 0. The clamped
# rows 0 and 2k − 1 stay at 0, so far keys never win. This is the per-distance bias p2p would add, made of c2p.
def previous_token_head(d, k):
    bias, k_r = torch.zeros(d), torch.zeros(2 * k, d)
    bias[0] = k_r[k + 1, 0] = 10.0
    return bias, k_r


exercises.check_previous_token_head(previous_token_head)


# %% [markdown] slideshow={"slide_type": "subslide"}
# **Exercise 2. The mirror table.** The released p2c reads row δ(i, j); the paper's eq. (4) reads δ(j, i). Return
# the table q_r' under which the released p2c computes the paper's p2c with q_r, on every pair inside the window
# (|i − j| < k). Then say True or False, and let the checker measure: (a) some table makes them agree on every
# pair, the clamped ones too; (b) when the table is shared with c2p (v3), mirroring it leaves c2p unchanged;
# (c) when p2c has a projection of its own (v1's $W_{q,r}$) and 2k ≤ D, the width of the table P, a new
# $W_{q,r}$ alone does the mirroring.


# %%
def mirror_table(q_r, k):
    raise NotImplementedError  # your code here: a (2k, d) table


exercises.check_mirror_table(mirror_table)
mirror_answers = {"every_pair": None, "c2p_unchanged": None, "own_projection": None}  # True or False
exercises.check_mirror_answers(mirror_answers)


# %% tags=["hide-input", "solution"] jupyter={"source_hidden": true}
# Solution: inside the window δ(j, i) = 2k − δ(i, j), so row r of q_r' is row 2k − r of q_r (rows 1 … 2k − 1;
# row 0 is only read by clamped pairs). q_r.flip(0) is one row off. (a) False: released row 2k − 1 serves
# i − j = k − 1 and every i − j ≥ k, which the paper reads at rows 1 and 0, so no table splits them (the same
# top row the p2p fit missed). (b) False: c2p reads P too; relabel its rows and c2p reads other distances.
# (c) True: P W' = P_mirror W_{q,r} has an exact solution when P's 2k rows are independent (2k ≤ D), as the
# least-squares fit above showed, and c2p keeps its own W_{k,r}.
def mirror_table(q_r, k):
    return torch.cat([q_r[:1], q_r[1:].flip(0)])


exercises.check_mirror_table(mirror_table)
mirror_answers = {"every_pair": False, "c2p_unchanged": False, "own_projection": True}
exercises.check_mirror_answers(mirror_answers)


# %% [markdown] slideshow={"slide_type": "subslide"}
# **Exercise 3. What was changed in this head?** Someone hands you one head's scores and its inputs. Exactly
# one of `exercises.DIAGNOSES` made them: DeBERTa as released, the scale √d, the paper's δ(j, i) in p2c, no
# p2c, or p2p added. Return its key. A rule of thumb ("the scores are large") will not do: decide from the
# terms.


# %%
print("\n".join(f"{key:>10}: {what}" for key, what in exercises.DIAGNOSES.items()))


def diagnose(scores, q_c, k_c, q_r, k_r, k):
    raise NotImplementedError  # your code here: a key of exercises.DIAGNOSES


exercises.check_diagnosis(diagnose)


# %% tags=["hide-input", "solution"] jupyter={"source_hidden": true}
# Solution: build the terms once, assemble each candidate, keep the one that matches.
def diagnose(scores, q_c, k_c, q_r, k_r, k):
    L, d = q_c.shape
    delta = relative_distance_matrix(L, k=k)
    c2c = q_c @ k_c.T
    c2p = (q_c @ k_r.T).gather(1, delta)  # [i, j] = Q^c_i · K^r_δ(i,j)
    p2c = (k_c @ q_r.T).gather(1, delta.T).T  # [i, j] = K^c_j · Q^r_δ(i,j)
    p2c_paper = (k_c @ q_r.T).gather(1, delta).T  # [i, j] = K^c_j · Q^r_δ(j,i)
    p2p = (q_r[delta] * k_r[delta.T]).sum(-1)
    candidates = {
        "deberta": (c2c + c2p + p2c) / math.sqrt(3 * d),
        "sqrt_d": (c2c + c2p + p2c) / math.sqrt(d),
        "paper_p2c": (c2c + c2p + p2c_paper) / math.sqrt(3 * d),
        "no_p2c": (c2c + c2p) / math.sqrt(3 * d),
        "with_p2p": (c2c + c2p + p2c + p2p) / math.sqrt(3 * d),
    }
    return min(candidates, key=lambda key: float((candidates[key] - scores).abs().max()))


exercises.check_diagnosis(diagnose)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## What we built
#
# - The score is a sum of terms that read content against content, content against relative position, and
#   relative position against content; each term is a dot product the loops above compute directly. p2c is
#   the term earlier relative schemes (Shaw et al., Transformer-XL) lack.
# - Eq. (2) and eq. (4) pick different rows; the released code reads δ(i, j) in both c2p and p2c. Inside the
#   window δ(j, i) = 2k − δ(i, j), so the choice would be a relabelling if the table were not shared with c2p.
# - Algorithm 1 (§3.1.1) is the fast path: scores against the 2k rows, then a gather. Its printed √(2d)
#   differs from eq. (4) and the released code (√(3d)); its δ[j, i] follows eq. (4) but not the released code.
# - p2p is a per-distance bias. The paper drops it because, with relative positions, it "does not provide much
#   additional information". The fit shows how much of it c2p can hold through a query bias: all of it on every
#   row but the clamped top one while the rows read are at most d, less than half with 255 rows.
# - Three terms triple the variance: divide by √(3d), or every score starts √3 times larger and the softmax
#   sharper.
#
# Nothing here knows where a token *is*, only how far apart two tokens are. Lesson 3 shows what that costs,
# and how the Enhanced Mask Decoder brings absolute positions back at the very end.
