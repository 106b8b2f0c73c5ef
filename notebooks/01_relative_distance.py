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
# # Lesson 1 — Relative distance δ(i, j)
#
# *DeBERTa: Decoding-enhanced BERT with Disentangled Attention* (He et al., 2021, [arXiv 2006.03654](https://arxiv.org/abs/2006.03654), numbered as in v6), §3.1, eq. (3).
#
# BERT tells each token **where it is**: position 0, 1, 2, … each get an embedding that is added to the word.
# DeBERTa instead tells each *pair* of tokens **how far apart they are**. This lesson builds that distance,
# δ(i, j), the row of a table of learned "relative position" vectors that token *i* uses when it looks at token *j*.
#
# By the end you can say why relative positions suit language, why distances are clamped at *k*,
# why δ takes values in [0, 2k), and how DeBERTa v2/v3 stretch the same table over long sequences with log buckets.

# %%
import math

import numpy as np
import torch

from deberta_edu import exercises, log_bucket, relative_distance, relative_distance_matrix, viz, widgets

_ = torch.manual_seed(0)  # nothing here is random, but every lesson starts from a fixed seed

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Why relative positions?
#
# The paper's example (§1): the dependency between the words "deep" and "learning" is much stronger when
# they stand **next to each other** than when they occur in different sentences. What matters is how far apart
# they are, not whether the pair opens the sentence or closes it.
#
# With absolute positions, "deep learning" at positions (0, 1) and at positions (7, 8) are two different
# inputs, and a model must learn the same fact about adjacency once for every place in the sentence.
# With relative positions the pair looks the same wherever it sits.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## The equation
#
# Token *i* (the query) looking at token *j* (the key) reads row δ(i, j) of a table with **2k** rows,
# where *k* is the maximum relative distance (paper §3.1, eq. 3):
#
# $$
# \delta(i, j) = \begin{cases}
#   0        & \text{if } i - j \le -k \\
#   2k - 1   & \text{if } i - j \ge k \\
#   i - j + k & \text{otherwise}
# \end{cases}
# $$
#
# Shifting i − j by +k turns distances −k … k − 1 into row numbers 0 … 2k − 1; farther distances share the
# rows at the ends. In the library this is `deberta_edu.relative_distance(i, j, k)`:

# %%
k = 4
print([relative_distance(i=5, j=j, k=k) for j in range(12)])  # token 5 looking at tokens 0 … 11

# %% [markdown] slideshow={"slide_type": "subslide"}
# Write the three cases down as they stand in eq. (3), and let the checker of the exercises compare them with
# the library on every pair up to 2k + 2 apart and several k, the boundaries included:

# %%
def delta_eq3(i, j, k):
    if i - j <= -k:
        return 0
    if i - j >= k:
        return 2 * k - 1
    return i - j + k


assert exercises.check_relative_distance(delta_eq3)

# %% [markdown] slideshow={"slide_type": "subslide"}
# The model needs δ for every pair at once: an L × L matrix. Built with two loops from our three cases, it
# must equal the library's vectorised `relative_distance_matrix` (one `clamp(i − j + k, 0, 2k − 1)`, as in the
# released code):

# %%
L = 12
naive = torch.tensor([[delta_eq3(i, j, k) for j in range(L)] for i in range(L)])
fast = relative_distance_matrix(L, k=k)
assert torch.equal(naive, fast)
fast

# %% [markdown] slideshow={"slide_type": "subslide"}
# ## The clamp is not symmetric
#
# Look at the third case at i − j = k − 1: it gives k − 1 + k = 2k − 1, the top row, the same row the second
# case gives every i − j ≥ k. So the two ends differ:
#
# | row | read by |
# |---|---|
# | 0 | every i − j ≤ −k (the key k or more tokens to the right) |
# | 1 … 2k − 2 | one distance each: i − j = −(k − 1) … k − 2 |
# | 2k − 1 | every i − j ≥ k − 1 (the key k − 1 or more tokens to the left) |
#
# A token tells apart k − 1 keys to its right but only k − 2 to its left. Count, for each row, the distances
# that read it (distances far beyond ±k included):

# %%
distances = torch.arange(-3 * k, 3 * k + 1)
rows = torch.tensor([delta_eq3(int(d), 0, k) for d in distances])  # δ(d, 0) = row of i − j = d
readers = {r: distances[rows == r].tolist() for r in range(2 * k)}
own_row = [ds[0] for ds in readers.values() if len(ds) == 1]
assert min(readers[0]) == -3 * k and max(readers[0]) == -k  # row 0: i − j <= −k
assert min(readers[2 * k - 1]) == k - 1 and max(readers[2 * k - 1]) == 3 * k  # top row: i − j >= k − 1
assert own_row == list(range(-(k - 1), k - 1))  # −(k − 1) … k − 2: one row each
print(f"k = {k}: row 0 ← i − j ≤ {max(readers[0])}, row {2 * k - 1} ← i − j ≥ {min(readers[2 * k - 1])}, "
      f"own rows for {own_row[0]} … {own_row[-1]}")

# %% [markdown] slideshow={"slide_type": "subslide"}
# Two more claims about the matrix, each an `assert` that would fail if δ were built otherwise:
#
# 1. **Range [0, 2k)**: every entry is a valid row of a table with 2k rows, and both ends are used.
# 2. **Only i − j matters**: moving both tokens by the same amount leaves δ unchanged (the matrix is constant
#    along every diagonal): the row says nothing about *where* the pair sits.

# %%
delta = relative_distance_matrix(40, k=k)
assert delta.min() == 0 and delta.max() == 2 * k - 1  # 1. rows 0 … 2k − 1
assert torch.equal(delta[1:, 1:], delta[:-1, :-1])  # 2. δ(i + 1, j + 1) = δ(i, j)
print(f"{len(torch.unique(delta))} distinct rows for 40 tokens and k = {k}")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## A picture of δ
#
# Rows are queries *i*, columns keys *j*. The colour is the table row. Along the diagonal (i = j) every token
# reads row k; one step left of the diagonal (j = i − 1, the previous token) reads k + 1, and so on.
# Pale cells read an end row that farther distances share: left of the lower white staircase (i − j ≥ k − 1)
# and right of the upper one (i − j ≤ −k). The lower staircase hugs the diagonal one cell closer: the asymmetry
# of the table above.

# %%
picture = viz.plot_delta(12, 4)
assert (naive.diagonal() == k).all() and (naive.diagonal(-1) == k + 1).all()  # i = j: row k; j = i − 1: k + 1
end_row = (naive == 0) | (naive == 2 * k - 1)  # from our three cases, not from viz
assert np.array_equal(viz.pale_cells(picture), end_row.numpy())  # the picture veils exactly those cells
assert np.array_equal(viz.clamped_mask(12, 4), end_row.numpy())
# each staircase, read back from the picture: its cell edges sit at i − j = offset (x = j − ½ on row i)
offsets = sorted(float(np.mean(np.asarray(line.get_ydata()) - line.get_xdata())) for line in picture.axes[0].lines)
assert offsets == [-4 + 0.5, 4 - 1.5]  # upper: between −k and −k + 1; lower: between k − 2 and k − 1, one closer
picture

# %% [markdown] slideshow={"slide_type": "subslide"}
# **Try it** (in Jupyter; on the website the controls show a saved picture): drag the sliders. With k ≥ L every
# distance in the sequence has a row of its own (with k = L the
# corner cell i − j = L − 1 sits on the top row, pale because longer sequences would share it).
#
# **And k = 1?** The table has two rows. Row 0 is read by every i − j ≤ −1: all keys to the right of the
# query. Row 1 = 2k − 1 is read by every i − j ≥ 0: the query itself *and* every key to its left. So δ is just
# "is the key to my right?": a token can no longer tell itself from its left neighbours, and no distance has
# a row of its own. In code, δ with k = 1 is the lower-triangular indicator j ≤ i:

# %%
for k_wide in (12, 15):  # k >= L = 12: each of the 2L − 1 distances reads a row no other distance in it reads
    assert viz.distinct_rows(12, k_wide) == 2 * 12 - 1
assert np.argwhere(viz.clamped_mask(12, 12)).tolist() == [[11, 0]]  # k = L: only the corner i − j = L − 1 is pale

delta_k1 = viz.delta_matrix(12, 1)
i12, j12 = np.indices((12, 12))
assert np.array_equal(delta_k1, (j12 <= i12).astype(delta_k1.dtype))  # 1 where j <= i, 0 where j > i
rows_k1 = viz.table_rows(np.arange(-12, 13), 1)
assert all((rows_k1 == r).sum() > 1 for r in (0, 1))  # no distance reads a row alone
assert delta_k1[5, 5] == delta_k1[5, 0]  # myself and a key five to my left: the same row

# %%
delta_panel = widgets.delta_widget(length=12, k=4)
delta_panel

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Eq. (3) between Shaw et al. and T5
#
# DeBERTa's table is one of a family. Before it:
#
# - **Shaw et al. (2018)** add a learned vector $a_{ij}$ to each key (and value), chosen by
#   $\operatorname{clip}(j - i, -k, k)$: **2k + 1** rows, $w_{-k} \dots w_k$, symmetric, exact up to k − 1 on
#   both sides. The query then meets it as $x_i W^Q a_{ij}^\top$: a content-to-position term (lesson 2).
# - **T5** (Raffel et al., 2020) adds a learned *scalar* per head and bucket to the score, no vector: half the
#   buckets for each direction; in each half, distances below a quarter of the buckets are exact, the rest
#   share buckets that widen logarithmically, in steps that would reach one bucket past the last at
#   `max_distance` (128). Rounded down, that puts the start of the last bucket at 91 (for 32 buckets): every
#   distance from 91 on, up to 128 and beyond, shares it.
# - **DeBERTa eq. (3)**: 2k rows, i − j instead of j − i, and the asymmetric ends found above.
#   v2/v3 combine it with T5's idea, below.
#
# Each scheme as a function of the distance (the shaded band: distances with a row of their own):

# %%
viz.plot_schemes(k=4, num_buckets=32, max_distance=128, span=40)

# %%
d40 = np.arange(-40, 41)
shaw, eq3 = viz.shaw_rows(d40, 4), viz.table_rows(d40, 4)
assert np.array_equal(shaw + shaw[::-1], np.full_like(shaw, 2 * 4))  # Shaw: row(d) + row(−d) = 2k everywhere
mirror_sum = eq3 + eq3[::-1]  # eq. (3): row(d) + row(−d)
assert set(d40[mirror_sum != 2 * 4]) == set(d40[np.abs(d40) >= 4])  # = 2k only inside |d| < k
assert set(mirror_sum[np.abs(d40) >= 4]) == {2 * 4 - 1}  # and 2k − 1 beyond it
assert len(np.unique(shaw)) == 2 * 4 + 1 and len(np.unique(eq3)) == 2 * 4
shaw_own = {int(d) for d, r in zip(d40, shaw, strict=True) if (shaw == r).sum() == 1}
assert shaw_own == set(range(-(4 - 1), 4))  # Shaw: exact up to k − 1 on both sides
t5 = viz.t5_buckets(np.arange(-3000, 3001))
t5_own = {int(d) for d, b in zip(range(-3000, 3001), t5, strict=True) if (t5 == b).sum() == 1}
assert t5_own == set(range(-7, 8))  # T5: exact below a quarter of the 32 buckets, |j − i| < 8
assert len(np.unique(t5)) == 31  # 32 buckets, one never used (j − i = 0 counts as "not to the right")
assert len(np.unique(viz.t5_buckets(np.arange(91, 3001)))) == 1  # from 91 on, beyond max_distance too: one bucket
assert viz.t5_buckets([90]) != viz.t5_buckets([91]) and viz.t5_buckets([-90]) != viz.t5_buckets([-91])

# %% [markdown]
# The second and third asserts are the mirror of eq. (3): row(d) + row(−d) = 2k inside the window |d| < k, and
# 2k − 1 beyond it, where Shaw's clip keeps 2k. Lesson 2 needs exactly this relation.

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
assert (pairs[0].delta_ij, pairs[0].delta_ji) == (k - 1, k + 1)  # the rows named above
assert pairs[2].delta_ij != pairs[0].delta_ij  # far apart: other rows

# %%
viz.plot_pairs(sentences, "deep", "learning", k)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## v1 and v2/v3: from a clamp to log buckets
#
# DeBERTa v1 uses eq. (3) with k = 512 (§3.1.1): a table of 1024 rows, one of its own for each distance up to
# 510, and a token 600 positions away shares its row with one 5,000 positions away. DeBERTa v2 and v3 halve the
# table (2 × `position_buckets` = 512 rows) and still tell distances apart, coarsely, almost as far (up to 505,
# measured below; beyond, 600 and 5,000 share a row here too), with T5's rule: **exact near, logarithmic far**.

# %%
assert relative_distance(600, 0, 512) == relative_distance(5000, 0, 512) == 1023  # v1: the top row
assert viz.table_rows([600, 5000], 512, 256).tolist() == [511, 511]  # v2/v3 (b = 256, K = 512): the top row

# %% [markdown]
# Derive the bucket of a distance d from that rule, with b = `position_buckets`, m = b/2 and
# K = `max_relative_positions`:
#
# 1. *Exact near*: bucket(d) = d for |d| ≤ m.
# 2. *Logarithmic far*: beyond m the bucket grows like the log of the distance, measured from m:
#    bucket(d) = m + c · log(|d| / m), which starts at m for |d| = m, so the two pieces join.
# 3. *Fill the table*: the last bucket b − 1 = m + (m − 1) is reached at |d| = K − 1, so
#    c · log((K − 1)/m) = m − 1, i.e. c = (m − 1) / log((K − 1)/m).
# 4. *Round up* to an integer (ceil, so that |d| = m + 1 already gets bucket m + 1), and mirror for d < 0:
#
# $$\text{bucket}(d) = \operatorname{sign}(d)\left(m + \left\lceil
#    \frac{\log(|d| / m)}{\log((K-1)/m)}\,(m - 1)\right\rceil\right)
#    \quad\text{for } |d| > m .$$
#
# Our derivation, written in numpy (float64), against the library's `log_bucket`, which follows the float32
# arithmetic of transformers' `make_log_bucket_position`:

# %%
for b, K in ((256, 512), (64, 512), (32, 128)):
    m = b // 2
    dd = np.arange(-4 * K, 4 * K + 1)
    far = np.ceil(np.log(np.maximum(np.abs(dd), 1) / m) / np.log((K - 1) / m) * (m - 1))
    derived = np.where(np.abs(dd) <= m, dd, np.sign(dd) * (m + far))  # steps 1 to 4
    assert np.array_equal(derived, log_bucket(torch.tensor(dd), b, K).numpy()), (b, K)
print("derived buckets equal log_bucket for (256, 512), (64, 512), (32, 128), |d| up to 4K")

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
assert log_bucket(torch.tensor([511, 1000]), 256, 512).tolist() == [255, 317]  # past K − 1 it keeps growing

# %% [markdown] slideshow={"slide_type": "subslide"}
# The table row is then picked with the same clamp as eq. (3), bucket + b clamped to [0, 2b − 1], and the ends
# are asymmetric again, now for two reasons. Row 0 takes bucket ≤ −b, which the log branch reaches only past
# |d| = K − 1: i − j ≤ −K. The top row takes bucket ≥ b − 1, and the ceil reaches b − 1 as soon as the
# fraction in the formula exceeds (m − 2)/(m − 1), i.e. from |d| > m · ((K − 1)/m)^((m − 2)/(m − 1)),
# about 505.5 for b = 256, K = 512. Predicted, then measured:

# %%
b, K, m = 256, 512, 128
threshold = m * ((K - 1) / m) ** ((m - 2) / (m - 1))
assert round(threshold, 1) == 505.5, threshold  # "about 505.5"
first_top = math.floor(threshold) + 1  # the prediction: 506
dd = np.arange(-2000, 2001)
rows_v2 = viz.table_rows(dd, K, b)
assert dd[rows_v2 == 2 * b - 1].min() == first_top  # top row from i − j >= 506 …
assert dd[rows_v2 == 0].max() == -K  # … row 0 only from i − j <= −512
print(f"v2/v3 (b = {b}, K = {K}): row 0 ← i − j ≤ {-K}, row {2 * b - 1} ← i − j ≥ {first_top}")

# %% [markdown] slideshow={"slide_type": "subslide"}
# Beyond K − 1 = 511 the bucket keeps growing (317 at distance 1000), but the table has rows only for buckets
# −256 … 255: the lookup clamps it to the last row, as v1 clamps at k. (That is transformers' arithmetic, which
# we follow. Microsoft's current code clamps i − j to ±(K − 1) before bucketing, so there distance 1000 gets
# bucket 255 and row 0 is never read; the two agree for every |i − j| < K, which is all a 512-token input has.)
#
# Left: the row each distance uses. Right: how many distinct rows a sequence of L tokens reads. v1 reads
# 2L − 1 rows until L passes k, then all 2k; v2/v3 read one row per distance up to 131 (2L − 1 rows, like v1,
# up to L = 132), then fewer and fewer new rows per extra token: about 1.1 from 132 to 200 tokens, 0.7 to 300,
# 0.5 to 400 and 0.4 to 512, where v1 adds 2.

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
rows_read = {n: viz.distinct_rows(n, k=512, position_buckets=256) for n in (132, 133, 200, 300, 400, 512)}
assert rows_read[132] == 2 * 132 - 1 and rows_read[133] < 2 * 133 - 1  # one row per distance up to 131
per_token = [(rows_read[b] - rows_read[a]) / (b - a) for a, b in ((132, 200), (200, 300), (300, 400), (400, 512))]
print("v2/v3 new rows per extra token, 132 → 200 → 300 → 400 → 512: " + ", ".join(f"{r:.2f}" for r in per_token))
assert per_token == sorted(per_token, reverse=True)  # fewer and fewer
assert [round(r, 1) for r in per_token] == [1.1, 0.7, 0.5, 0.4]  # the figures quoted above

# %% [markdown] slideshow={"slide_type": "subslide"}
# **Try it** (in Jupyter; on the website the controls show a saved picture): fewer buckets squeeze long distances
# harder; a smaller k reaches the last bucket sooner.
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
# **Exercise 1.** Which distances have a row of their own? Return `(lo, hi)`, the smallest and the largest
# i − j whose row no other distance reads, as a formula in k (the checker tries k = 1 … 12; return `None`
# where no distance has a row of its own). Reason it out from eq. (3) before you count.


# %%
def my_exact_window(k):
    raise NotImplementedError  # your code here


exercises.check_exact_window(my_exact_window)


# %% tags=["hide-input", "solution"] jupyter={"source_hidden": true}
# Solution: row 0 is shared by i − j <= −k and the top row by i − j >= k − 1 (the third case already gives
# 2k − 1 at k − 1); in between, −(k − 1) … k − 2 have a row each. With k = 1 that range is empty.
def my_exact_window(k):
    return (-(k - 1), k - 2) if k >= 2 else None


exercises.check_exact_window(my_exact_window)


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
# - The clamp is asymmetric: row 0 takes i − j ≤ −k, row 2k − 1 takes i − j ≥ k − 1; only −(k − 1) … k − 2
#   have rows of their own. Beyond, the model knows "far left" and "far right", nothing finer.
# - Shaw et al. clip symmetrically to 2k + 1 rows; T5 buckets logarithmically and adds a scalar, not a vector.
# - v2/v3 keep short distances exact and bucket long ones logarithmically (derived above from "exact near,
#   logarithmic far"), so one small table covers long inputs.
#
# Next, lesson 2 uses these rows: each token pair's attention score gets terms that read the content of one
# token against the relative position of the other.
