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
# # Lesson 3 — The Enhanced Mask Decoder
#
# *DeBERTa* (He et al., 2020, [arXiv 2006.03654](https://arxiv.org/abs/2006.03654)), section 3.2 and appendix A.8.
#
# Lessons 1 and 2 built attention that only knows **how far apart** two tokens are. The paper's example shows
# what that misses:
#
# > "a new **store** opened beside the new **mall**"
#
# Mask "store" and "mall". Both follow "new", so their local relative context is alike, yet one is the
# subject and the other the object, and that depends on **where** they are in the sentence. DeBERTa therefore
# adds absolute positions, but late: in the *Enhanced Mask Decoder* (EMD), right before the softmax layer that
# predicts the masked words.
#
# We measure three things: relative attention alone cannot see where a sentence sits; a probe whose label
# depends on absolute position stays at chance without absolute positions; and the EMD, which adds them only at
# the end, solves it like BERT's input positions do, while every encoder layer stays relative.

# %%
import inspect

import torch

from deberta_edu import (
    DebertaForMaskedLM,
    DebertaModel,
    EnhancedMaskDecoder,
    exercises,
    make_config,
    viz,
    widgets,
)
from deberta_edu.facts import smoke
from deberta_edu.training.probe import (
    PositionProbe,
    ProbeTask,
    held_out,
    majority_rate,
    probe_batch,
    train_probe,
)

SMOKE = smoke()  # CI runs a smaller probe
torch.manual_seed(0)
torch.set_num_threads(1)  # tiny models: one thread avoids the cost of coordinating threads

# %% [markdown] slideshow={"slide_type": "slide"}
# ## (a) Relative attention does not see where a sentence sits
#
# Take the sentence, then the same sentence moved five places to the right behind five padding tokens that the
# attention mask hides. Every distance between two real tokens is unchanged, so a model with relative
# positions only (DeBERTa without EMD, `variant="no_emd"`) must produce exactly the same outputs. A BERT-style
# model (`variant="bert"`: absolute position embeddings added at the input) sees every word at a new position.

# %%
words = "a new store opened beside the new mall".split()
vocab = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]", *sorted(set(words))]
ids = torch.tensor([[vocab.index(w) for w in words]])  # (1, 8)
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
viz.plot_shift_difference(diffs, words, shift)

# %% [markdown] slideshow={"slide_type": "subslide"}
# Both models are untrained: this is a property of the architecture, not of what was learned. No amount of
# training lets the relative-only model tell the two placements apart.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## The Enhanced Mask Decoder
#
# The EMD lets the encoder stay relative and adds absolute positions $P$ only where the masked words are
# decoded. With $H$ the output of encoder layer L − 1 and the last layer applied with *queries* from elsewhere:
#
# $$
# \begin{aligned}
# Q_0 &= H + P && \text{(absolute positions enter here, and only here)}\\
# Q_1 &= \mathrm{Layer}_L(\text{keys, values} = H,\ \text{queries} = Q_0)\\
# Q_2 &= \mathrm{Layer}_L(\text{keys, values} = H,\ \text{queries} = Q_1)\\
# \text{logits} &= \mathrm{MLMHead}(Q_2)
# \end{aligned}
# $$
#
# "Layer$_L$" is the encoder's own last layer, used twice with the same weights: the EMD has no weights of its
# own. The library's code is short enough to read here:

# %%
print(inspect.getsource(EnhancedMaskDecoder))

# %% [markdown] slideshow={"slide_type": "subslide"}
# Three claims, three asserts: the EMD owns no parameters; a DeBERTa with EMD has exactly one table more than
# one without (the absolute positions, max_position_embeddings × hidden_size); and the last layer runs three times
# per forward pass (once in the encoder, twice in the EMD).

# %%
torch.manual_seed(0)
config = make_config("tiny", "deberta", **kw)
mlm = DebertaForMaskedLM(config).eval()
mlm_no_emd = DebertaForMaskedLM(make_config("tiny", "no_emd", **kw)).eval()


def n_params(model):
    return sum(p.numel() for p in model.parameters())


assert n_params(EnhancedMaskDecoder()) == 0
assert n_params(mlm) - n_params(mlm_no_emd) == config.max_position_embeddings * config.hidden_size

calls = []
hook = mlm.deberta.encoder.layers[-1].register_forward_hook(lambda module, args, output: calls.append(1))
with torch.no_grad():
    result = mlm(ids)
hook.remove()
assert len(calls) == 3
print(f"EMD parameters: 0; extra parameters with EMD: {n_params(mlm) - n_params(mlm_no_emd):,} (the table P)")

# %% [markdown] slideshow={"slide_type": "subslide"}
# The same computation by hand, from the encoder's hidden states, matches `decoder_hidden_state`, the states the
# MLM head reads:

# %%
with torch.no_grad():
    out = mlm.deberta(ids, output_hidden_states=True)
    H = out.hidden_states[-2]  # (1, L, D) output of layer L − 1: keys and values
    state = out.encoder_state  # what the encoder built once: positions, keep mask, relative table
    query = H + state.positions  # Q_0 = H + P
    last_layer = mlm.deberta.encoder.layers[-1]
    for _ in range(2):  # Q_1, Q_2
        query = last_layer(H, state.keep, state.rel, query_states=query)
assert torch.allclose(query, result.decoder_hidden_state, atol=1e-6)

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Where absolute positions enter, measured
#
# Move the sentence again. In DeBERTa with EMD the **encoder** output (`last_hidden_state`, what fine-tuning
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
# **Try it**: move the sentence with the slider. Bars below the dotted line are float rounding (about 10⁻⁷).

# %%
shift_panel = widgets.shift_widget(runs, ids, words, shift=shift)
shift_panel

# %% [markdown] slideshow={"slide_type": "slide"}
# ## (b) A probe: subject slot or object slot?
#
# A toy version of "store" vs "mall". In a window of 16 positions, the phrase "the new ⟨noun⟩" appears once.
# In our toy language the subject sits in the first half of the window and the object in the second half; the
# rest of the window is padding that attention masks out. The label of the noun, subject or object, depends
# on its **absolute position** only: the words and their relative context are the same in both slots.
#
# We train each model with a linear classifier on the noun's final state, for a few hundred small steps:
#
# - **relative only** (`no_emd`): the classifier reads `last_hidden_state`;
# - **BERT-style** (`bert`): the same, with absolute positions added at the input;
# - **DeBERTa with EMD**: the classifier reads the EMD output (positions added before the last layer's two passes).

# %% [markdown]
# The toy language and the probe live in the library (`deberta_edu.training.probe`, where the ablation of
# lesson 6 can reuse the probe as a metric). They are short enough to read here:

# %%
WINDOW = 16
task = ProbeTask(
    the=vocab.index("the"),
    new=vocab.index("new"),
    nouns=tuple(vocab.index(w) for w in ("store", "mall", "opened", "beside", "a")),  # any word will do
    window=WINDOW,
)
print(inspect.getsource(probe_batch))
print(inspect.getsource(PositionProbe))

# %% [markdown] slideshow={"slide_type": "subslide"}
# Train each variant with the same seed, data and steps, then measure accuracy on 2,000 held-out examples:

# %%
steps = 120 if SMOKE else 400
test = held_out(task, 2000, seed=1234)
chance = majority_rate(test.label)
accuracy = {}
for name, variant in {"relative only": "no_emd", "BERT-style": "bert", "DeBERTa + EMD": "deberta"}.items():
    probe = train_probe(variant, task, vocab_size=len(vocab), steps=steps, test=test)  # seed 0, AdamW 3e-3
    accuracy[name] = probe.accuracy
    print(f"{name:14s} accuracy {accuracy[name]:.1%}  (final training loss {probe.final_loss:.3f})")

assert abs(accuracy["relative only"] - chance) < 0.06  # blind to absolute position: chance
assert accuracy["BERT-style"] > 0.9 and accuracy["DeBERTa + EMD"] > 0.9  # both see it

# %%
viz.plot_accuracies(accuracy, chance, f"subject or object slot? ({steps} training steps)")

# %% [markdown] slideshow={"slide_type": "slide"}
# ## Two ways to add absolute positions
#
# Both BERT-style input positions and the EMD solve the probe. They differ in *where* the positions live:
#
# - **BERT** adds them to every token at the input, so every layer mixes "which word" with "which place";
#   the attention between "deep" and "learning" differs at every place the pair can stand (part (a): every
#   output moved).
# - **DeBERTa** keeps all encoder layers relative (the encoder output did not move at all) and lets absolute
#   positions only *complement* the relative information when the masked words are decoded. The paper
#   argues that this ordering (relative first, absolute last) is why EMD works better than adding absolute
#   positions at the input, and its ablation (Table 4) shows the EMD's gain on downstream tasks (Table 10: EMD vs absolute input).
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
# **Exercise 2.** Predict before you measure: which of these outputs stay *exactly* the same when a sentence is
# moved right behind masked padding? Put `True` (unchanged) or `False` (changes) for each; the checker measures
# all four on fresh random models and tells you where you were wrong.

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
# **Exercise 3 (open).** Write your own `make_batch(task, n, generator)` (start from `probe_batch` above) so
# that the label depends on *relative* position only, e.g. "is the noun directly after 'new', or two words
# after it?" (insert another word). Which of the three models can solve it now? Predict, then re-run the probe
# with `train_probe(variant, task, vocab_size=len(vocab), steps=steps, make_batch=make_batch)`.

# %% [markdown] slideshow={"slide_type": "slide"}
# ## What we built
#
# - Relative attention is exactly blind to where a sentence sits: outputs are identical under a shift.
# - So a label that depends on absolute position (subject or object slot) stays at chance without absolute
#   positions, and is learned when they are present, at the input (BERT) or in the EMD.
# - The EMD adds absolute positions just before the MLM head, by running the last layer twice with queries
#   H + P; it has no weights of its own, and every encoder layer stays relative.
