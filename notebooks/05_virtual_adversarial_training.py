# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown] slideshow={"slide_type": "slide"}
# # Lesson 5 — Virtual adversarial training: scale-invariant fine-tuning (SiFT)
#
# The paper's third idea (§4). A good classifier should not change its answer when its input
# moves a tiny bit. *Virtual adversarial training* (Miyato et al., 2018) makes that a training signal:
# find the small perturbation of the input that changes the predictions **most**, and penalise the change.
#
# For text the "input" is the sequence of word embeddings. DeBERTa's twist is **where** it perturbs them:
# after layer normalisation, so that a perturbation of size σ = 0.01 means the same for every token
# and every model. That is the "scale-invariant" in SiFT.
#
# In this lesson we
# 1. write the adversarial loss down and compute it step by step,
# 2. see that one step of gradient ascent finds a direction far worse than a random one,
# 3. see why normalising first makes the perturbation size meaningful,
# 4. fine-tune the model of lesson 4 on movie-review sentiment with and without SiFT, over several seeds.

# %%

import torch

from deberta_edu.data.sentiment import LICENSE, load_splits
from deberta_edu.facts import smoke
from deberta_edu.figures import subplots
from deberta_edu.lessons.pretrained import pretrained_for_lessons
from deberta_edu.training.finetune import collate, compare, encode
from deberta_edu.training.sift import AdversarialConfig, Adversary, perturb, symmetric_kl

SMOKE = smoke()
torch.manual_seed(0)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## The task and the model
#
# Binary sentiment of Rotten Tomatoes snippets (an SST-2 stand-in), rated by people in Hutto & Gilbert's
# VADER study; snippets rated exactly 0 are dropped. The splits are fixed by a seeded shuffle.
# The encoder is the tiny DeBERTa pretrained in lesson 4 (if that lesson has not been run, a quick
# smoke-size pretraining makes one now).

# %%
splits = load_splits()
print({k: len(v) for k, v in splits.items()}, "—", LICENSE)
for e in splits["train"][:3]:
    print(f"{'+' if e.label else '-'} ({e.score:+.1f})  {e.text}")

pretrained, tokenizer, origin = pretrained_for_lessons()
print("encoder:", origin)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## The adversarial loss, step by step
#
# For a batch x with clean logits f(x), SiFT
#
# 1. draws δ₀ ~ N(0, σ²) clipped to ±2σ, one vector per token, on the **layer-normalised** embeddings n:
#    the model sees γ ⊙ (n + δ) + β instead of γ ⊙ n + β;
# 2. takes one step of gradient ascent on the symmetric KL divergence
#    $\mathrm{KL}_{sym}(p, q) = \mathrm{KL}(p\|q) + \mathrm{KL}(q\|p)$ between clean and perturbed predictions:
#    $\delta_1 = \delta_0 + \eta\, g / \|g\|_\infty$, the gradient normalised per token over the hidden dimension;
# 3. adds $\lambda\,\mathrm{KL}_{sym}(f(x), f(x + \delta_1))$ to the task loss.
#
# The ascent step differentiates with respect to δ only (``torch.autograd.grad``), so it leaves nothing in
# the parameters' ``.grad``.

# %%
from deberta_edu.model.classify import DebertaForSequenceClassification  # noqa: E402

clf = DebertaForSequenceClassification.from_mlm(pretrained).eval()
rows, labels = encode(splits["dev"][:16], tokenizer, max_length=48)
ids, mask = collate(rows)
shape = (*ids.shape, clf.config.hidden_size)

adversary = Adversary(clf.deberta.embeddings, AdversarialConfig(step_size=1e-2),
                      generator=torch.Generator().manual_seed(0))
clean = clf(ids, mask).logits.detach()
delta0 = adversary.initial_delta(shape, "cpu")
delta1, loss0 = adversary.ascent_step(lambda: clf(ids, mask).logits, clean, delta0)
with torch.no_grad(), perturb(adversary.target, delta1, adversary.scale):
    loss1 = symmetric_kl(clf(ids, mask).logits, clean)
print(f"KL_sym at δ0 (noise): {loss0.item():.3e}   after one ascent step: {loss1.item():.3e}")
assert loss1 > loss0, "the ascent step must increase the adversarial loss"
assert all(p.grad is None for p in clf.parameters()), "no gradient may reach the parameters"

# %% [markdown] slideshow={"slide_type": "subslide"}
# The perturbation per token: the initial noise is bounded by 2σ in every coordinate; the ascent step
# moves every token by exactly η in L∞ (the per-token normalisation), whatever the size of its gradient.

# %%
step = (delta1 - delta0).abs().amax(-1)[mask.bool()]
assert torch.allclose(step, torch.full_like(step, adversary.config.step_size), rtol=1e-3)
real = mask[0].bool()
fig, ax = subplots(1, 2, figsize=(10, 3))
ax[0].bar(range(int(real.sum())), delta0[0][real].abs().amax(-1), label="‖δ₀‖∞ (noise)")
ax[0].bar(range(int(real.sum())), (delta1 - delta0)[0][real].abs().amax(-1), alpha=0.6, label="‖δ₁ − δ₀‖∞ (ascent)")
ax[0].axhline(2 * adversary.config.sigma, ls="--", c="k", lw=0.8)
ax[0].set(xlabel="token", ylabel="L∞ norm", title="perturbation per token")
ax[0].legend(fontsize=8)
ax[1].hist(delta0.flatten(), bins=60)
ax[1].set(title="δ₀: N(0, σ²) clipped at ±2σ", xlabel="value")
fig

# %% [markdown] slideshow={"slide_type": "slide"}
# ## The adversarial direction against a random one
#
# Move the normalised embeddings by t·d, for the direction d found by the ascent step and for random
# directions of the same per-token size, and watch the predictions change.

# %%
g = torch.Generator().manual_seed(1)
adv_dir = (delta1 - delta0) / adversary.config.step_size  # unit L∞ per token
random_dirs = []
for _ in range(3):
    r = torch.randn(shape, generator=g)
    random_dirs.append(r / r.abs().amax(-1, keepdim=True))
ts = torch.linspace(0, 0.2, 9)


def kl_along(direction):
    out = []
    for t in ts:
        with torch.no_grad(), perturb(adversary.target, t * direction, adversary.scale):
            out.append(symmetric_kl(clf(ids, mask).logits, clean).item())
    return out


along_adv = kl_along(adv_dir)
along_random = [kl_along(d) for d in random_dirs]
assert along_adv[-1] > max(c[-1] for c in along_random), "the ascent direction should hurt more than random ones"
fig, ax = subplots(figsize=(5, 3))
ax.plot(ts, along_adv, "o-", label="adversarial direction")
for i, curve in enumerate(along_random):
    ax.plot(ts, curve, "--", c="gray", label="random directions" if i == 0 else None)
ax.set(xlabel="step size t (per-token L∞, normalised units)", ylabel="KL_sym(clean, perturbed)")
ax.legend()
fig

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Why normalise first: the "scale-invariant" part
#
# Plain VAT perturbs the raw word embeddings. But their norms differ from token to token and from model
# to model (a freshly initialised table has entries of size 0.02; a trained one drifts), so one σ is a
# huge push for some tokens and nothing for others. After layer normalisation every token vector has
# zero mean and unit variance: a perturbation of size σ is the same *relative* change everywhere.

# %%
with torch.no_grad():
    raw = clf.deberta.embeddings.word_embeddings(ids)[mask.bool()]  # (N, D) raw vectors of real tokens
    fresh = DebertaForSequenceClassification(clf.config).deberta.embeddings.word_embeddings(ids)[mask.bool()]
normalized = torch.nn.functional.layer_norm(raw, raw.shape[-1:], eps=clf.config.layer_norm_eps)
sigma = adversary.config.sigma
ratio = {
    "VAT, pretrained table": sigma / raw.std(-1),
    "VAT, fresh table": sigma / fresh.std(-1),
    "SiFT (normalised)": sigma / normalized.std(-1),
}
for name, r in ratio.items():
    print(f"{name:24s} relative size of σ: median {r.median().item():.3f}, spread ×{(r.max() / r.min()).item():.1f}")
assert ratio["SiFT (normalised)"].std() < 1e-3 * ratio["SiFT (normalised)"].mean() + 1e-6
fig, ax = subplots(figsize=(6, 3))
ax.boxplot(list(ratio.values()), tick_labels=list(ratio.keys()))
ax.set(yscale="log", ylabel="σ / std of the token vector", title="the same σ, very different relative sizes")
fig

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Fine-tuning with and without SiFT
#
# The same pretrained encoder, the same data order, the same seeds; only λ differs
# (λ = 0 is exactly plain fine-tuning — a test in `tests/test_sift.py` checks it bit for bit).

# %%
seeds = (0, 1, 2)
settings = dict(epochs=1.0, max_train_examples=128 if SMOKE else None,
                batch_size=32, lr=2e-4, max_length=48 if SMOKE else 64, progress=not SMOKE)
if SMOKE:  # a fraction of dev/test keeps CI fast
    splits = {"train": splits["train"], "dev": splits["dev"][:100], "test": splits["test"][:100]}
table = compare(pretrained, splits, tokenizer, lams=(0.0, 1.0), seeds=seeds, **settings)
print(f"{'':12s}{'test accuracy (mean ± std over seeds ' + str(seeds) + ')':>48s}")
for lam, row in table.items():
    name = "plain" if lam == 0 else f"SiFT λ={lam}"
    print(f"{name:12s}{row['mean']:>10.3f} ± {row['std']:.3f}    per seed: {[round(a, 3) for a in row['test']]}")
for row in table.values():
    assert all(0.0 <= a <= 1.0 for a in row["test"])

# %% [markdown]
# The committed full-size run (`results/sift/results.json`: all 8,454 training snippets, one epoch per
# run, the full lesson 4 encoder), for comparison when this lesson runs at its smoke size:

# %%
import json  # noqa: E402
from pathlib import Path  # noqa: E402

committed = Path("../results/sift/results.json")
if committed.exists():
    full = json.loads(committed.read_text())
    print(full["command"])
    for name, row in full["test_accuracy"].items():
        print(f"{name:12s} test accuracy {row['mean']:.3f} ± {row['std']:.3f}  per seed {[round(a, 3) for a in row['test']]}")

# %% [markdown]
# What the table shows is what it shows: at this size (a tiny encoder pretrained for minutes) the
# difference between the two is usually within the seed-to-seed spread. The paper uses SiFT for its
# largest model, DeBERTa 1.5B, on SuperGLUE, and reports that it helps there; adversarial training
# tends to matter most for large models that can otherwise fit the fine-tuning set too easily.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Exercises
#
# **Exercise 1. Symmetric KL.** Write `my_symmetric_kl(logits_p, logits_q)`: two (B, C) tensors of logits in,
# KL(p‖q) + KL(q‖p) averaged over the B rows out (one number). The checker compares it with
# `deberta_edu.training.sift.symmetric_kl` and checks what a divergence must be: symmetric, non-negative, zero for
# identical inputs, and unchanged when a constant is added to all logits of a row. It recognises the usual
# slips (one KL only, no mean over rows, probabilities where log-probabilities belong).

# %%
from deberta_edu import exercises  # noqa: E402


def my_symmetric_kl(logits_p, logits_q):
    raise NotImplementedError  # your code here


exercises.check_symmetric_kl(my_symmetric_kl)


# %% tags=["hide-input", "solution"] jupyter={"source_hidden": true}
# Solution
def my_symmetric_kl(logits_p, logits_q):
    log_p, log_q = logits_p.log_softmax(-1), logits_q.log_softmax(-1)  # (B, C) log-probabilities
    p, q = log_p.exp(), log_q.exp()
    return ((p * (log_p - log_q)).sum(-1) + (q * (log_q - log_p)).sum(-1)).mean()  # mean over rows


exercises.check_symmetric_kl(my_symmetric_kl)

# %% [markdown] slideshow={"slide_type": "subslide"}
# **Exercise 2. The ascent direction.** Write `my_linf_step(grad)`: the gradient with respect to δ, shape
# (B, L, D), in; the same shape out, each token's gradient divided by its own L∞ norm over the hidden
# dimension, $g / \max_d |g_d|$ (what `Adversary.ascent_step` multiplies by η). Padding tokens get no gradient
# at all: they must come back as zeros, not NaN.


# %%
def my_linf_step(grad):
    raise NotImplementedError  # your code here


exercises.check_linf_step(my_linf_step)


# %% tags=["hide-input", "solution"] jupyter={"source_hidden": true}
# Solution
def my_linf_step(grad):
    norm = grad.abs().amax(dim=-1, keepdim=True)  # (B, L, 1) L∞ norm of each token's gradient
    return grad / norm.clamp_min(1e-12)  # padding: 0 / 1e-12 = 0


exercises.check_linf_step(my_linf_step)

# %% [markdown] slideshow={"slide_type": "subslide"}
# Then compare with what plain VAT often does: one L2 norm for the whole batch. The cell below takes the
# gradient of the batch above and sorts the per-token step sizes under both rules (their overall sizes
# differ; look at the spread). Which tokens receive almost no perturbation under the batch-wide norm?
# (Look up the pieces of the smallest ones.)

# %%
delta = delta0.clone().requires_grad_(True)
with perturb(adversary.target, delta, adversary.scale.detach()):
    (grad,) = torch.autograd.grad(symmetric_kl(clf(ids, mask).logits, clean), [delta])
real = mask.bool()
steps = {
    "L∞ per token (SiFT)": my_linf_step(grad).abs().amax(-1)[real],
    "L2 over the batch": (grad / grad.norm()).abs().amax(-1)[real],
}
assert torch.allclose(steps["L∞ per token (SiFT)"], torch.ones(int(real.sum())))
fig, ax = subplots(figsize=(6, 3))
for name, size in steps.items():
    ax.plot(size.sort().values, "o", ms=3, label=name)
ax.set(yscale="log", xlabel="real tokens of the batch, sorted", ylabel="max |step| of the token")
ax.legend()
fig

# %% [markdown] slideshow={"slide_type": "subslide"}
# **Exercise 3. λ sweep.** Re-run the fine-tuning with λ ∈ {0, 0.5, 1, 4}. Where does the adversarial term
# start to hurt accuracy?
