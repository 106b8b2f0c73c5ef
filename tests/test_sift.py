"""SiFT and VAT: the specification, checked."""

import copy

import pytest
import torch

from deberta_edu import make_config
from deberta_edu.data.sentiment import load_splits, parse
from deberta_edu.model.classify import DebertaForSequenceClassification
from deberta_edu.training.sift import AdversarialConfig, Adversary, perturb, symmetric_kl

V = 200


def _model(seed=0, dropout=0.0):
    torch.manual_seed(seed)
    config = make_config("tiny", variant="no_emd", vocab_size=V, hidden_dropout_prob=dropout,
                         attention_probs_dropout_prob=dropout, max_relative_positions=64, position_buckets=-1)
    return DebertaForSequenceClassification(config, num_labels=2)


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, V, (4, 16), generator=g)
    ids[:, 0] = 1
    return ids, torch.tensor([0, 1, 1, 0])


def test_symmetric_kl_properties():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    assert torch.isclose(symmetric_kl(a, b), symmetric_kl(b, a))
    assert symmetric_kl(a, b) > 0
    assert symmetric_kl(a, a).item() == pytest.approx(0.0, abs=1e-7)
    assert symmetric_kl(a, a + 3.0).item() == pytest.approx(0.0, abs=1e-6), "logits up to a constant"


def _train_step(model, ids, labels, lam, seed=0):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    adversary = Adversary(model.deberta.embeddings, AdversarialConfig(lam=lam),
                          generator=torch.Generator().manual_seed(seed))
    out = model(ids, labels=labels)
    adv, _ = adversary.loss(lambda: model(ids).logits, out.logits, (*ids.shape, model.config.hidden_size))
    (out.loss + adv).backward()
    opt.step()
    return model


def test_lambda_zero_is_plain_fine_tuning():
    ids, labels = _batch()
    a = _model(dropout=0.1)
    b = copy.deepcopy(a)
    torch.manual_seed(1)
    _train_step(a, ids, labels, lam=0.0)
    torch.manual_seed(1)  # plain fine-tuning step, same dropout draws
    opt = torch.optim.AdamW(b.parameters(), lr=1e-3)
    b(ids, labels=labels).loss.backward()
    opt.step()
    for (n, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q), n


@pytest.mark.parametrize("normalized", [True, False], ids=["sift", "vat"])
def test_ascent_increases_the_adversarial_loss_and_leaves_no_parameter_gradient(normalized):
    model = _model()
    ids, _ = _batch()
    adversary = Adversary(model.deberta.embeddings, AdversarialConfig(normalized=normalized),
                          generator=torch.Generator().manual_seed(0))
    clean = model(ids).logits
    shape = (*ids.shape, model.config.hidden_size)
    delta0 = adversary.initial_delta(shape, "cpu")
    delta1, loss0 = adversary.ascent_step(lambda: model(ids).logits, clean, delta0)
    assert all(p.grad is None for p in model.parameters()), "the ascent step touched parameter gradients"
    with torch.no_grad(), perturb(adversary.target, delta1, adversary.scale):
        loss1 = symmetric_kl(model(ids).logits, clean)
    assert loss1 > loss0, f"ascent did not increase the loss: {loss0.item():.3e} -> {loss1.item():.3e}"
    # and the step beats a random step of the same per-token size
    random_dir = torch.randn(shape, generator=torch.Generator().manual_seed(5))
    random_dir = random_dir / random_dir.abs().amax(-1, keepdim=True)
    with torch.no_grad(), perturb(adversary.target, delta0 + 1e-3 * random_dir, adversary.scale):
        loss_random = symmetric_kl(model(ids).logits, clean)
    assert loss1 > loss_random


def test_perturbation_statistics():
    model = _model()
    adversary = Adversary(model.deberta.embeddings, AdversarialConfig(), generator=torch.Generator().manual_seed(0))
    sigma = adversary.config.sigma
    d0 = adversary.initial_delta((64, 32, 128), "cpu")
    assert d0.abs().max() <= 2 * sigma
    # N(0, σ²) clamped to ±2σ has std σ·sqrt(E[min(z², 4)]) = 0.959σ
    assert d0.std().item() == pytest.approx(0.959 * sigma, rel=0.02)
    assert (d0.abs() == 2 * sigma).float().mean().item() == pytest.approx(0.0455, abs=0.003)
    assert d0.mean().item() == pytest.approx(0.0, abs=1e-4)
    ids, _ = _batch()
    clean = model(ids).logits
    d0 = adversary.initial_delta((*ids.shape, 128), "cpu")
    d1, _ = adversary.ascent_step(lambda: model(ids).logits, clean, d0)
    step = (d1 - d0).abs().amax(-1)  # per token: exactly η in L∞ over the hidden dimension
    torch.testing.assert_close(step, torch.full_like(step, adversary.config.step_size), rtol=1e-3, atol=1e-7)


def test_sift_perturbs_the_normalized_embeddings():
    """With γ = 2 the raw change is 2δ: the perturbation is measured in normalized units."""
    model = _model()
    emb = model.deberta.embeddings
    with torch.no_grad():
        emb.norm.weight.fill_(2.0)
    ids, _ = _batch()
    seen = []  # the embeddings' output (B, L, D), clean then perturbed (dropout is off)
    handle = emb.register_forward_hook(lambda m, i, o: seen.append(o[0]))
    model(ids)
    with perturb(emb.norm, torch.full((*ids.shape, 128), 0.01), emb.norm.weight):
        model(ids)
    handle.remove()
    clean, perturbed = seen
    torch.testing.assert_close(perturbed - clean, torch.full_like(clean, 0.02))


def test_parse_drops_neutral_and_header():
    rows = parse(["id\tsentiment\ttext", "1\t2.5\tgreat fun", "2\t0\tmeh", "3\t-1.2\tdull  and\tlong"])
    assert [(e.text, e.label) for e in rows] == [("great fun", 1), ("dull and long", 0)]


def test_sentiment_splits_fixed_and_disjoint():
    try:
        splits = load_splits()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    sizes = {k: len(v) for k, v in splits.items()}
    assert sum(sizes.values()) > 10000
    again = load_splits()
    assert [e.text for e in again["test"][:20]] == [e.text for e in splits["test"][:20]]
    pos = sum(e.label for e in splits["train"]) / sizes["train"]
    assert 0.3 < pos < 0.7
