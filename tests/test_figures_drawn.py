"""What the figures draw, where, and under which label, and which model the lessons choose: behaviours a
learner would be misled by that no other test held (each test was checked against the change it guards: a map
transposed, a title's number or a model's name swapped, a tie with the course model shown as a win, a
smoke-size default, a colour scale flipped, the slides' builds skipping their checks)."""

from __future__ import annotations

import json
import math

import nbformat
import numpy as np
import pytest
import torch
from test_viz import _tiny  # the small seeded config the figure tests share

from deberta_edu import DebertaForMaskedLM, DebertaModel, make_config, viz
from deberta_edu import widgets as w
from deberta_edu.facts import CONFIG_FILE, LOG_FILE, MODEL_FILE, TOKENIZER_FILE
from deberta_edu.model.checkpoint import lesson_checkpoint
from deberta_edu.training.course import COURSE_DIR, course_metrics


# ----------------------------------------------------------------------------- the lessons' model
def _fake_run(folder, accuracy, tokens=819200, **changes):
    """A full-size lesson 4 run folder, as far as ``lesson_model_folder`` reads it."""
    from deberta_edu.training.configs import get_config

    folder.mkdir(parents=True)
    for f in (MODEL_FILE, TOKENIZER_FILE):
        (folder / f).write_bytes(b"")
    run = get_config("lesson4", smoke=False).replace(**changes).to_dict()
    (folder / CONFIG_FILE).write_text(json.dumps(run))
    records = [{"kind": "eval", "step": 0, "tokens": 0, "val_accuracy": 0.0},
               {"kind": "eval", "step": 400, "tokens": tokens, "val_accuracy": accuracy}]
    (folder / LOG_FILE).write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return folder


def test_a_local_run_that_only_ties_the_course_model_is_not_shown(tmp_path):
    """"beats" means strictly above: a tie keeps the course model (the label would claim "above")."""
    from deberta_edu.lessons.pretrained import lesson_model_folder

    course_accuracy = course_metrics()["held_out"]["val_accuracy"]
    tie = _fake_run(tmp_path / "tie", course_accuracy)
    assert lesson_model_folder(tie)[0] == COURSE_DIR


def test_the_local_models_label_states_its_own_accuracy(tmp_path):
    from deberta_edu.lessons.pretrained import lesson_model_folder

    course_accuracy = course_metrics()["held_out"]["val_accuracy"]
    mine = course_accuracy + 0.03
    folder, label = lesson_model_folder(_fake_run(tmp_path / "better", mine, tokens=2_500_000))
    assert folder == tmp_path / "better"
    assert f"2.5M tokens, held-out masked-token accuracy {mine:.1%}, above the course model's " \
           f"{course_accuracy:.1%}" in label


def test_the_default_local_model_is_the_full_size_lesson4_checkpoint(tmp_path, monkeypatch):
    """With no folder given, a better full-size lesson 4 run where lesson 4 saves it is the one shown."""
    from deberta_edu.lessons.pretrained import lesson_model_folder

    monkeypatch.setenv("DEBERTA_EDU_DATA", str(tmp_path))
    where = lesson_checkpoint("lesson4")
    _fake_run(where, course_metrics()["held_out"]["val_accuracy"] + 0.05)
    folder, label = lesson_model_folder()
    assert folder == where and label.startswith("your lesson 4 model")


def test_the_lessons_load_the_tokenizer_of_the_model_they_show(tmp_path, monkeypatch):
    import deberta_edu.data.tokenizer as tokenizer_module
    import deberta_edu.lessons.pretrained as pretrained

    class Stub:
        def float(self):
            return self

        def eval(self):
            return self

    loaded = {}

    def load_pretrained(folder):
        loaded["model"] = folder
        return Stub()

    monkeypatch.setattr(pretrained, "load_pretrained", load_pretrained)
    monkeypatch.setattr(tokenizer_module, "load_tokenizer", lambda path: path)  # the path it was asked for
    better = _fake_run(tmp_path / "better", course_metrics()["held_out"]["val_accuracy"] + 0.05)
    _, tokenizer, label = pretrained.pretrained_for_lessons(better)
    assert loaded["model"] == better and tokenizer == better / TOKENIZER_FILE
    assert label.startswith("your lesson 4 model")


def test_runs_without_a_config_are_not_scored_alike():
    from deberta_edu.lessons.pretrained import scored_alike

    assert not scored_alike({}, {})


# ----------------------------------------------------------------------------- lesson 1
def test_plot_delta_draws_delta_with_queries_down_and_keys_across():
    length, k = 9, 3
    fig = viz.plot_delta(length, k)
    ax = fig.axes[0]
    delta = viz.delta_matrix(length, k)
    assert np.array_equal(np.asarray(ax.images[0].get_array()), delta)  # row i = query, column j = key
    assert ax.get_xlabel() == "key position j" and ax.get_ylabel() == "query position i"
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
    assert len(cells) == length * length
    assert all(cells[i, j] == str(delta[i, j]) for i in range(length) for j in range(length))


@pytest.mark.parametrize("length,k", [(12, 4), (9, 3)])
def test_plot_delta_title_and_edges_state_the_asymmetric_clamp(length, k):
    fig = viz.plot_delta(length, k)
    ax = fig.axes[0]
    assert f"row {2 * k - 1} (i − j ≥ {k - 1})" in ax.get_title() and f"row 0 (i − j ≤ {-k})" in ax.get_title()
    pale = viz.clamped_mask(length, k)
    assert len(ax.lines) == 2
    for line in ax.lines:  # each white edge has a pale cell on one side and an exact one on the other
        xs, ys = line.get_xdata(), line.get_ydata()
        assert len(xs)
        for x, y in zip(xs[::2], ys[::2], strict=True):
            i, left, right = int(y + 0.5), int(x - 0.5), int(x + 0.5)
            assert pale[i, left] != pale[i, right], (x, y)


def test_plot_schemes_draws_each_scheme_as_a_signed_row_in_the_i_minus_j_convention():
    k, span = 4, 24
    fig = viz.plot_schemes(k, 32, 128, span=span)
    d = np.arange(-span, span + 1)
    shaw, eq3, t5 = (ax.lines[0] for ax in fig.axes[:3])
    assert np.array_equal(shaw.get_ydata(), np.clip(d, -k, k))  # positive i − j: positive row, both schemes
    assert np.array_equal(eq3.get_ydata(), np.clip(d, -k, k - 1))
    assert "shared from ±91" in fig.axes[2].get_title()  # T5's last bucket starts at 91 for 32 and 128
    x5, y5 = np.asarray(t5.get_xdata()), np.asarray(t5.get_ydata())
    own = [x for x in x5 if (y5 == y5[x5 == x][0]).sum() == 1]  # distances with a bucket of their own
    band = fig.axes[2].patches[0]  # the shaded band spans exactly those
    xs = band.get_patch_transform().transform(band.get_path().vertices)[:, 0]
    assert (min(xs), max(xs)) == (min(own) - 0.5, max(own) + 0.5)


def test_plot_buckets_labels_each_count_with_its_scheme():
    length, k, buckets = 600, 256, 64
    fig = viz.plot_buckets(length, k, buckets)
    right = fig.axes[1]
    lines = {line.get_label(): line for line in right.lines}
    lengths = lines["v1"].get_xdata()
    assert list(lines["v1"].get_ydata()) == [viz.distinct_rows(n, k) for n in lengths]
    assert list(lines["v2/v3"].get_ydata()) == [viz.distinct_rows(n, k, buckets) for n in lengths]
    assert right.get_title() == (f"L = {length}: v1 reads {viz.distinct_rows(length, k)} rows, "
                                 f"v2/v3 {viz.distinct_rows(length, k, buckets)}")


def test_plot_pairs_prints_the_signed_distance_i_minus_j():
    fig = viz.plot_pairs(["deep learning is fun".split(), "deep and wide learning".split()], "deep", "learning", 4)
    notes = [t.get_text() for t in fig.axes[0].texts if t.get_text().startswith("i − j")]
    assert notes == ["i − j = -1   δ(i,j) = 3   δ(j,i) = 5", "i − j = -3   δ(i,j) = 1   δ(j,i) = 7"]


# ----------------------------------------------------------------------------- lesson 2
def _maps():
    model = DebertaModel(_tiny(initializer_range=0.2)).eval()
    return viz.attention_maps(model, torch.randint(5, 30, (6,), generator=torch.Generator().manual_seed(0)),
                              tokens=list("abcdef"))


def test_plot_attention_draws_the_map_unturned_under_its_layer_and_head():
    maps = _maps()
    for kind in ("c2p", "probs"):
        fig = viz.plot_attention(maps, 1, 0, kind)
        ax = fig.axes[0]
        np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), maps.get(1, 0, kind))
        assert ax.get_title().startswith(f"layer 1, head 0: {kind}")
        assert (ax.get_xlabel(), ax.get_ylabel()) == ("key j", "query i")


def test_plot_terms_shares_one_colour_scale_across_the_score_terms():
    maps = _maps()
    fig = viz.plot_terms(maps, 0, 1)
    images = {ax.get_title(): ax.images[0] for ax in fig.axes if ax.images}
    scores = [images[k].get_clim() for k in maps.kinds if k != "probs"]
    top = max(float(np.abs(maps.get(0, 1, k)).max()) for k in maps.kinds if k != "probs")
    assert all(c == pytest.approx((-top, top)) for c in scores)
    assert images["probs"].get_clim()[0] == 0


def test_plot_scale_study_draws_the_sqrt_d_scores_sqrt_3_times_larger():
    torch.manual_seed(0)
    model = DebertaModel(_tiny(initializer_range=128 ** -0.5)).eval()
    study = viz.scale_study(model, torch.randint(5, 30, (24,)))
    fig = viz.plot_scale_study(study)
    left, right = fig.axes[:2]
    legend = [t.get_text() for t in left.get_legend().get_texts()]
    std = float(study.scores.std())
    assert legend == [f"÷ √(3d): std {std:.2f}", f"÷ √d: std {float((study.scores * math.sqrt(3)).std()):.2f}"]
    points = [line for line in right.lines if line.get_marker() == "o"]
    assert len(points) == 1
    np.testing.assert_allclose(points[0].get_xdata(), [1, math.sqrt(3)])
    np.testing.assert_allclose(points[0].get_ydata(), [study.entropy["√(3d)"], study.entropy["√d"]])


# ----------------------------------------------------------------------------- lesson 3
def test_plot_shift_difference_labels_each_models_bars_with_its_name():
    diffs = {"relative": np.full(3, 1e-7), "bert": np.array([0.5, 0.2, 0.1])}
    ax = viz.plot_shift_difference(diffs, list("xyz"), 2).axes[0]
    bars = {c.get_label(): [p.get_height() for p in c.patches] for c in ax.containers}
    assert bars["relative"] == pytest.approx(diffs["relative"]) and bars["bert"] == pytest.approx(diffs["bert"])


def test_plot_accuracies_draws_chance_where_it_is():
    ax = viz.plot_accuracies({"rel": 0.5, "bert": 0.9}, chance=0.25).axes[0]
    assert [list(line.get_ydata()) for line in ax.lines] == [[0.25, 0.25]]
    assert [p.get_height() for p in ax.patches] == pytest.approx([0.5, 0.9])


def test_plot_probe_table_draws_means_min_max_whiskers_and_each_settings_chance():
    from deberta_edu.training.probe import ProbeTable

    acc = {"within": {"rel": [1.0, 0.9], "emd": [0.8, 0.6]}, "beyond": {"rel": [0.5, 0.4], "emd": [1.0, 0.9]}}
    table = ProbeTable(acc, {"within": 0.5, "beyond": 0.25}, steps=10, seeds=(0, 1))
    ax = viz.plot_probe_table(table).axes[0]
    bars = {c.get_label(): [p.get_height() for p in c.patches] for c in ax.containers if hasattr(c, "patches")}
    assert bars["rel"] == pytest.approx([0.95, 0.45]) and bars["emd"] == pytest.approx([0.7, 0.95])
    chance = [list(line.get_ydata()) for line in ax.lines if line.get_linestyle() == "--"]
    assert chance == [[0.5, 0.5], [0.25, 0.25]]
    assert "10 steps" in ax.get_title() and "seeds 0, 1" in ax.get_title()


def test_plot_anchor_rows_counts_the_positions_told_apart():
    rows = {"v1": viz.anchor_rows(20, 5)}
    ax = viz.plot_anchor_rows(rows).axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["v1: 5 of 20 positions told apart"]


# ----------------------------------------------------------------------------- lesson 4
def _mlm_guesses(k=4):
    torch.manual_seed(0)
    model = DebertaForMaskedLM(_tiny(initializer_range=0.3)).eval()
    ids = torch.tensor([1, 7, 4, 9, 4, 12, 2])
    labels = torch.full_like(ids, -100)
    labels[2], labels[4] = 8, 11
    return model, ids, labels, viz.fill_mask(model, ids, labels, lambda i: f"p{i}", k=k)


def test_fill_mask_reports_the_models_probabilities_over_the_vocabulary_and_the_answers_rank():
    model, ids, labels, found = _mlm_guesses()
    assert [g.position for g in found] == [2, 4]
    with torch.no_grad():
        probs = model(ids[None]).logits[0].softmax(-1)
    for g in found:
        p = probs[g.position]
        assert g.probs == pytest.approx(p.topk(4).values.tolist(), rel=1e-5)
        assert g.answer_prob == pytest.approx(float(p[labels[g.position]]), rel=1e-5)
        assert g.answer_rank == int((p > p[labels[g.position]]).sum()) + 1 >= 1
    first = viz.fill_mask(model, ids, labels, lambda i: f"p{i}", k=1)
    forced = labels.clone()
    forced[2] = int(first[0].pieces[0][1:])  # the model's own first choice is rank 1
    assert viz.fill_mask(model, ids, forced, lambda i: f"p{i}")[0].answer_rank == 1


def test_plot_fill_mask_marks_the_answer_and_names_each_column_with_its_model():
    *_, found = _mlm_guesses()
    other = [g.__class__(**{**g.__dict__, "answer_prob": g.answer_prob / 3}) for g in found]
    fig = viz.plot_fill_mask({"before": other, "after": found}, vocab_size=30)
    axes = np.asarray(fig.axes).reshape(2, 2)  # rows: hidden tokens; columns: models
    names = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert sorted(names) == ["after", "before"]
    assert [t.get_text() for t in axes[0, 0].texts] == ["before"] and [t.get_text() for t in axes[0, 1].texts] == ["after"]
    for c, guesses in enumerate((other, found)):
        for r, g in enumerate(guesses):
            dashed = [line.get_xdata()[0] for line in axes[r, c].lines if line.get_linestyle() == "--"]
            assert dashed == pytest.approx([g.answer_prob])


def test_plot_mask_rates_puts_the_rules_ticks_at_the_rule():
    rates = {"chosen": 0.15, "[MASK]": 0.79, "random": 0.11, "unchanged": 0.1}
    rule = {"chosen": 0.15, "[MASK]": 0.8, "random": 0.1, "unchanged": 0.1}
    ax = viz.plot_mask_rates(rates, rule, "t").axes[0]
    assert list(ax.collections[0].get_offsets()[:, 1]) == pytest.approx(list(rule.values()))


# ----------------------------------------------------------------------------- widgets
def test_delta_widget_draws_the_matrix_it_reports():
    panel = w.delta_widget(length=6, k=2)
    panel.controls["k"].value = 5
    image = np.asarray(panel.figure.axes[0].images[0].get_array())
    assert np.array_equal(image, panel.data) and image.shape == (6, 6)
    assert np.array_equal(panel.data, viz.delta_matrix(6, 5))  # redrawn for the k chosen, not left at k = 2


def test_bucket_widget_draws_the_counts_it_reports():
    panel = w.bucket_widget(length=2048, k=512, position_buckets=32)
    v1, v2 = panel.data
    assert panel.figure.axes[1].get_title() == f"L = 2048: v1 reads {v1} rows, v2/v3 {v2}"


def test_attention_widget_draws_the_layer_and_head_chosen():
    maps = _maps()
    panel = w.attention_widget(maps, model="tiny model, random weights")
    panel.controls["head"].value = 1  # layer 0, head 1
    ax = panel.figure.axes[0]
    assert ax.get_title().startswith("layer 0, head 1")
    assert panel.figure.get_suptitle() == "tiny model, random weights"  # which model drew it, on every redraw
    np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), panel.data)


def test_shift_widget_says_which_models_drew_the_bars():
    kw = {"vocab_size": 20, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    rel = DebertaModel(make_config("tiny", "no_emd", **kw)).eval()
    panel = w.shift_widget({"relative": lambda x, m: rel(x, m).last_hidden_state}, torch.randint(5, 20, (4,)),
                           list("abcd"), shift=2, models="tiny models, random weights")
    assert panel.figure.axes[0].get_title().endswith("\ntiny models, random weights")


# ----------------------------------------------------------------------------- training curves
def _records():
    train = [{"kind": "train", "step": s, "tokens": 100 * s, "loss": 9.0 - s, "lr": 1e-3} for s in range(1, 7)]
    evals = [{"kind": "eval", "step": s, "tokens": 100 * s, "val_loss": v, "val_accuracy": a, "val_perplexity": p}
             for s, v, a, p in ((2, 7.0, 0.5, 9.0), (4, 6.0, 0.3, 8.0), (6, 6.5, 0.2, 7.0))]
    return train + evals


def test_plot_loss_draws_the_held_out_loss():
    from deberta_edu.lessons.plots import plot_loss

    ax = plot_loss(_records()).axes[0]
    held = [line for line in ax.lines if line.get_label() == "held-out"]
    assert len(held) == 1
    assert list(held[0].get_xdata()) == [2, 4, 6] and list(held[0].get_ydata()) == [7.0, 6.0, 6.5]


def test_plot_training_draws_accuracy_at_its_steps_and_titles_the_last_value():
    from deberta_edu.lessons.plots import plot_training

    fig = plot_training(_records())
    ax = fig.axes[1]
    assert list(ax.lines[0].get_xdata()) == [2, 4, 6] and list(ax.lines[0].get_ydata()) == [0.5, 0.3, 0.2]
    assert ax.get_title() == "last: accuracy 20.0%, perplexity 7.0"  # the last, even when it fell


def test_compare_runs_draws_held_out_values_as_measured_against_the_axis_named():
    from deberta_edu.lessons.plots import compare_runs

    ax = compare_runs({"a": _records()}, "val_loss", x="tokens").axes[0]
    assert list(ax.lines[0].get_xdata()) == [200, 400, 600] and ax.get_xlabel() == "tokens seen"
    assert list(ax.lines[0].get_ydata()) == [7.0, 6.0, 6.5]  # held-out points are not smoothed


def test_records_without_a_kind_are_training_records():
    from deberta_edu.lessons.plots import plot_loss

    ax = plot_loss([{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.0}]).axes[0]
    assert list(ax.lines[0].get_ydata()) == [3.0, 2.0]


def test_live_plot_redraws_at_every_evaluation(monkeypatch):
    from IPython import display as ipy

    from deberta_edu.lessons.plots import LivePlot

    monkeypatch.setattr(ipy, "display", lambda image, display_id=False: type("H", (), {"update": lambda s, i: None})())
    live = LivePlot(every=100, enabled=True)
    live({"kind": "train", "step": 1, "loss": 3.0})
    live({"kind": "eval", "step": 1, "val_loss": 3.0})
    assert live.draws == 1


def test_live_plot_says_which_run_it_draws(monkeypatch):
    """The curve drawn while lesson 4 trains carries its title (which run, at which size), as every figure must."""
    from IPython import display as ipy

    from deberta_edu.lessons import plots

    titles = []
    monkeypatch.setattr(ipy, "display", lambda image, display_id=False: type("H", (), {"update": lambda s, i: None})())
    monkeypatch.setattr(plots, "figure_png", lambda fig: titles.append(fig._suptitle.get_text()) or b"")
    live = plots.LivePlot(every=1, enabled=True, title="this page's run, training now (SMOKE size, not a result)")
    live({"kind": "train", "step": 1, "loss": 3.0})
    assert titles == ["this page's run, training now (SMOKE size, not a result)"]


# ----------------------------------------------------------------------------- book and slides
def test_the_book_runs_the_lessons_at_smoke_size_unless_told(monkeypatch):
    import build_book

    monkeypatch.delenv("DEBERTA_EDU_SMOKE", raising=False)
    monkeypatch.setenv("MPLBACKEND", "Agg")  # lesson_environment sets both; monkeypatch restores them
    assert build_book.cache_path().name == ".jupyter_cache"  # unset: the book's default, smoke size
    assert build_book.lesson_environment() is None
    import os

    assert os.environ["DEBERTA_EDU_SMOKE"] == "1"
    monkeypatch.setenv("DEBERTA_EDU_SMOKE", "0")
    assert build_book.cache_path().name == ".jupyter_cache-full"


def test_stage_turns_execution_off_for_no_execute(tmp_path, monkeypatch):
    import build_book
    import yaml

    monkeypatch.setattr(build_book, "STAGE", tmp_path / "src")
    monkeypatch.setattr(build_book, "copy_vendor", lambda *a, **k: None)
    build_book.stage(build_book.ROOT / "notebooks", execute=False)
    assert yaml.safe_load((tmp_path / "src" / "_config.yml").read_text())["execute"]["execute_notebooks"] == "off"
    build_book.stage(build_book.ROOT / "notebooks", execute=True)
    assert yaml.safe_load((tmp_path / "src" / "_config.yml").read_text())["execute"]["execute_notebooks"] == "cache"


def _deck(cells, state=None):
    nb = nbformat.v4.new_notebook()
    nb.cells = cells
    if state is not None:
        nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {
            "state": state, "version_major": 2, "version_minor": 0}}
    return nb


def test_a_slide_says_how_many_printed_lines_it_left_out():
    import lecture_view

    out = nbformat.v4.new_output("stream", name="stdout", text="".join(f"line {n}\n" for n in range(20)))
    (kept,) = lecture_view.slide_outputs([out])
    lines = kept.text.splitlines()
    shown = lines[:-1]
    assert len(shown) + int(lines[-1].split("(")[1].split()[0]) == 20  # shown + "N more" = all of them


def test_a_long_printed_table_is_cut_on_its_slide():
    import lecture_view

    table = "| a |\n| - |\n" + "".join(f"| {n} |\n" for n in range(12))
    out = nbformat.v4.new_output("display_data", data={"text/markdown": table})
    (kept,) = lecture_view.slide_outputs([out])
    rows = [r for r in kept.data["text/markdown"].splitlines() if r.startswith("|")]
    assert len(rows) == lecture_view.MAX_TABLE_ROWS + 2


def test_the_lecture_keeps_every_decks_widget_state():
    import lecture_view

    title = nbformat.v4.new_markdown_cell("# A")
    title.metadata["slideshow"] = {"slide_type": "slide"}
    merged = lecture_view.merge([_deck([title], {"w1": {"a": 1}}), _deck([title], {"w2": {"b": 2}})], "both")
    state = merged.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    assert set(state) == {"w1", "w2"}


def test_score_maps_are_red_where_they_attract_and_blue_where_they_repel():
    """Lesson 2's prose: "Scores are red where they attract and blue where they repel"."""
    values = np.array([[2.0, -2.0], [0.0, 1.0]])
    ax = viz.plot_maps({"c2p": values}, list("ab")).axes[0]
    im = ax.images[0]
    high, low = im.cmap(im.norm(2.0)), im.cmap(im.norm(-2.0))
    assert high[0] > high[2] and low[2] > low[0]  # red: R > B; blue: B > R


def test_an_alternate_style_sheet_from_another_machine_is_reported(tmp_path):
    import build_book

    (tmp_path / "a.html").write_text('<link rel="alternate stylesheet" href="https://cdn.example.org/dark.css">')
    assert build_book.external_resources(tmp_path) == ["a.html: https://cdn.example.org/dark.css"]


def test_warnings_stay_off_the_slides():
    import lecture_view

    outs = [nbformat.v4.new_output("stream", name="stdout", text="42\n"),
            nbformat.v4.new_output("stream", name="stderr", text="UserWarning: something\n")]
    kept = lecture_view.slide_outputs(outs)
    assert [o.text for o in kept] == ["42\n"]


def test_build_slides_builds_only_the_lessons_named(tmp_path, monkeypatch):
    import build_slides

    built = []
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setattr(build_slides, "SLIDES", tmp_path / "slides")
    monkeypatch.setattr(build_slides, "copy_vendor", lambda *a, **k: None)
    monkeypatch.setattr(build_slides, "exporter", lambda: None)
    monkeypatch.setattr(build_slides, "executed", lambda path, timeout: path)
    monkeypatch.setattr(build_slides, "lecture_notebook", lambda nb: nb)

    def write_deck(ex, nb, name):
        built.append(name)
        (tmp_path / "slides" / f"{name}.slides.html").write_text("")
        return {"name": name, "slides": 1, "positions": [(0, 0, False)]}

    monkeypatch.setattr(build_slides, "write_deck", write_deck)
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    for name in ("01_a", "02_b", "03_c"):
        (notebooks / f"{name}.ipynb").write_text("{}")
    assert build_slides.main(["02", "--no-print", "--notebooks", str(notebooks)]) == 0
    assert built == ["02_b"]


def test_a_run_without_its_tokenizer_is_never_shown(tmp_path):
    from deberta_edu.lessons.pretrained import lesson_model_folder, local_run_accuracy

    run = _fake_run(tmp_path / "no tokenizer", course_metrics()["held_out"]["val_accuracy"] + 0.05)
    (run / TOKENIZER_FILE).unlink()
    assert local_run_accuracy(run) is None and lesson_model_folder(run)[0] == COURSE_DIR


def test_plot_fill_mask_refuses_models_with_different_hidden_tokens():
    *_, found = _mlm_guesses()
    with pytest.raises(ValueError, match="same hidden tokens"):
        viz.plot_fill_mask({"a": found, "b": found[:1]})
    with pytest.raises(ValueError, match="same hidden tokens"):
        viz.plot_fill_mask({"a": found[:1], "b": found})


def test_plot_probe_table_whiskers_run_from_min_to_max():
    from matplotlib.container import ErrorbarContainer

    from deberta_edu.training.probe import ProbeTable

    acc = {"within": {"rel": [1.0, 0.9, 0.5]}}  # mean 0.8, min 0.5, max 1.0: lopsided whiskers
    ax = viz.plot_probe_table(ProbeTable(acc, {"within": 0.5}, steps=10, seeds=(0, 1, 2))).axes[0]
    (bars,) = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    (segment,) = bars.lines[2][0].get_segments()
    assert sorted(segment[:, 1]) == pytest.approx([0.5, 1.0])
