"""Lesson 3: the Enhanced Mask Decoder and shift invariance."""

from __future__ import annotations

import torch

from deberta_edu.model.config import make_config
from deberta_edu.model.emd import DebertaForMaskedLM, EnhancedMaskDecoder
from deberta_edu.model.encoder import DebertaModel

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
        torch.manual_seed(seed)
        config = make_config(
            "tiny",
            vocab_size=30,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=layers,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            max_position_embeddings=32,
            position_buckets=-1,
            max_relative_positions=8,
        )
        model = DebertaModel(config).eval()
        ids = torch.randint(5, 30, (2, 9))
        mask = torch.ones_like(ids)
        mask[1, 9 - pad :] = 0
        with torch.no_grad():
            out = model(ids, mask, output_hidden_states=True)
            expected = EnhancedMaskDecoder()(model.encoder.layers[-1], out.encoder_state)
            got = _as_array(_call(fn, model, out))
            what = f"{layers} layers, batch of 2 with {pad} padded tokens"
            if got is None or got.shape != tuple(expected.shape):
                failures.append(
                    f"{what}: expected shape {tuple(expected.shape)}, got "
                    f"{None if got is None else got.shape}"
                )
                continue
            got_t = torch.as_tensor(got)
            if torch.allclose(got_t, expected, atol=1e-5):
                continue
            failures.append(f"{what}: max |difference| {float((got_t - expected).abs().max()):.3g}")
            for mistake, (kw, _) in EMD_MISTAKES.items():
                if torch.allclose(got_t, _emd_variant(model, out, **kw), atol=1e-5):
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
