"""viz: the arrays behind the pictures are right, and every figure draws without a pyplot state."""

import matplotlib
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from deberta_edu import DebertaForMaskedLM, DebertaModel, make_config, relative_distance, viz
from deberta_edu.lessons.viz.lesson1 import _staircase
from deberta_edu.model.positions import relative_distance_matrix


def _tiny(variant="deberta", **kw):
    torch.manual_seed(0)
    cfg = make_config(
        "tiny",
        variant,
        vocab_size=30,
        position_buckets=-1,
        max_relative_positions=4,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        **kw,
    )
    return cfg


def _png(fig: Figure) -> bytes:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=40)
    return buf.getvalue()


def test_delta_matrix_is_eq3():
    d = viz.delta_matrix(9, 3)
    assert d.shape == (9, 9)
    assert all(d[i, j] == relative_distance(i, j, 3) for i in range(9) for j in range(9))
    assert d.min() == 0 and d.max() == 5


@pytest.mark.parametrize("length,k", [(6, 2), (12, 4), (8, 1), (5, 5), (9, 3)])
def test_clamped_mask_is_the_end_rows_of_relative_distance(length, k):
    d = viz.delta_matrix(length, k)
    end_rows = np.array([[relative_distance(i, j, k) in (0, 2 * k - 1) for j in range(length)]
                         for i in range(length)])
    assert np.array_equal(viz.clamped_mask(length, k), end_rows)
    i, j = np.indices((length, length))
    if k >= 2 and length > k:  # the asymmetry: i − j = k − 1 is on the shared top row, −(k − 1) is not
        assert viz.clamped_mask(length, k)[i - j == k - 1].all()
        assert not viz.clamped_mask(length, k)[j - i == k - 1].any()
    assert set(d[viz.clamped_mask(length, k) & (i < j)]) <= {0}


@pytest.mark.parametrize("length,k", [(12, 4), (7, 3), (8, 1), (6, 6)])
def test_the_picture_veils_exactly_the_end_rows(length, k):
    fig = viz.plot_delta(length, k)
    assert np.array_equal(viz.pale_cells(fig), viz.clamped_mask(length, k))


@pytest.mark.parametrize("length,k", [(12, 4), (7, 3), (9, 2)])
def test_staircases_separate_pale_from_exact_cells(length, k):
    pale = viz.clamped_mask(length, k)
    for d in (-k, k - 2):
        xs, ys = _staircase(length, d)
        assert xs, f"no edge drawn for d = {d}"
        for x, y in zip(xs[::2], ys[::2], strict=True):
            i, left, right = int(y + 0.5), int(x - 0.5), int(x + 0.5)
            assert (i - left, i - right) == (d + 1, d)
            assert pale[i, left] != pale[i, right], (d, i, x)


def test_shaw_and_t5_rows():
    from transformers.models.t5.modeling_t5 import T5Attention

    d = np.arange(-50, 51)
    assert np.array_equal(viz.shaw_rows(d, 4), np.clip(-d, -4, 4) + 4)
    assert np.array_equal(viz.shaw_rows(d, 4) + viz.shaw_rows(-d, 4), np.full(d.shape, 8))  # symmetric
    far = np.arange(-3000, 3001)
    for buckets, max_distance in ((32, 128), (64, 256), (16, 40)):
        ref = T5Attention._relative_position_bucket(
            torch.tensor(-far), bidirectional=True, num_buckets=buckets, max_distance=max_distance
        )
        assert np.array_equal(viz.t5_buckets(far, buckets, max_distance), ref.numpy())


def test_table_rows_and_distinct_rows():
    d = np.arange(-10, 11)
    assert np.array_equal(viz.table_rows(d, 4), np.clip(d + 4, 0, 7))
    for length in range(1, 15):
        for k in range(1, 7):
            assert viz.distinct_rows(length, k) == min(2 * length - 1, 2 * k)
            assert viz.distinct_rows(length, k) == len(np.unique(relative_distance_matrix(length, k=k)))
    # log buckets: a long sequence reads at most 2 × position_buckets rows
    assert viz.distinct_rows(4096, 512, 256) == 512
    assert viz.distinct_rows(100, 512, 256) == 199  # short distances are exact
    with pytest.raises(ValueError, match="max_relative_positions"):
        viz.table_rows(d, 8, 64)


def test_pair_distance_is_translation_invariant():
    a = viz.pair_distance("deep learning is fun".split(), "deep", "learning", 4)
    b = viz.pair_distance("we like deep learning".split(), "deep", "learning", 4)
    c = viz.pair_distance("deep and wide learning".split(), "deep", "learning", 4)
    assert (a.delta_ij, a.delta_ji) == (b.delta_ij, b.delta_ji) == (3, 5)
    assert (c.delta_ij, c.delta_ji) == (1, 7)
    with pytest.raises(ValueError, match="not found"):
        viz.pair_distance(["a"], "deep", "a", 2)


def test_attention_maps_match_the_model():
    model = DebertaModel(_tiny()).eval()
    ids = torch.randint(5, 30, (7,))
    maps = viz.attention_maps(model, ids)
    assert maps.kinds == ("c2c", "c2p", "p2c", "sum", "probs")
    assert maps.maps.shape == (2, 5, 2, 7, 7)
    with torch.no_grad():
        out = model(ids[None], return_details=True)
    for layer in range(2):
        terms = out.attentions[layer].terms
        np.testing.assert_allclose(maps.get(layer, 1, "c2p"), terms["c2p"][0, 1].numpy(), rtol=1e-6)
        np.testing.assert_allclose(
            maps.get(layer, 0, "sum"), sum(terms.values())[0, 0].numpy(), rtol=1e-5, atol=1e-6
        )
        np.testing.assert_allclose(maps.get(layer, 1, "probs").sum(-1), 1.0, rtol=1e-5)
    assert maps.tokens == [str(i) for i in ids.tolist()]
    with pytest.raises(ValueError, match="unknown map"):
        maps.get(0, 0, "p2p")
    with pytest.raises(ValueError, match="out of range"):
        maps.get(2, 0, "c2c")


def test_attention_maps_of_an_mlm_model_and_errors():
    model = DebertaForMaskedLM(_tiny()).eval()
    maps = viz.attention_maps(model, torch.randint(5, 30, (1, 5)), tokens=list("abcde"))
    assert maps.tokens == list("abcde")
    with pytest.raises(ValueError, match="one sequence"):
        viz.attention_maps(model, torch.randint(5, 30, (2, 5)))
    with pytest.raises(ValueError, match="3 tokens given for 5"):
        viz.attention_maps(model, torch.randint(5, 30, (5,)), tokens=list("abc"))


def test_head_patterns_read_bands_columns_and_which_term_looks_one_step_away():
    L = 8
    i, j = np.indices((L, L))
    rng = np.random.default_rng(0)
    c2c = rng.normal(size=(L, L))  # content only: no preference for a neighbour
    c2p = np.where(j == i - 1, 3.0, 0.0) + 0.1 * (i - j)  # a function of i - j: a pure diagonal band
    p2c = np.tile(rng.normal(size=L), (L, 1))  # a function of the key alone: pure columns
    scores = c2c + c2p + p2c
    probs = np.exp(scores) / np.exp(scores).sum(1, keepdims=True)
    maps = viz.AttentionMaps([str(n) for n in range(L)], ("c2c", "c2p", "p2c", "sum", "probs"),
                             np.stack([c2c, c2p, p2c, scores, probs])[None, :, None])
    (p,) = viz.head_patterns(maps)
    assert p.previous > p.following and np.isclose(p.offset_share, 1) and np.isclose(p.column_share, 1)
    rows = c2p.mean(1)[1:]  # the lift of c2p, by hand: its previous-token cell above its row's mean
    assert np.isclose(p.lift["c2p"], (np.diagonal(c2p, -1) - rows).mean()) and p.lift["c2p"] > 2
    assert abs(p.lift["c2c"]) < 1 and set(p.lift) == {"c2c", "c2p", "p2c"}
    flipped = viz.AttentionMaps(maps.tokens, maps.kinds, maps.maps[..., ::-1, ::-1].copy())  # now the next token
    (q,) = viz.head_patterns(flipped)
    assert q.following > q.previous and np.isclose(q.lift["c2p"], p.lift["c2p"])


def _one_head(length=9, k=3, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    qc, kc, vc = (torch.randn(length, d, generator=g) for _ in range(3))
    qr, kr = (torch.randn(2 * k, d, generator=g) for _ in range(2))
    return qc, kc, vc, qr, kr, relative_distance_matrix(length, k=k)


def test_algorithm1_is_the_fast_path_with_the_released_choices():
    from deberta_edu import DisentangledSelfAttention as DSA

    qc, kc, vc, qr, kr, delta = _one_head()
    d = qc.size(1)
    terms, out = viz.algorithm1(qc, kc, vc, qr, kr, delta, "released", 3)
    fast = {"c2c": qc @ kc.T, "c2p": DSA.c2p(qc[None, None], kr[None], delta)[0, 0],
            "p2c": DSA.p2c(kc[None, None], qr[None], delta)[0, 0]}
    for name in fast:
        torch.testing.assert_close(terms[name], fast[name])
    torch.testing.assert_close(out, torch.softmax(sum(fast.values()) / (3 * d) ** 0.5, -1) @ vc)
    printed, out_printed = viz.algorithm1(qc, kc, vc, qr, kr, delta)  # δ[j, i] and √(2d), as printed
    torch.testing.assert_close(printed["p2c"], DSA.p2c(kc[None, None], qr[None], delta.T)[0, 0])
    assert not torch.allclose(printed["p2c"], terms["p2c"], atol=1e-3)
    assert not torch.allclose(out_printed, out, atol=1e-3)
    with pytest.raises(ValueError, match="line 16"):
        viz.algorithm1(qc, kc, vc, qr, kr, delta, "eq4")


@pytest.mark.parametrize("length,k", [(9, 3), (12, 4), (5, 1), (6, 8)])
def test_mirror_rows_turns_released_p2c_into_eq4_exactly_where_i_minus_j_below_k(length, k):
    from deberta_edu import DisentangledSelfAttention as DSA

    _, kc, _, qr, _, delta = _one_head(length, k)
    paper = DSA.p2c(kc[None, None], qr[None], delta.T)[0, 0]
    mirrored = DSA.p2c(kc[None, None], viz.mirror_rows(qr)[None], delta)[0, 0]
    i, j = np.indices((length, length))
    agree = (paper - mirrored).abs().numpy() < 1e-6
    assert np.array_equal(agree, i - j < k)


def test_fit_distance_bias_is_exact_for_functions_of_delta_with_few_rows():
    g = torch.Generator().manual_seed(1)
    k, length, d = 4, 11, 16
    delta = relative_distance_matrix(length, k=k)
    pos_k = torch.randn(2, 2 * k, d, generator=g)
    per_row = torch.randn(2, 2 * k, generator=g)
    target = per_row[:, delta]  # (2, L, L): a function of δ(i, j) alone
    fit = viz.fit_distance_bias(target, pos_k, delta, scale=0.5)
    assert fit.residual.abs().max() < 1e-4 and fit.bias.shape == (2, d)
    torch.testing.assert_close(fit.fitted, 0.5 * torch.einsum("hd,hijd->hij", fit.bias, pos_k[:, delta]))
    content = torch.randn(2, length, length, generator=g)  # not a function of δ: cannot be matched
    assert viz.fit_distance_bias(content, pos_k, delta).residual.abs().max() > 0.1
    wide = relative_distance_matrix(40, k=40)  # 79 rows read, d = 16: most per-row maps are out of reach
    pos_wide = torch.randn(1, 80, d, generator=g)
    target_wide = torch.randn(1, 80, generator=g)[:, wide]
    assert viz.fit_distance_bias(target_wide, pos_wide, wide).residual.abs().max() > 0.1


def test_scale_study_measures_the_softmax_under_both_scales():
    torch.manual_seed(0)
    cfg = _tiny(initializer_range=128**-0.5)
    study = viz.scale_study(DebertaModel(cfg).eval(), torch.randint(5, 30, (24,)))
    assert set(study.term_variance) == {"c2c", "c2p", "p2c"} and study.n_terms == 3
    assert all(0.5 < v < 2.0 for v in study.term_variance.values())
    assert 0.8 < float(study.scores.std()) < 1.25 and study.scores.shape == (2, 24, 24)
    assert study.entropy["√d"] < study.entropy["√(3d)"] < study.uniform_entropy
    assert study.max_prob["√d"] > study.max_prob["√(3d)"]
    flat = viz.scale_study(DebertaModel(_tiny()).eval(), torch.randint(5, 30, (24,)))  # std 0.02 weights
    assert study.uniform_entropy - flat.entropy["√(3d)"] < 0.01  # tiny scores: every scale is flat


def test_shift_difference_relative_vs_absolute():
    ids = torch.randint(5, 30, (6,))
    rel = DebertaModel(_tiny("no_emd")).eval()
    bert = DebertaModel(_tiny("bert")).eval()
    d_rel = viz.shift_difference(lambda x, m: rel(x, m).last_hidden_state, ids, 4)
    d_bert = viz.shift_difference(lambda x, m: bert(x, m).last_hidden_state, ids, 4)
    assert d_rel.shape == (6,) and d_rel.max() < 1e-5
    assert d_bert.min() > 1e-2
    assert viz.shift_difference(lambda x, m: bert(x, m).last_hidden_state, ids, 0).max() == 0


def _probe_table():
    from deberta_edu.training.probe import ProbeTable

    acc = {"within": {"rel": [1.0, 0.98], "emd": [1.0, 1.0]},
           "beyond": {"rel": [0.5, 0.48], "emd": [1.0, 0.9]}}
    return ProbeTable(acc, {"within": 0.52, "beyond": 0.52}, steps=10, seeds=(0, 1))


def test_anchor_rows_are_eq3_for_the_anchor_and_share_rows_past_the_clamp():
    rows = viz.anchor_rows(20, 5)
    assert rows.tolist() == [relative_distance(p, 0, 5) for p in range(20)]
    assert len(set(rows.tolist())) == 5 and (rows[4:] == 9).all()  # one row from k − 1 on
    buckets = viz.anchor_rows(64, 32, position_buckets=8)
    assert len(set(buckets[:5].tolist())) == 5 and len(set(buckets.tolist())) < 32  # exact to 4, then shared
    with pytest.raises(ValueError, match=">= 1"):
        viz.anchor_rows(0, 4)


def test_matrix_flops_counts_linear_layers_and_cpu_attention():
    x = torch.randn(2, 8, 16)
    lin = torch.nn.Linear(16, 32)
    assert viz.matrix_flops(lambda: lin(x)) == 2 * 2 * 8 * 16 * 32
    q = torch.randn(2, 3, 8, 4)
    with torch.no_grad():  # counted under no_grad too
        flops = viz.matrix_flops(lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q))
    assert flops == 2 * (2 * 3 * 8 * 8 * 4) * 2  # QKᵀ and probs @ V


def test_every_figure_draws():
    matplotlib.use("Agg")
    model = DebertaModel(_tiny()).eval()
    maps = viz.attention_maps(model, torch.randint(5, 30, (6,)), tokens=list("abcdef"))
    figures = [
        viz.plot_delta(10, 3),
        viz.plot_delta(30, 5),
        viz.plot_delta(8, 1),
        viz.plot_schemes(3, 16, 40, span=12),
        viz.plot_buckets(600, 256, 64),
        viz.plot_pairs(["deep learning works".split(), "so deep a learning".split()], "deep", "learning", 4),
        viz.plot_attention(maps, 1, 1, "probs"),
        viz.plot_terms(maps, 0, 0),
        viz.plot_maps({"c2c": np.eye(3), "probs": np.eye(3)}, list("abc"), "two maps"),
        viz.plot_scale_study(viz.scale_study(model, torch.randint(5, 30, (6,))), "a title"),
        viz.plot_shift_difference({"a": np.ones(3) * 1e-8, "b": np.ones(3)}, list("xyz"), 2),
        viz.plot_accuracies({"rel": 0.5, "bert": 1.0}, chance=0.5),
        viz.plot_anchor_rows({"v1": viz.anchor_rows(40, 8), "v2": viz.anchor_rows(40, 16, position_buckets=8)}),
        viz.plot_probe_table(_probe_table()),
    ]
    for fig in figures:
        assert isinstance(fig, Figure)
        assert _png(fig)[:4] == b"\x89PNG"
    assert len(figures[6].axes) == 2  # the map and its colour bar
    shifted = viz.plot_shift_difference({"a": np.ones(3)}, list("xyz"), 2, models="tiny models, random weights")
    assert shifted.axes[0].get_title().endswith("\ntiny models, random weights")  # which models drew it
    with pytest.raises(ValueError, match=">= 1"):
        viz.plot_delta(0, 2)
    with pytest.raises(ValueError, match="k=0"):
        viz.plot_delta(5, 0)
    with pytest.raises(ValueError, match="at least one map"):
        viz.plot_maps({}, [])
    named = viz.plot_terms(maps, 1, 0, model="course model (38M tokens, accuracy 44.5%)")
    assert named.get_suptitle() == "layer 1, head 0\ncourse model (38M tokens, accuracy 44.5%)"  # says who drew it
    assert figures[7].get_suptitle() == "layer 0, head 0"


def test_plots_do_not_touch_pyplot():
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    viz.plot_delta(5, 2)
    viz.plot_buckets(100, 64, 16)
    assert plt.get_fignums() == before


def test_viz_is_one_module_per_lesson_and_reexports_them():
    import importlib

    for n in (1, 2, 3, 4):
        module = importlib.import_module(f"deberta_edu.lessons.viz.lesson{n}")
        public = [name for name, obj in vars(module).items()
                  if not name.startswith("_") and getattr(obj, "__module__", None) == module.__name__]
        assert public and all(getattr(viz, name) is getattr(module, name) for name in public)
        assert set(public) <= set(viz.__all__)


def _records(steps=6):
    train = [{"kind": "train", "step": s, "loss": 9.0 - s, "lr": 1e-3, "tokens_per_s": 1e4}
             for s in range(1, steps + 1)]
    evals = [{"kind": "eval", "step": s, "val_loss": 9.0 - s, "val_accuracy": 0.1 * s, "val_perplexity": 2.0}
             for s in (0, steps)]
    return train + evals


def test_training_plots_do_not_touch_pyplot(monkeypatch):
    import matplotlib.pyplot as plt
    from IPython import display as ipy

    from deberta_edu.figures import PlotFigure
    from deberta_edu.lessons.plots import LivePlot, compare_runs, plot_loss, plot_training

    before = plt.get_fignums()
    records = _records()
    for fig in (plot_loss(records), plot_training(records), compare_runs({"a": records, "b": records})):
        assert isinstance(fig, PlotFigure) and fig._repr_png_().startswith(b"\x89PNG")
    assert plt.get_fignums() == before

    shown = []  # a notebook's output area: one display, then updates in place

    class Handle:
        def update(self, image):
            shown.append(("update", image))

    def display(image, display_id=False):
        shown.append(("display", image))
        return Handle()

    monkeypatch.setattr(ipy, "display", display)
    live = LivePlot(every=2, enabled=True)
    for record in records:
        live(record)
    assert [kind for kind, _ in shown] == ["display"] + ["update"] * (live.draws - 1) and live.draws == 5
    assert all(image.data.startswith(b"\x89PNG") for _, image in shown)
    assert plt.get_fignums() == before


def test_fill_mask_reads_a_model_on_another_device():
    """pretrain.train leaves its model on the GPU when there is one (lesson 4's guesses(result.model, ...)): the
    ids must go to the model's device. The meta device stands in for a GPU in this stub."""

    class OnAnotherDevice(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.empty(3, device="meta"))

        def forward(self, ids):
            assert ids.device == self.weight.device, f"ids on {ids.device}, the model on {self.weight.device}"
            return type("Out", (), {"logits": torch.arange(12.0).reshape(1, 2, 6)})()

    (guess,) = viz.fill_mask(OnAnotherDevice(), torch.tensor([1, 4]), torch.tensor([-100, 3]), str, k=2)
    assert guess.pieces == ["5", "4"] and guess.answer_rank == 3
