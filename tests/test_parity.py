"""Numerical parity with Hugging Face transformers' DeBERTa v1 and v2 on the same weights."""

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import (  # noqa: E402
    DebertaConfig,
    DebertaForMaskedLM,
    DebertaModel,
    DebertaV2Config,
    DebertaV2ForMaskedLM,
    DebertaV2Model,
)

import deberta_edu as de  # noqa: E402
from deberta_edu.model.checkpoint import load_pretrained, save_pretrained  # noqa: E402

SMALL = dict(vocab_size=500, hidden_size=64, num_hidden_layers=3, num_attention_heads=4, intermediate_size=128,
             layer_norm_eps=1e-7, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
V2 = dict(SMALL, relative_attention=True, pos_att_type=["p2c", "c2p"], position_biased_input=False,
          max_relative_positions=-1, max_position_embeddings=512)
CASES = {
    "v1": (DebertaConfig, dict(SMALL, relative_attention=True, pos_att_type="c2p|p2c", max_relative_positions=48,
                               position_biased_input=False), 100),
    "v1-abs-input": (DebertaConfig, dict(SMALL, relative_attention=True, pos_att_type="c2p|p2c",
                                         position_biased_input=True, type_vocab_size=2), 60),
    "v2-buckets256": (DebertaV2Config, dict(V2, position_buckets=256, share_att_key=True, norm_rel_ebd="layer_norm",
                                            conv_kernel_size=3), 300),
    "v2-no-share": (DebertaV2Config, dict(V2, position_buckets=256, share_att_key=False, norm_rel_ebd="layer_norm"),
                    300),
    "v2-no-buckets": (DebertaV2Config, dict(V2, position_buckets=-1, max_relative_positions=64, share_att_key=False),
                      150),
    "v2-c2p-only": (DebertaV2Config, dict(V2, pos_att_type=["c2p"], position_buckets=64, share_att_key=True), 90),
}


def _batch(vocab, length, batch=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (batch, length), generator=g)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[1, length // 2:] = 0  # padding
    mask[2, 7:] = 0
    ids[mask == 0] = 0
    return ids, mask


def _randomise(model, seed=0):
    """Every weight drawn afresh, large enough that attention and the position terms move the output.

    transformers' own init (std 0.02, zero biases, unit LayerNorms) leaves attention nearly uniform: the
    whole of it moves the output by about 1e-3, so a wrong position term would pass a 1e-5 bar.
    ``test_the_parity_bar_would_catch_a_wrong_position_term`` checks that these weights do not.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            elif "embeddings" in name:  # word, absolute and relative tables
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))


def _pair(case, mlm=False):
    """transformers' model for ``case`` with randomised weights, and ours converted from it (both in eval)."""
    hf_config_cls, kwargs, _ = CASES[case]
    torch.manual_seed(0)
    hf_config = hf_config_cls(**kwargs, legacy=not mlm or case.startswith("v1"))
    is_v1 = hf_config_cls is DebertaConfig
    cls = {(True, False): DebertaModel, (True, True): DebertaForMaskedLM,
           (False, False): DebertaV2Model, (False, True): DebertaV2ForMaskedLM}[(is_v1, mlm)]
    hf = cls(hf_config)
    _randomise(hf)
    hf.eval()
    return hf, de.from_hf(hf).eval()


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("mlm", [False, True], ids=["encoder", "mlm"])
def test_same_outputs_as_transformers(case, mlm):
    hf, ours = _pair(case, mlm)
    hf_config, length = hf.config, CASES[case][2]
    assert isinstance(ours, de.DebertaForMaskedLM if mlm else de.DebertaModel)
    ids, mask = _batch(hf_config.vocab_size, length)
    tt = torch.randint(0, 2, ids.shape) if hf_config.type_vocab_size else None
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=mask, token_type_ids=tt)
        mine = ours(ids, mask, token_type_ids=tt)
        their_hidden = hf.deberta(input_ids=ids, attention_mask=mask, token_type_ids=tt).last_hidden_state \
            if mlm else theirs.last_hidden_state
    keep = mask.bool()
    diff = (their_hidden - mine.last_hidden_state)[keep].abs().max().item()
    msg = f"{case} {'mlm' if mlm else 'encoder'}: max |Δ last_hidden_state| = {diff:.2e}"
    if mlm:
        scale = theirs.logits[keep].abs().max().item()  # logits here reach tens: float32 rounds them to ~1e-6
        ldiff = (theirs.logits - mine.logits)[keep].abs().max().item() / scale
        msg += f", max |Δ logits| / max |logits| = {ldiff:.2e} (max |logits| = {scale:.1f})"
        assert ldiff <= 2e-6, msg
    print(msg)
    assert diff <= 1e-5, msg

    back = de.to_hf(ours)
    a, b = hf.state_dict(), back.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("case", list(CASES))
def test_the_parity_bar_would_catch_a_wrong_position_term(case):
    """The weights above make the parity test able to fail: reading the relative table backwards (as a
    p2c with delta(j, i), or a flipped table, would) moves our output by far more than its 1e-5 bar, and so does
    leaving the position terms out."""
    hf, ours = _pair(case)
    ids, mask = _batch(hf.config.vocab_size, CASES[case][2])
    keep = mask.bool()
    with torch.no_grad():
        right = ours(ids, mask).last_hidden_state[keep]
        table = ours.encoder.rel_embeddings.weight
        table.copy_(table.flip(0))
        flipped = ours(ids, mask).last_hidden_state[keep]
        table.zero_()
        no_table = ours(ids, mask).last_hidden_state[keep]
    for wrong in (flipped, no_table):
        assert (wrong - right).abs().max().item() > 100 * 1e-5, case


def test_from_directory_with_official_head_turns_emd_on(tmp_path):
    """A released-style checkpoint: absolute table kept for the EMD and lm_predictions.lm_head.* head."""
    config = DebertaV2Config(**V2, position_buckets=64, share_att_key=True, norm_rel_ebd="layer_norm",
                             legacy=False)
    hf = DebertaV2ForMaskedLM(config).eval()
    hf.save_pretrained(tmp_path)
    # transformers drops the absolute table; released checkpoints carry it. Add one like they do.
    from safetensors.torch import load_file, save_file
    weights = load_file(tmp_path / "model.safetensors")
    weights["deberta.embeddings.position_embeddings.weight"] = torch.randn(512, 64) * 0.02
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})

    ours = de.from_hf(tmp_path).eval()
    assert ours.config.emd and ours.emd is not None
    assert torch.equal(ours.deberta.embeddings.position_embeddings.weight,
                       weights["deberta.embeddings.position_embeddings.weight"])
    assert torch.equal(ours.head.dense.weight, weights["lm_predictions.lm_head.dense.weight"])
    no_emd = de.from_hf(tmp_path, emd=False).eval()
    ids, mask = _batch(500, 40)
    with torch.no_grad():
        torch.testing.assert_close(no_emd(ids, mask).logits[mask.bool()],
                                   hf(input_ids=ids, attention_mask=mask).logits[mask.bool()], atol=1e-5, rtol=0)
        assert not torch.allclose(ours(ids, mask).logits, no_emd(ids, mask).logits)
    # and it survives our own safetensors format
    save_pretrained(ours, tmp_path / "ours")
    again = load_pretrained(tmp_path / "ours")
    with torch.no_grad():
        assert torch.equal(again(ids, mask).logits, ours(ids, mask).logits)


def test_from_directory_with_absolute_positions_at_the_input_keeps_emd_off(tmp_path):
    """An official head and an absolute table, but the table feeds the input (position_biased_input): no EMD,
    and the same logits as transformers."""
    config = DebertaV2Config(**{**V2, "position_biased_input": True}, position_buckets=64, share_att_key=True,
                             norm_rel_ebd="layer_norm", legacy=False)
    torch.manual_seed(0)
    hf = DebertaV2ForMaskedLM(config)
    _randomise(hf)
    hf.eval().save_pretrained(tmp_path)
    ours = de.from_hf(tmp_path).eval()
    assert ours.config.position_biased_input and not ours.config.emd and ours.emd is None
    ids, mask = _batch(500, 40)
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=mask).logits[mask.bool()]
        torch.testing.assert_close(ours(ids, mask).logits[mask.bool()], theirs,
                                   atol=2e-6 * theirs.abs().max().item(), rtol=0)  # as in the test above


def test_from_hf_of_another_head_gives_the_encoder_and_says_so():
    hf = transformers.DebertaV2ForSequenceClassification(DebertaV2Config(**V2))
    with pytest.warns(UserWarning, match="DebertaV2ForSequenceClassification has no MLM head: loaded its encoder"):
        ours = de.from_hf(hf)
    assert type(ours) is de.DebertaModel
    with pytest.raises(ValueError, match="not a DeBERTa"):
        de.from_hf(transformers.BertModel(transformers.BertConfig(num_hidden_layers=1, hidden_size=32,
                                                                  num_attention_heads=2, intermediate_size=64)))


def test_from_hf_rejects_missing_directory(tmp_path):
    with pytest.raises(ValueError, match="config.json"):
        de.from_hf(tmp_path)
