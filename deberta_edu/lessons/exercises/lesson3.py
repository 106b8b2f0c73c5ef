"""Lesson 3: the Enhanced Mask Decoder, shift invariance, and an anchor that beats the clamp."""

from __future__ import annotations

import torch

from deberta_edu.facts import CLS_ID, PAD_ID
from deberta_edu.model.config import make_config
from deberta_edu.model.emd import DebertaForMaskedLM, EnhancedMaskDecoder
from deberta_edu.model.encoder import DebertaModel
from deberta_edu.training.probe import (
    K,
    ProbeBatch,
    ProbeTask,
    anchor_tasks,
    probe_config,
    relative_views,
    train_probe,
)

from ._common import CheckResult, _answers_pending, _as_array, _call, _checker, _finish


def _emd_variant(
    model,
    out,
    *,
    keys_from=-2,
    query_from=-2,
    steps=2,
    positions=True,
    positions_in_keys=False,
) -> torch.Tensor:
    """The EMD with one thing changed: the mistakes the checker recognises."""
    state = out.encoder_state
    hidden = out.hidden_states[keys_from]
    query = out.hidden_states[query_from] + (state.positions if positions else 0)
    keys = hidden + state.positions if positions_in_keys else hidden
    for _ in range(steps):
        query = model.encoder.layers[-1](keys, state.keep, state.rel, query_states=query)
    return query


EMD_MISTAKES = {
    "keys from the last layer": (
        {"keys_from": -1, "query_from": -1},
        "keys and values come from layer L − 1 (out.hidden_states[-2]); the last layer "
        "is what the EMD re-applies, so its output is not the input.",
    ),
    "query from the last layer": (
        {"query_from": -1},
        "the first query is H + P with H = out.hidden_states[-2], the same states as the keys.",
    ),
    "applied once": (
        {"steps": 1},
        "the last layer is applied twice (n = 2 in the paper), with the same weights.",
    ),
    "applied three times": ({"steps": 3}, "the last layer is applied twice, not three times."),
    "no positions": (
        {"positions": False},
        "the absolute positions (out.encoder_state.positions) must be added to "
        "the query: they are the whole point of the EMD.",
    ),
    "positions in keys": (
        {"positions_in_keys": True},
        "add the absolute positions to the query only; keys and values stay H.",
    ),
}


def _emd_case(layers: int, seed: int, pad: int):
    """A small DebertaModel with absolute positions, and a batch of 2 rows of 9 ids, the second ending in ``pad``
    padded tokens."""
    torch.manual_seed(seed)
    config = make_config("tiny", vocab_size=30, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                         hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, max_position_embeddings=32,
                         position_buckets=-1, max_relative_positions=8)
    model = DebertaModel(config).eval()
    ids = torch.randint(5, 30, (2, 9))
    mask = torch.ones_like(ids)
    mask[1, 9 - pad :] = 0
    return model, ids, mask


@_checker
def check_emd(fn) -> CheckResult:
    """``fn(model, out)`` must return what ``EnhancedMaskDecoder`` returns: (B, L, D).

    ``model`` is a DebertaModel with absolute positions, ``out = model(ids, attention_mask,
    output_hidden_states=True)`` (use ``out.hidden_states``, ``model.encoder.layers[-1]`` and what the
    encoder built once, ``out.encoder_state``: ``.positions``, ``.keep`` and ``.rel``).
    """
    name = "check_emd"
    failures, found, cases = [], [], 0
    for layers, seed, pad in ((2, 0, 0), (3, 1, 2), (2, 2, 3)):
        cases += 1
        model, ids, mask = _emd_case(layers, seed, pad)
        with torch.no_grad():
            out = model(ids, mask, output_hidden_states=True)
            expected = EnhancedMaskDecoder()(model.encoder.layers[-1], out.encoder_state)
            variants = {m: _emd_variant(model, out, **kw) for m, (kw, _) in EMD_MISTAKES.items()}  # before fn
            seen = [h.clone() for h in out.hidden_states] + [out.encoder_state.positions.clone()]
            got = _as_array(_call(fn, model, out))
            if any(not torch.equal(a, b) for a, b in
                   zip(seen, [*out.hidden_states, out.encoder_state.positions], strict=True)):
                failures.append(f"{layers} layers: your function changed out.hidden_states or the positions in "
                                "place (e.g. H += ...); write H = H + ... so the encoder's outputs stay as they were")
                continue
            keep = mask.bool()  # padded positions are nobody's answer: compare the real tokens
            what = f"{layers} layers, batch of 2 with {pad} padded tokens"
            if got is None or got.shape != tuple(expected.shape):
                failures.append(
                    f"{what}: expected shape {tuple(expected.shape)}, got "
                    f"{None if got is None else got.shape}"
                )
                continue
            got_t = torch.as_tensor(got, dtype=expected.dtype)  # float64 answers compare as well
            if torch.allclose(got_t[keep], expected[keep], atol=1e-5):
                continue
            failures.append(f"{what}: max |difference| {float((got_t - expected)[keep].abs().max()):.3g} "
                            "(over the real tokens)")
            for mistake, variant in variants.items():
                if torch.allclose(got_t[keep], variant[keep], atol=1e-5):
                    found.append(mistake)
                    break
    hint = ""
    if found:
        hint = f"this looks like '{found[0]}': {EMD_MISTAKES[found[0]][1]}"
    elif failures:
        hint = (
            "H = out.hidden_states[-2]; state = out.encoder_state; query = state.positions + H; twice: "
            "query = model.encoder.layers[-1](H, state.keep, state.rel, query_states=query)."
        )
    return _finish(name, cases, failures, hint)


SHIFT_QUESTIONS = {
    "no_emd": "relative-only DeBERTa (−EMD): encoder output",
    "bert": "BERT-style model (absolute positions at the input): encoder output",
    "deberta_encoder": "DeBERTa with EMD: encoder output (last_hidden_state)",
    "deberta_decoder": "DeBERTa with EMD: EMD output (decoder_hidden_state)",
}


def shift_invariance(seed: int = 0, shift: int = 3) -> dict[str, float]:
    """Measured max |change| of each output in SHIFT_QUESTIONS when a sentence moves ``shift`` places right."""
    torch.manual_seed(seed)
    kw = {"vocab_size": 30, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    no_emd = DebertaModel(make_config("tiny", "no_emd", **kw)).eval()
    bert = DebertaModel(make_config("tiny", "bert", **kw)).eval()
    mlm = DebertaForMaskedLM(make_config("tiny", "deberta", **kw)).eval()
    ids = torch.randint(5, 30, (1, 8))
    shifted = torch.cat([torch.zeros(1, shift, dtype=torch.long), ids], 1)
    mask = (shifted != 0).long()
    outputs = {
        "no_emd": lambda x, m: no_emd(x, m).last_hidden_state,
        "bert": lambda x, m: bert(x, m).last_hidden_state,
        "deberta_encoder": lambda x, m: mlm(x, m).last_hidden_state,
        "deberta_decoder": lambda x, m: mlm(x, m).decoder_hidden_state,
    }
    with torch.no_grad():
        return {
            name: float((run(ids, torch.ones_like(ids)) - run(shifted, mask)[:, shift:]).abs().max())
            for name, run in outputs.items()
        }


def check_shift_answers(answers: dict[str, bool]) -> CheckResult:
    """``answers[name]`` is True where you expect the output NOT to change when the sentence moves right."""
    name = "check_shift_answers"
    pending = _answers_pending(name, answers, SHIFT_QUESTIONS, "True (unchanged) or False (changes)")
    if pending is not None:
        return pending
    measured = shift_invariance()
    failures = []
    for key, question in SHIFT_QUESTIONS.items():
        unchanged = measured[key] < 1e-4
        if bool(answers[key]) != unchanged:
            failures.append(
                f"{question}: you said {'unchanged' if answers[key] else 'changes'}, measured max "
                f"|change| = {measured[key]:.2g} ({'unchanged' if unchanged else 'changes'})"
            )
    return _finish(
        name,
        len(SHIFT_QUESTIONS),
        failures,
        "an output changes exactly when absolute positions have entered the computation before it.",
    )


# --- exercise 3: beat the clamp ------------------------------------------------------------------------
ANCHOR_VOCAB = 12  # ids 0 … 11: the special tokens 0 … 4, "the" = 5, "new" = 6, nouns 7 … 9, two spare
ANCHOR_STEPS = 80  # relative-only probe steps on the learner's windows (it needs about 20 with an anchor)
ANCHOR_HINT = (
    "[CLS] is beyond the clamp from every noun (its rows are 0 and 2k − 1 for both slots). Put one more "
    "token, the same one at the same place in every window, where every noun position sees it at a distance "
    "of its own (which positions does the phrase never use?), rebuild the mask, and keep the phrase, its "
    "position and its label as probe_batch made them."
)


def anchor_task() -> ProbeTask:
    """The checker's windows: the 'anchor beyond the window' setting, with "the" = 5, "new" = 6, nouns 7, 8, 9."""
    return anchor_tasks(the=5, new=6, nouns=(7, 8, 9), anchor=CLS_ID)["anchor beyond the window"]


def _batch_problem(batch, task: ProbeTask, n: int) -> str | None:
    """What is wrong with the learner's windows, in words (None: the form, phrase and labels are right)."""
    if not (isinstance(batch, tuple) and len(batch) == 4 and all(isinstance(t, torch.Tensor) for t in batch)):
        return f"make_batch must return ProbeBatch(ids, mask, pos, label) (4 tensors); got {type(batch).__name__}"
    ids, mask, pos, label = batch
    if ids.shape != (n, task.window) or mask.shape != ids.shape or pos.shape != (n,) or label.shape != (n,):
        return (
            f"shapes: ids {tuple(ids.shape)}, mask {tuple(mask.shape)}, pos {tuple(pos.shape)}, label "
            f"{tuple(label.shape)}; expected ({n}, {task.window}) twice, then ({n},) twice (keep the window)"
        )
    floats = {what: t.dtype for what, t in (("mask", mask), ("pos", pos), ("label", label)) if t.dtype.is_floating_point}
    if floats:  # a float label reached cross_entropy and failed there with a raw traceback
        return (f"{' and '.join(floats)} must be {'an integer tensor' if len(floats) == 1 else 'integer tensors'} as "
                "probe_batch makes them (torch.long), got " + ", ".join(f"{what} {dtype}" for what, dtype in floats.items()))
    if ids.dtype.is_floating_point or int(ids.min()) < 0 or int(ids.max()) >= ANCHOR_VOCAB:
        seen = f"{int(ids.min())} … {int(ids.max())}" if ids.numel() else "none"
        return f"ids must be integers in [0, {ANCHOR_VOCAB - 1}] (the probe's vocabulary); seen {seen}"
    if not torch.equal(mask.long(), (ids != PAD_ID).long()):
        return "mask must be 1 exactly where ids is not [PAD] (rebuild it after adding tokens: ids != PAD_ID)"
    rows = torch.arange(n)
    phrase = (ids[rows, pos - 2] == task.the) & (ids[rows, pos - 1] == task.new)
    phrase &= torch.isin(ids[rows, pos], torch.tensor(task.nouns))
    if not phrase.all() or not ((pos >= task.first) & (pos < task.stop)).all():
        r = int((~phrase).nonzero()[0]) if not phrase.all() else 0
        return (
            f'window {r}: the phrase "the new ⟨noun⟩" must stay where probe_batch put it (noun at '
            f"{task.first} … {task.stop - 1}); seen ids {ids[r].tolist()} with pos {int(pos[r])}"
        )
    if not torch.equal(label.long(), (pos >= task.middle).long()):
        return (
            f"the labels must stay the slots: label = 1 exactly when pos >= {task.middle} (the object slot)"
        )
    share = label.float().mean().item()
    if not 0.25 <= share <= 0.75:
        return (f"{share:.0%} of the windows are in the object slot: keep probe_batch's positions and labels (about "
                "half in each slot), or a probe that always answers one slot scores as well as one that reads "
                "positions")
    noun = ids[rows, pos]
    for n_id in noun.unique().tolist():
        slots = set(label[noun == n_id].tolist())
        if len(slots) == 1:
            return (f"noun {n_id} is only ever in the {('subject', 'object')[slots.pop()]} slot: the noun then says "
                    "the slot, and a probe would read the word, not its position. Keep probe_batch's nouns "
                    "(each one in both slots)")
    blank = ids.clone()
    for offset in (0, 1, 2):
        blank[rows, pos - offset] = PAD_ID
    if not (blank == blank[0]).all():
        r = int((blank != blank[0]).any(-1).nonzero()[0])
        return (
            f"outside the phrase, window {r} differs from window 0 ({blank[r].tolist()} vs {blank[0].tolist()}): "
            "a token that moves with the label puts the answer in the words; every window must have "
            "the same tokens at the same places outside the phrase"
        )
    return None


def _look_alike(batch, task: ProbeTask) -> str | None:
    """A subject and an object window that relative-only attention cannot tell apart (None: there is none)."""
    ids, mask, pos, label = batch
    layers = probe_config("no_emd", ANCHOR_VOCAB, task.window).num_hidden_layers
    views = relative_views(ids, mask, k=K, layers=layers)
    seen: dict[int, tuple[int, int]] = {}  # the noun's view -> (label, row) of the first window with it
    for r, (p, y) in enumerate(zip(pos.tolist(), label.tolist(), strict=True)):
        first = seen.setdefault(views[r][p], (y, r))
        if first[0] != y:
            other = first[1]
            slot = ("subject", "object")
            return (
                f"window {other} (noun at {int(pos[other])}, {slot[first[0]]} slot) and window {r} (noun at "
                f"{p}, {slot[y]} slot) look the same to {layers} layers of relative attention: every "
                f"distance that differs is clamped (k = {K}), so the noun gets the same state whatever the "
                "weights, and no training can tell the slots apart"
            )
    return None


def _nouns_redrawn(make_batch):
    """``make_batch`` with each window's noun drawn afresh from ``task.nouns``: which noun a window holds can then
    say nothing of its slot (a batch that put the label in the noun would teach the probe nothing of positions)."""

    def redrawn(task: ProbeTask, n: int, generator: torch.Generator) -> ProbeBatch:
        ids, mask, pos, label = make_batch(task, n, generator)
        ids, nouns = ids.clone(), torch.tensor(task.nouns)
        ids[torch.arange(n), pos] = nouns[torch.randint(len(nouns), (n,), generator=generator)]
        return ProbeBatch(ids, mask, pos, label)

    return redrawn


@_checker
def check_anchor_batch(make_batch) -> CheckResult:
    """``make_batch(task, n, generator)`` returns ProbeBatch windows whose slots relative attention can tell apart.

    ``task`` is the 'anchor beyond the window' setting (``anchor_task()``): the phrase, its position and its
    label must stay as ``probe_batch`` makes them, and outside the phrase every window must hold the same
    tokens. The checker then shows that a relative-only model sees the two slots differently, and trains one.
    """
    name = "check_anchor_batch"
    task = anchor_task()
    batch = _call(make_batch, task, 256, torch.Generator().manual_seed(0))
    problem = _batch_problem(batch, task, 256)
    make_batch = _nouns_redrawn(make_batch)  # from here on the noun carries no label
    problem = problem or _look_alike(make_batch(task, 256, torch.Generator().manual_seed(0)), task)
    if problem is not None:
        return _finish(name, 3, [problem], ANCHOR_HINT)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is fastest
    try:  # up to 3 seeds: an anchor the phrase relays (two layers) is learned by some seeds in 80 steps, not all
        for seed in range(3):
            result = train_probe(
                "no_emd", task, vocab_size=ANCHOR_VOCAB, steps=ANCHOR_STEPS, make_batch=make_batch, seed=seed
            )
            if result.accuracy >= 0.9:
                break
    finally:
        torch.set_num_threads(threads)
    failures = []
    if result.accuracy < 0.9:
        failures.append(
            f"relative-only probe after {ANCHOR_STEPS} steps (best of 3 seeds): held-out accuracy "
            f"{result.accuracy:.1%}, "
            "expected >= 90% (the slots differ, but not in a way it learned; a closer anchor helps)"
        )
    else:
        print(
            f"relative-only probe on your windows: held-out accuracy {result.accuracy:.1%} "
            f"(at chance without your anchor)"
        )
    return _finish(name, 3, failures, ANCHOR_HINT)
