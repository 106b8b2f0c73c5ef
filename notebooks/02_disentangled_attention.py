# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown] slideshow={"slide_type": "slide"}
# # Lesson 2 — Disentangled attention
#
# *DeBERTa* (He et al., 2020, [arXiv 2006.03654](https://arxiv.org/abs/2006.03654)), section 3.1, equations (2) and (4).
#
# In BERT a token is one vector: its word embedding plus its position embedding, added together at the input.
# DeBERTa keeps **two** vectors apart ("disentangled"): the **content** $H_i$ of token *i*, and the
# **relative position** $P_{i|j}$ of token *i* with respect to token *j*, a row δ(i, j) of the table from
# lesson 1. The attention score between two tokens then splits into terms that each answer one question.
#
# We build those terms with plain loops from the equations, check them against the library's fast version,
# see why one of the four terms is dropped, why the scores are divided by √(3d), and explore the maps of a
# model on a real sentence.

# %%
import math

import numpy as np
import torch

from deberta_edu import DebertaModel, exercises, make_config, naive_attention, relative_distance, viz, widgets
from deberta_edu.lessons.explorer import load_demo, show_explorer

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
# DeBERTa keeps c2c, c2p and p2c, and drops p2p (we will see why).

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
# $W_q, W_k$ for them, which changes nothing below.)

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
print(f"L = {L}, heads = {heads}, d = {d}, terms = {config.terms}")

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
# ## The p2c index: paper vs released code
#
# Eq. (4) in the paper indexes the position query of p2c with **δ(j, i)**: "for a given position i,
# position-to-content computes the attention weight of the key content at j with respect to the query position
# at i". The released implementation (and every public checkpoint, and Hugging Face transformers) uses
# **δ(i, j)**: the same row as c2p. The two are different models. This course follows the released code, so
# that its models can load the released weights; the loop above did too. Here is what eq. (4) as printed gives:

# %%
p2c_paper = torch.zeros(heads, L, L)
for h in range(heads):
    for i in range(L):
        for j in range(L):
            p2c_paper[h, i, j] = Kc[h, j] @ Qr[h, relative_distance(j, i, k)] * scale  # eq. (4): δ(j, i)
assert not torch.allclose(p2c_paper, fast.terms["p2c"][0], atol=1e-3)  # not what the released model computes
assert torch.allclose(
    p2c_paper.diagonal(dim1=-2, dim2=-1), p2c.diagonal(dim1=-2, dim2=-1)
)  # equal only at i = j
viz.plot_maps(
    {"p2c, released: δ(i, j)": p2c[0].numpy(), "p2c, eq. (4): δ(j, i)": p2c_paper[0].numpy()},
    [str(t) for t in ids[0].tolist()],
    "head 0, layer 0",
    shared_scale=True,
)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Why DeBERTa drops p2p
#
# $P_{i|j} P_{j|i}^\top$ reads two rows of the relative table, δ(i, j) and δ(j, i). Both depend only on
# i − j. So p2p is a number per distance: a bias that says "tokens two apart attend to each other this much",
# whatever the words. With relative positions it carries no information about the content, and
# c2p / p2c already see the distances. The paper drops it.
#
# Make a model that keeps p2p, feed it two unrelated sentences, and compare:

# %%
torch.manual_seed(0)
with_p2p = DebertaModel(config.replace(terms=("c2c", "c2p", "p2c", "p2p"))).eval()
sentence_a, sentence_b = torch.randint(5, 100, (1, 10)), torch.randint(5, 100, (1, 10))
with torch.no_grad():
    terms_a = with_p2p(sentence_a, return_details=True).attentions[0].terms
    terms_b = with_p2p(sentence_b, return_details=True).attentions[0].terms
p2p_a, p2p_b = terms_a["p2p"][0, 0], terms_b["p2p"][0, 0]  # head 0, (L, L)

assert torch.equal(p2p_a, p2p_b)  # the same for any content
assert torch.equal(p2p_a[1:, 1:], p2p_a[:-1, :-1])  # constant along each diagonal: a function of i − j
assert not torch.allclose(terms_a["c2c"], terms_b["c2c"])  # c2c, of course, changes with the words
positions = [str(n) for n in range(10)]
viz.plot_maps(
    {
        "c2c, sentence A": terms_a["c2c"][0, 0].numpy(),
        "c2c, sentence B": terms_b["c2c"][0, 0].numpy(),
        "p2p, sentence A": p2p_a.numpy(),
        "p2p, sentence B": p2p_b.numpy(),
    },
    positions,
    "c2c follows the words; p2p is the same stripes for every sentence",
)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Why √(3d)?
#
# A dot product of two d-dimensional vectors with independent unit-variance entries has variance d; BERT divides
# by √d to bring the scores back to variance 1 before the softmax. DeBERTa adds **three** such dot products,
# so the variance of the sum is about 3d, and it divides by √(3d). An experiment with random vectors:

# %%
var_one, var_three = viz.score_variances(d=64, n_terms=3, samples=20000)
print(f"var(one term) = {var_one:.1f} ≈ d = 64;  var(three terms) = {var_three:.1f}")
print(f"ratio {var_three / var_one:.2f}")
assert 2.7 < var_three / var_one < 3.3
assert math.isclose(attention.scale, 1 / math.sqrt(3 * d))  # the library's scale for c2c + c2p + p2c

# %% [markdown]
# Divided by √d, the three-term scores would be spread over a range √3 times wider: the softmax would
# saturate sooner (near one-hot rows) and learn less well. Divided by √(3d) they have unit variance again:

# %%
viz.plot_score_variance(64)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## A real sentence
#
# `load_demo` uses the model that lesson 4 pretrains, when its checkpoint exists, with its SentencePiece tokenizer.
# Otherwise it falls back to a **randomly initialised** tiny model over a word-level vocabulary made from the
# sentence; its maps show the structure of the equations (c2p in diagonal bands, p2c in columns…) but nothing
# learned about language. The line printed below says which one you are looking at.

# %%
demo = load_demo("a new store opened beside the new mall")
print(("TRAINED: " if demo.trained else "") + demo.source)
print(demo.tokens)
maps = viz.attention_maps(demo.model, demo.input_ids, demo.tokens)
probs_all = maps.maps[:, maps.kinds.index("probs")]  # (layers, heads, L, L)
assert np.allclose(probs_all.sum(-1), 1, atol=1e-5)  # each query's probabilities sum to 1
viz.plot_terms(maps, layer=0, head=0)

# %% [markdown] slideshow={"slide_type": "subslide"}
# **Try it**: choose a layer, a head and a map. Scores are red where they attract and blue where they repel;
# "sum" is what enters the softmax, "probs" what comes out. Look for heads whose c2p map has strong diagonal
# bands: they attend to a fixed distance (the previous or the next token) whatever the words.

# %%
attention_panel = widgets.attention_widget(maps, layer=0, head=0, kind="c2p")
attention_panel

# %% [markdown] slideshow={"slide_type": "subslide"}
# The same maps in a self-contained page (no server, no kernel: it also works in the static book). Click a layer,
# a map or a head thumbnail; hover over a cell to read its value. `deberta_edu.lessons.explorer.save_explorer(path, ...)`
# writes it to a file you can open in any browser.

# %%
show_explorer(
    demo.model, demo.input_ids, demo.tokens, title="a new store opened beside the new mall", note=demo.source
)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Exercises
#
# Each function works on **one head**: content vectors are (L, d), the table's projections are (2k, d), and k
# is the maximum distance (use `relative_distance` or build δ yourself). Return the (L, L) map, entry [i, j] for
# query i and key j, **divided by √(3d)** as in DeBERTa. The checkers name the case that fails and recognise the
# usual mistakes.
#
# **Exercise 1.** c2p: $Q^c_i \cdot K^r_{\delta(i,j)} / \sqrt{3d}$.


# %%
def my_c2p(q_c, k_r, k):
    raise NotImplementedError  # your code here


exercises.check_c2p(my_c2p)


# %% tags=["hide-input", "solution"] jupyter={"source_hidden": true}
# Solution: every query against every table row, then pick row δ(i, j) for each pair.
def my_c2p(q_c, k_r, k):
    L, d = q_c.shape
    delta = torch.tensor([[relative_distance(i, j, k) for j in range(L)] for i in range(L)])
    return (q_c @ k_r.T).gather(1, delta) / math.sqrt(3 * d)  # (L, 2k) -> (L, L)


exercises.check_c2p(my_c2p)


# %% [markdown] slideshow={"slide_type": "subslide"}
# **Exercise 2.** p2c as the released code computes it: $K^c_j \cdot Q^r_{\delta(i,j)} / \sqrt{3d}$. Try the
# paper's δ(j, i), or √d instead of √(3d), and read what the checker says.


# %%
def my_p2c(k_c, q_r, k):
    raise NotImplementedError  # your code here


exercises.check_p2c(my_p2c)


# %% tags=["hide-input", "solution"] jupyter={"source_hidden": true}
# Solution: every key against every table row; entry [i, j] reads key j at row δ(i, j).
def my_p2c(k_c, q_r, k):
    L, d = k_c.shape
    delta = torch.tensor([[relative_distance(i, j, k) for j in range(L)] for i in range(L)])
    rows = k_c @ q_r.T  # (L keys, 2k rows)
    return rows[torch.arange(L)[None, :], delta] / math.sqrt(3 * d)  # [i, j] = rows[j, δ(i, j)]


exercises.check_p2c(my_p2c)


# %% [markdown] slideshow={"slide_type": "subslide"}
# **Exercise 3.** The whole score $\tilde A / \sqrt{3d}$ = c2c + c2p + p2c, from the content queries and keys and
# the table's position queries and keys.


# %%
def my_scores(q_c, k_c, q_r, k_r, k):
    raise NotImplementedError  # your code here


exercises.check_scores(my_scores)


# %% tags=["hide-input", "solution"] jupyter={"source_hidden": true}
# Solution
def my_scores(q_c, k_c, q_r, k_r, k):
    d = q_c.shape[1]
    return q_c @ k_c.T / math.sqrt(3 * d) + my_c2p(q_c, k_r, k) + my_p2c(k_c, q_r, k)


exercises.check_scores(my_scores)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## What we built
#
# - The score is a sum of terms that read content against content, content against relative position, and
#   relative position against content; each term is a dot product the loops above compute directly.
# - p2p depends only on i − j, the same for every sentence, so DeBERTa leaves it out.
# - Three terms triple the variance: divide by √(3d).
# - The released code's p2c reads row δ(i, j), not eq. (4)'s δ(j, i); the library follows the code.
#
# Nothing here knows where a token *is*, only how far apart two tokens are. Lesson 3 shows what that costs,
# and how the Enhanced Mask Decoder brings absolute positions back at the very end.
