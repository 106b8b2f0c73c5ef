"""Model behaviour: the EMD, the ablation variants, errors that speak, padding."""

import pytest
import torch
import torch.nn.functional as F

from deberta_edu import VARIANTS, DebertaForMaskedLM, DebertaModel, make_config
from deberta_edu.model import encoder as encoder_module
from deberta_edu.model.classify import DebertaForSequenceClassification

V = 300


def _mlm(**kw):
    torch.manual_seed(0)
    config = make_config("tiny", vocab_size=V, max_position_embeddings=64, hidden_dropout_prob=0.0,
                         max_relative_positions=128, position_buckets=32,
                         attention_probs_dropout_prob=0.0, **kw)
    return DebertaForMaskedLM(config).eval()


def _ids(batch=2, length=20, seed=0):
    return torch.randint(5, V, (batch, length), generator=torch.Generator().manual_seed(seed))


def test_the_absolute_table_reaches_only_the_emd():
    """Without the BERT-style input, the absolute positions enter the EMD alone: the encoder's output does not
    read the table at all, the logits do. Without the EMD (and that input) there is no table."""
    assert _mlm(emd=False, position_biased_input=False).deberta.embeddings.position_embeddings is None
    model = _mlm(emd=True, position_biased_input=False)
    ids = _ids()
    with torch.no_grad():
        before = model(ids, output_hidden_states=True)
        table = model.deberta.embeddings.position_embeddings.weight
        table.add_(torch.randn_like(table))
        after = model(ids, output_hidden_states=True)
    assert torch.equal(before.hidden_states[-1], after.hidden_states[-1])
    assert (before.logits - after.logits).abs().max() > 0.1


def test_emd_reuses_the_last_layer_and_has_no_weights():
    model = _mlm(emd=True)
    assert sum(p.numel() for p in model.emd.parameters()) == 0
    ids = _ids()
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
        H = out.hidden_states[-2]
        q = model.deberta.embeddings.position_embeddings.weight[:20] + H
        keep = torch.ones(2, 20, dtype=torch.bool)  # nothing padded
        rel = model.deberta.encoder.relative_table(20, "cpu")
        last = model.deberta.encoder.layers[-1]
        q = last(H, keep, rel, query_states=last(H, keep, rel, query_states=q))
    torch.testing.assert_close(out.decoder_hidden_state, q)


def test_emd_reads_what_the_encoder_built_once(monkeypatch):
    """One relative table and one mask per forward: the EMD's two passes get the encoder's own objects."""
    model = _mlm(emd=True)
    ids = _ids()
    mask = torch.ones_like(ids)
    mask[1, 15:] = 0
    built = []
    build = encoder_module.relative_rows_and_index
    monkeypatch.setattr(encoder_module, "relative_rows_and_index",
                        lambda *args, **kw: built.append(1) or build(*args, **kw))
    seen = []  # (hidden_states, keep, rel) of every call of the last layer
    hook = model.deberta.encoder.layers[-1].register_forward_pre_hook(lambda module, args: seen.append(args))
    with torch.no_grad():
        out = model(ids, mask)
    hook.remove()
    assert len(built) == 1, "the relative table is built once per forward, not again for the EMD"
    assert len(seen) == 3  # once in the encoder, twice in the EMD
    (H, keep, rel), *emd_calls = seen
    assert keep.dtype == torch.bool and torch.equal(keep, mask == 1)  # True at real tokens
    for H_emd, keep_emd, rel_emd in emd_calls:
        assert H_emd is H and keep_emd is keep and rel_emd is rel
    assert torch.isfinite(out.logits).all()


def test_boolean_and_integer_masks_agree():
    model = _mlm()
    ids = _ids()
    mask = torch.ones_like(ids)
    mask[0, 12:] = 0
    with torch.no_grad():
        assert torch.equal(model(ids, mask).logits, model(ids, mask.bool()).logits)


# each variant's attention terms, EMD and absolute input, written out (not read back from VARIANTS)
VARIANT_SHAPES = {"deberta": ({"c2c", "c2p", "p2c"}, True, False), "no_emd": ({"c2c", "c2p", "p2c"}, False, False),
                  "no_c2p": ({"c2c", "p2c"}, True, False), "no_p2c": ({"c2c", "c2p"}, True, False),
                  "bert": ({"c2c"}, False, True)}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_variant_runs_and_trains(variant):
    assert set(VARIANTS) == set(VARIANT_SHAPES)
    model = _mlm(variant=variant).train()
    c = model.config
    assert (set(c.terms), c.emd, c.position_biased_input) == VARIANT_SHAPES[variant]
    assert (model.emd is not None) == c.emd
    ids = _ids()
    labels = torch.full_like(ids, -100)
    labels[:, 3] = ids[:, 3]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    for _ in range(3):  # the same batch three times: every variant learns it
        out = model(ids, labels=labels)
        assert torch.isfinite(out.loss)
        losses.append(out.loss.item())
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    assert losses[-1] < losses[0] / 2, losses


def test_only_masked_logits_is_an_exact_shortcut():
    model = _mlm()
    ids = _ids()
    labels = torch.full_like(ids, -100)
    labels[0, 4], labels[1, 9] = 17, 23
    with torch.no_grad():
        full = model(ids, labels=labels)
        short = model(ids, labels=labels, only_masked_logits=True)
    torch.testing.assert_close(short.logits, full.logits[labels != -100])
    torch.testing.assert_close(short.loss, full.loss)


@pytest.mark.parametrize("layout", [{}, {"share_att_key": False}, {"conv_kernel_size": 3}])
def test_the_emd_decodes_only_the_masked_tokens_exactly(layout):
    """Appendix A.7: decoding only the masked positions gives their rows of the full EMD, and the same gradients."""
    torch.manual_seed(0)
    model = DebertaForMaskedLM(make_config("tiny", vocab_size=V, max_position_embeddings=64, position_buckets=8,
                                           hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **layout))
    assert model.emd is not None
    ids = _ids()
    mask = torch.ones_like(ids)
    mask[1, 15:] = 0  # padding in one row
    labels = torch.full_like(ids, -100)
    labels[0, [2, 4, 11]], labels[1, 9] = torch.tensor([5, 17, 8]), 23  # rows with different counts
    full = model(ids, mask, labels=labels)
    full.loss.backward()
    full_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    short = model(ids, mask, labels=labels, only_masked_logits=True)
    short.loss.backward()
    torch.testing.assert_close(short.decoder_hidden_state, full.decoder_hidden_state[labels != -100])
    torch.testing.assert_close(short.logits, full.logits[labels != -100])
    torch.testing.assert_close(short.loss, full.loss)
    for name, p in model.named_parameters():
        if name in full_grads:
            torch.testing.assert_close(p.grad, full_grads[name], atol=1e-6, rtol=1e-4, msg=name)


def test_no_labelled_token_gives_zero_loss():
    model = _mlm()
    out = model(_ids(), labels=torch.full((2, 20), -100))
    assert out.loss.item() == 0.0


@pytest.mark.parametrize("bad,match", [(V, f"contains {V}.*\\[0, {V - 1}\\]"), (-1, "contains -1")])
def test_out_of_vocabulary_ids(bad, match):
    ids = _ids()
    ids[1, 5] = bad
    with pytest.raises(ValueError, match=match):
        _mlm()(ids)


def test_mask_of_wrong_shape():
    with pytest.raises(ValueError, match=r"attention_mask has shape \(2, 19\).*\(2, 20\)"):
        _mlm()(_ids(), torch.ones(2, 19))


def test_one_dimensional_or_float_input():
    with pytest.raises(ValueError, match="unsqueeze"):
        _mlm()(torch.randint(5, V, (20,)))
    with pytest.raises(ValueError, match="integer"):
        _mlm()(torch.rand(2, 20))


@pytest.mark.parametrize("variant", ["deberta", "bert"])
def test_sequence_longer_than_absolute_table(variant):
    with pytest.raises(ValueError, match="sequence length 80 exceeds max_position_embeddings=64"):
        _mlm(variant=variant)(_ids(length=80))


def test_relative_only_model_has_no_length_limit():
    model = _mlm(variant="no_emd")
    with torch.no_grad():
        assert model(_ids(length=200)).logits.shape == (2, 200, V)


V1_LAYOUT = {"layout": "v1", "share_att_key": False, "norm_rel_ebd": False}  # position_buckets: _mlm sets it


@pytest.mark.parametrize("layout", [{}, V1_LAYOUT], ids=["v2", "v1"])
@pytest.mark.parametrize("autocast", [False, True], ids=["float32", "bf16-autocast"])
@pytest.mark.parametrize("variant", ["deberta", "bert"])
def test_fully_padded_row_is_finite(autocast, variant, layout):
    """Also in v1 (the GPU ablation's layout) under bf16 autocast, where a float32 q bias once made q float32: the
    mask's fill was then float32's minimum, which the bf16 position bias could not hold (a RuntimeError at the
    first step of every variant with a position term, on a GPU, where every batch takes the masked path)."""
    model = _mlm(variant=variant, conv_kernel_size=3, **layout)
    ids = _ids()
    mask = torch.ones_like(ids)
    mask[1] = 0  # a row of nothing but padding
    ids[1] = 0
    labels = torch.full_like(ids, -100)
    labels[0, :5] = ids[0, :5]
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = model(ids, mask, labels=labels)
    assert torch.isfinite(out.logits.float()).all()
    assert torch.isfinite(out.last_hidden_state.float()).all()
    assert torch.isfinite(out.loss)


def test_padding_does_not_change_real_tokens():
    model = _mlm(variant="no_emd")
    ids = _ids(1, 12)
    padded = torch.cat([ids, torch.zeros(1, 8, dtype=torch.long)], 1)
    mask = torch.cat([torch.ones(1, 12), torch.zeros(1, 8)], 1).long()
    with torch.no_grad():
        torch.testing.assert_close(model(padded, mask).logits[:, :12], model(ids).logits, atol=1e-5, rtol=1e-5)


def test_config_rejects_buckets_without_room():
    with pytest.raises(ValueError, match="max_relative_positions \\(here 64\\) must exceed 129"):
        make_config("tiny", max_position_embeddings=64)


def test_config_refuses_absolute_positions_twice():
    """The released code runs no EMD when positions are at the input; both on would add P twice."""
    with pytest.raises(ValueError, match="absolute positions twice"):
        make_config("tiny", position_biased_input=True)  # the EMD is on by default
    assert make_config("tiny", variant="bert").position_biased_input  # the baseline: positions at the input only


def test_encoder_details_are_the_equations():
    torch.manual_seed(0)
    model = DebertaModel(make_config("tiny", vocab_size=V, terms=("c2c", "c2p", "p2c", "p2p"))).eval()
    with torch.no_grad():
        out = model(_ids(), return_details=True)
    d = out.attentions[0]
    assert set(d.terms) == {"c2c", "c2p", "p2c", "p2p"}
    # the model's own details of layer 0, against the equations written out on the embeddings it produced
    from deberta_edu import naive_attention
    from deberta_edu.model.naive import naive_delta

    with torch.no_grad():
        ids = _ids()
        hidden, _ = model.embeddings(ids, torch.ones_like(ids, dtype=torch.bool))
        enc = model.encoder
        table = enc.rel_norm(enc.rel_embeddings.weight) if enc.rel_norm else enc.rel_embeddings.weight
        terms, probs, _ = naive_attention(enc.layers[0].attention, hidden[0], table, naive_delta(model.config))
    for name in d.terms:
        torch.testing.assert_close(d.terms[name][0], terms[name], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(d.probs[0], probs, atol=1e-5, rtol=1e-4)


def test_the_emd_decodes_sixteen_masked_tokens_of_a_short_row_exactly():
    """A short sequence has a shifted relative table (one row per distance); the chosen queries' rows are no
    shift, so 16 masked tokens in a row (a block size of the banded path) must still give the full EMD's rows."""
    model = _mlm()
    ids = _ids(length=32)
    assert model.deberta.encoder.relative_table(32, "cpu").shifted
    labels = torch.full_like(ids, -100)
    labels[0, ::2] = ids[0, ::2]  # 16 labelled tokens
    labels[1, 1:25:2] = ids[1, 1:25:2]  # 12
    with torch.no_grad():
        full = model(ids, labels=labels)
        short = model(ids, labels=labels, only_masked_logits=True)
    torch.testing.assert_close(short.logits, full.logits[labels != -100])
    torch.testing.assert_close(short.loss, full.loss)


def test_missing_token_types_are_type_zero():
    """As in transformers: token_type_ids=None adds the embedding of type 0, the same as passing zeros."""
    model = _mlm(type_vocab_size=2)
    ids = _ids()
    with torch.no_grad():
        model.deberta.embeddings.token_type_embeddings.weight.normal_()
        none = model(ids).logits
        zeros = model(ids, token_type_ids=torch.zeros_like(ids)).logits
        ones = model(ids, token_type_ids=torch.ones_like(ids)).logits
    torch.testing.assert_close(none, zeros)
    assert not torch.allclose(none, ones)


@pytest.mark.parametrize("variant", ["deberta", "bert"])
def test_a_sequence_as_long_as_the_absolute_table_is_accepted(variant):
    model = _mlm(variant=variant)  # max_position_embeddings=64: positions 0..63
    with torch.no_grad():
        logits = model(_ids(length=64)).logits
    assert logits.shape == (2, 64, V) and torch.isfinite(logits).all()


def test_the_classifier_reads_the_first_token():
    """pooled [CLS] -> dense -> activation -> (dropout) -> linear: the first position's state, nothing else."""
    torch.manual_seed(0)
    config = make_config("tiny", vocab_size=V, max_position_embeddings=64, max_relative_positions=128,
                         position_buckets=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = DebertaForSequenceClassification(config, num_labels=3).eval()
    with torch.no_grad():
        for linear in (model.pooler.dense, model.classifier):
            linear.weight.normal_(0, 1)
            linear.bias.normal_(0, 1)
        ids = _ids()
        logits = model(ids).logits
        first = model.deberta(ids).last_hidden_state[:, 0]  # (B, D)
        expected = model.classifier(F.gelu(model.pooler.dense(first)))
    assert logits.shape == (2, 3)
    torch.testing.assert_close(logits, expected)


def test_a_classifier_from_an_mlm_starts_from_its_encoder():
    mlm = _mlm()
    classifier = DebertaForSequenceClassification.from_mlm(mlm, num_labels=2).eval()
    ids = _ids()
    with torch.no_grad():
        torch.testing.assert_close(classifier.deberta(ids).last_hidden_state, mlm.deberta(ids).last_hidden_state,
                                   rtol=0, atol=0)


@pytest.mark.parametrize("emd", [True, False])
def test_a_batch_with_nothing_to_predict_gives_a_zero_loss_that_backpropagates(emd):
    """Short rows or small evaluation chunks can draw no masked token at all: the shortcut must not crash."""
    model = _mlm(emd=emd)
    ids = _ids(length=20)
    labels = torch.full_like(ids, -100)
    out = model(ids, labels=labels, only_masked_logits=True)
    assert out.logits.shape == (0, V) and out.loss.item() == 0.0
    out.loss.backward()  # a graph, so a training step on such a batch is a step of nothing, not an error
    assert model.head.bias.grad is not None and not model.head.bias.grad.any()


def test_the_classifier_head_has_its_own_dropout():
    """The pooled vector passes through dropout before the linear layer (DeBERTa's head), so fine-tuning
    regularises the head even where the encoder's dropout is off."""
    torch.manual_seed(0)
    config = make_config("tiny", vocab_size=V, max_position_embeddings=64, max_relative_positions=128,
                         position_buckets=32, hidden_dropout_prob=0.5, attention_probs_dropout_prob=0.5)
    model = DebertaForSequenceClassification(config, num_labels=3)
    model.train()
    model.deberta.eval()  # only the head's dropout is active
    ids = _ids()
    with torch.no_grad():
        a, b = model(ids).logits, model(ids).logits
        assert not torch.equal(a, b)
        model.eval()
        torch.testing.assert_close(model(ids).logits, model(ids).logits, rtol=0, atol=0)
