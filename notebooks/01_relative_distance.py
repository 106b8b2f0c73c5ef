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
# # Lesson 1 — Relative distance δ(i, j)
#
# *DeBERTa: Decoding-enhanced BERT with Disentangled Attention* (He et al., 2020, [arXiv 2006.03654](https://arxiv.org/abs/2006.03654)), section 3.1, equation (3).
#
# BERT tells each token **where it is**: position 0, 1, 2, … each get an embedding that is added to the word.
# DeBERTa instead tells each *pair* of tokens **how far apart they are**. This lesson builds that distance,
# δ(i, j), the row of a table of learned "relative position" vectors that token *i* uses when it looks at token *j*.
#
# By the end you can say why relative positions suit language, why distances are clamped at *k*,
# why δ takes values in [0, 2k), and how DeBERTa v2/v3 stretch the same table over long sequences with log buckets.

# %%
import torch

from deberta_edu import exercises, log_bucket, relative_distance, relative_distance_matrix, viz, widgets

_ = torch.manual_seed(0)  # nothing here is random, but every lesson starts from a fixed seed

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Why relative positions?
#
# The paper's example: the words "deep" and "learning" depend on each other much more strongly when they
# stand **next to each other** than when they are far apart. What matters is the distance between them, not
# whether the pair opens the sentence or closes it.
#
# With absolute positions, "deep learning" at positions (0, 1) and at positions (7, 8) are two different
# inputs, and a model must learn the same fact about adjacency once for every place in the sentence.
# With relative positions the pair looks the same wherever it sits.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## The equation
#
# Token *i* (the query) looking at token *j* (the key) reads row δ(i, j) of a table with **2k** rows,
# where *k* is the maximum relative distance (paper, eq. 3):
#
# $$
# \delta(i, j) = \begin{cases}
#   0        & \text{if } i - j \le -k \\
#   2k - 1   & \text{if } i - j \ge k \\
#   i - j + k & \text{otherwise}
# \end{cases}
# $$
#
# Shifting i − j by +k turns distances −k … k − 1 into row numbers 0 … 2k − 1; distances beyond ±k share the
# rows at the ends. In the library this is `deberta_edu.relative_distance(i, j, k)`:

# %%
k = 4
print([relative_distance(i=5, j=j, k=k) for j in range(12)])  # token 5 looking at tokens 0 … 11

# %% [markdown] slideshow={"slide_type": "subslide"}
# The model needs δ for every pair at once: an L × L matrix. Build it with two loops straight from the
# equation, then check it against the library's vectorised `relative_distance_matrix`.

# %%
L = 12
naive = torch.tensor([[relative_distance(i, j, k) for j in range(L)] for i in range(L)])
fast = relative_distance_matrix(L, k=k)
assert torch.equal(naive, fast)
fast

# %% [markdown] slideshow={"slide_type": "subslide"}
# Three claims about this matrix, each proved by an `assert`:
#
# 1. **Range [0, 2k)**: every entry is a valid row of a table with 2k rows.
# 2. **Only i − j matters**: moving both tokens by the same amount leaves δ unchanged
#    (the matrix is constant along every diagonal).
# 3. **The clamp**: all pairs further apart than k share the two end rows, 0 and 2k − 1.

# %%
delta = relative_distance_matrix(40, k=k)
assert delta.min() == 0 and delta.max() == 2 * k - 1  # 1. rows 0 … 2k − 1
assert torch.equal(delta[1:, 1:], delta[:-1, :-1])  # 2. δ(i + 1, j + 1) = δ(i, j)
i, j = torch.meshgrid(torch.arange(40), torch.arange(40), indexing="ij")
assert (delta[i - j <= -k] == 0).all() and (delta[i - j >= k] == 2 * k - 1).all()  # 3. the clamp
print(f"{len(torch.unique(delta))} distinct rows for 40 tokens and k = {k}")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## A picture of δ
#
# Rows are queries *i*, columns keys *j*. The colour is the table row. Along the diagonal (i = j) every token
# reads row k; one step left of the diagonal (j = i − 1, the previous token) reads k + 1, and so on.
# Beyond the white staircase the distance is at least k and clamped (pale cells): the model only knows
# "far to the left" or "far to the right".

# %%
viz.plot_delta(12, 4)

# %% [markdown] slideshow={"slide_type": "subslide"}
# **Try it**: drag the sliders. With k ≥ L nothing is clamped. With k = 1 the table has only two rows:
# which pairs share row 1, and what can a token still tell apart?

# %%
delta_panel = widgets.delta_widget(length=12, k=4)
delta_panel

# %% [markdown] slideshow={"slide_type": "slide"}
# ## "deep learning", wherever it stands
#
# Take "deep" as token *i* and "learning" as token *j*. When they are adjacent (i − j = −1), they use rows
# δ(i, j) = k − 1 and δ(j, i) = k + 1 in *every* sentence. When they are three words apart, the rows differ.
# The relative table therefore learns one vector for "the next word" that serves the pair in any sentence.

# %%
sentences = [
    "deep learning changed how machines read".split(),
    "researchers say deep learning changed everything".split(),
    "deep questions about learning".split(),
]
pairs = [viz.pair_distance(s, "deep", "learning", k) for s in sentences]
for p in pairs:
    print(f"deep at {p.i}, learning at {p.j}: δ(i, j) = {p.delta_ij}, δ(j, i) = {p.delta_ji}")
assert (pairs[0].delta_ij, pairs[0].delta_ji) == (
    pairs[1].delta_ij,
    pairs[1].delta_ji,
)  # same distance, same rows
assert pairs[0].i != pairs[1].i  # … although the pair sits elsewhere
assert pairs[2].delta_ij != pairs[0].delta_ij  # far apart: other rows

# %%
viz.plot_pairs(sentences, "deep", "learning", k)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## v1 and v2/v3: from a clamp to log buckets
#
# DeBERTa v1 uses eq. (3) with k = 512: a table of 1024 rows, and a token 600 positions away shares its row
# with one 5,000 positions away. DeBERTa v2 and v3 keep the table small (2 × `position_buckets` = 512 rows) yet
# still tell long distances apart: distances up to `position_buckets / 2` stay exact, longer ones fall into
# buckets whose width grows exponentially, so the bucket grows with log|i − j|:
#
# $$\text{bucket}(d) = \operatorname{sign}(d)\left(\frac{b}{2} + \left\lceil
#    \frac{\log(|d| / (b/2))}{\log((k-1)/(b/2))}\left(\frac b2 - 1\right)\right\rceil\right)
#    \quad\text{for } |d| > b/2,$$
#
# with b = `position_buckets` and k = `max_relative_positions`. `deberta_edu.log_bucket` implements it with
# the released code's arithmetic.

# %%
d = torch.arange(-1000, 1001)
buckets = log_bucket(d, position_buckets=256, max_relative_positions=512)
exact = d.abs() <= 128
assert torch.equal(buckets[exact], d[exact])  # short distances are kept as they are
assert (buckets[1:] >= buckets[:-1]).all()  # monotone: further never means a smaller bucket
assert torch.equal(buckets, -buckets.flip(0))  # odd: left and right mirror each other
print(
    "buckets for distances 100, 200, 400, 511, 1000:",
    log_bucket(torch.tensor([100, 200, 400, 511, 1000]), 256, 512).tolist(),
)

# %% [markdown] slideshow={"slide_type": "subslide"}
# Beyond k − 1 = 511 the bucket keeps growing (317 at distance 1000), but the table has rows only for buckets
# −256 … 255: the lookup clamps it to the last row, as v1 clamps at k.
#
# Left: the row each distance uses. Right: how many distinct rows a sequence of L tokens reads. v1 reads
# 2L − 1 rows until L passes k, then all 2k; v2/v3 read one row per distance up to 128, then fewer and fewer new
# rows per extra token.

# %%
viz.plot_buckets(2048, 512, 256)

# %%
assert viz.distinct_rows(2048, k=512) == 1024  # v1: every row of the 2k-row table
assert (
    viz.distinct_rows(2048, k=512, position_buckets=256) == 512
)  # v2/v3: every row of the 2 × 256-row table
assert (
    viz.distinct_rows(100, k=512) == viz.distinct_rows(100, k=512, position_buckets=256) == 199
)  # short: alike

# %% [markdown] slideshow={"slide_type": "subslide"}
# **Try it**: fewer buckets squeeze long distances harder; a smaller k reaches the last bucket sooner.
# Settings the equations do not allow are explained above the picture.

# %%
bucket_panel = widgets.bucket_widget(length=2048, k=512, position_buckets=256)
bucket_panel

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Exercises
#
# Each exercise has a checker from `deberta_edu.lessons.exercises`: it runs your function on many cases and tells you
# which fail, with the expected and the actual value. Replace `raise NotImplementedError` with your code and
# run the cell. The solutions are in the hidden cells below each exercise.
#
# **Exercise 1.** Write δ(i, j) of eq. (3) yourself (plain Python, no library call).


# %%
def my_delta(i, j, k):
    raise NotImplementedError  # your code here


exercises.check_relative_distance(my_delta)


# %% tags=["hide-input", "solution"] jupyter={"source_hidden": true}
# Solution
def my_delta(i, j, k):
    if i - j <= -k:
        return 0
    if i - j >= k:
        return 2 * k - 1
    return i - j + k


exercises.check_relative_distance(my_delta)


# %% [markdown] slideshow={"slide_type": "subslide"}
# **Exercise 2.** Build the whole L × L matrix without Python loops (hint: a column of i's minus a row of j's
# broadcasts to L × L; `torch.clamp` does the rest).


# %%
def my_delta_matrix(length, k):
    raise NotImplementedError  # your code here


exercises.check_relative_distance_matrix(my_delta_matrix)


# %% tags=["hide-input", "solution"] jupyter={"source_hidden": true}
# Solution
def my_delta_matrix(length, k):
    i = torch.arange(length)[:, None]  # (L, 1) queries
    j = torch.arange(length)[None, :]  # (1, L) keys
    return torch.clamp(i - j + k, 0, 2 * k - 1)  # (L, L)


exercises.check_relative_distance_matrix(my_delta_matrix)


# %% [markdown] slideshow={"slide_type": "subslide"}
# **Exercise 3.** How many *different* rows of the table does a sequence of L tokens read with maximum
# distance k? Write a formula (no loops over pairs), then explain it: when does the sequence length limit the
# count, and when does the table?


# %%
def my_distinct_rows(length, k):
    raise NotImplementedError  # your code here


exercises.check_distinct_rows(my_distinct_rows)


# %% tags=["hide-input", "solution"] jupyter={"source_hidden": true}
# Solution: L tokens have 2L − 1 different distances −(L − 1) … L − 1. While L <= k each distance has a row
# of its own; once L > k the distances beyond ±k fold onto the end rows and all 2k rows are in use.
def my_distinct_rows(length, k):
    return min(2 * length - 1, 2 * k)


exercises.check_distinct_rows(my_distinct_rows)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## What we built
#
# - δ(i, j) turns a pair's distance into a row of a table with 2k rows; it depends on i − j only.
# - Distances of k or more are clamped: the model knows "far left" and "far right", nothing finer.
# - v2/v3 keep short distances exact and bucket long ones logarithmically, so one small table covers long inputs.
#
# Next, lesson 2 uses these rows: each token pair's attention score gets terms that read the content of one
# token against the relative position of the other.
