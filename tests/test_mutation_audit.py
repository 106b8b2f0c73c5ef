"""Behaviour no test held, found by a mutation audit of files, facts, evaluate, documents, mlm_data, configs,
lessons/explorer, lessons/pretraining_view and ablation/timing, stats, markdown and publish: each test failed with
a small semantic change to its module (named in its docstring) that the rest of the suite let through.
"""

from __future__ import annotations

import os

import pytest
import torch

from deberta_edu import facts, files


# ================================================================ files.py
def test_a_process_we_may_not_signal_is_alive(monkeypatch):
    """files._alive: PermissionError (someone else's process) means alive -> return False would remove the
    temporary file of another user's writer that is still running."""

    def denied(pid, sig):
        raise PermissionError

    monkeypatch.setattr(files.os, "kill", denied)
    assert files._alive(12345) is True


def test_a_temporary_of_another_users_live_writer_is_kept(tmp_path, monkeypatch):
    """remove_stale_temps keeps a temporary whose writer cannot be signalled (PermissionError)."""
    tmp = tmp_path / ".a.bin.1.abcd1234.tmp"
    tmp.write_bytes(b"half")

    def denied(pid, sig):
        raise PermissionError

    monkeypatch.setattr(files.os, "kill", denied)
    assert files.remove_stale_temps(tmp_path) == 0 and tmp.exists()


def test_exclusive_names_only_the_current_holder_even_after_a_crash_left_a_pid(tmp_path):
    """files.exclusive truncates the lock file before writing its pid: a holder killed mid-block left its pid
    there, and the next holder must not be named '<old pid><new pid>'."""
    lock = tmp_path / ".lock"
    lock.write_bytes(b"999999")  # what a process killed inside the block leaves behind
    with files.exclusive(lock, "the thing"):
        assert lock.read_bytes() == str(os.getpid()).encode()
        with pytest.raises(RuntimeError, match=rf"\(pid {os.getpid()}; lock"):
            with files.exclusive(lock, "the thing"):  # another open file description: flock refuses it too
                pass


def test_exclusive_empties_the_lock_file_when_the_block_ends(tmp_path):
    """files.exclusive: the holder's pid goes from the file when the block ends (or a later refusal would name a
    process that no longer holds it)."""
    lock = tmp_path / ".lock"
    with files.exclusive(lock, "the thing"):
        pass
    assert lock.read_bytes() == b""


def test_lock_file_is_hidden_beside_the_folder_not_inside_it(tmp_path):
    """files.lock_file: <parent>/.<name>.lock, outside the folder (so exporting the folder never carries it)."""
    folder = tmp_path / "bbc-8000-128"
    assert files.lock_file(folder) == tmp_path / ".bbc-8000-128.lock"


def test_temporary_names_are_hidden_and_found_by_the_stale_sweep(tmp_path):
    """files.temp_name: '.<name>.<pid>.<hex>.tmp' -- hidden, and matched by remove_stale_temps's glob."""
    path = tmp_path / "train.npy"
    tmp = files.temp_name(path)
    assert tmp.parent == tmp_path and tmp.name.startswith(".train.npy.") and tmp.name.endswith(".tmp")
    assert tmp.name.split(".")[-3] == str(os.getpid())
    tmp.write_bytes(b"half")  # our own pid, and we are not writing it: stale
    assert files.remove_stale_temps(tmp_path, "train.npy") == 1 and not tmp.exists()



# ================================================================ facts.py
def test_an_unset_smoke_variable_means_the_full_size(monkeypatch):
    """facts.smoke: DEBERTA_EDU_SMOKE unset is the full size (False), as the docstring says."""
    monkeypatch.delenv(facts.SMOKE_ENV, raising=False)
    assert facts.smoke() is False


def test_checkpoint_dir_defaults_to_lesson_4s_run(monkeypatch, tmp_path):
    monkeypatch.setenv(facts.DATA_ENV, str(tmp_path))
    assert facts.checkpoint_dir() == tmp_path / "checkpoints" / "lesson4"
    assert facts.checkpoint_dir("x") == tmp_path / "checkpoints" / "x"


def test_cpu_name_reads_the_model_name_line(monkeypatch, tmp_path):
    """facts.cpu_name: the text after the colon of /proc/cpuinfo's 'model name' line."""
    fake = tmp_path / "cpuinfo"
    fake.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\n")
    monkeypatch.setattr(facts, "Path", lambda _: fake)
    assert facts.cpu_name() == "Intel(R) Xeon(R) CPU @ 2.20GHz"


# ================================================================ lessons/explorer.py
from deberta_edu import DebertaModel, make_config  # noqa: E402
from deberta_edu.lessons import explorer  # noqa: E402


def _explorer_model(vocab_size=40):
    torch.manual_seed(0)
    return DebertaModel(make_config("tiny", vocab_size=vocab_size, position_buckets=-1, max_relative_positions=4))


def test_the_explorer_draws_exactly_max_tokens():
    """explorer_html: MAX_TOKENS tokens are allowed (the limit is 'at most'), one more is refused."""
    page = explorer.explorer_html(_explorer_model(), torch.randint(5, 40, (explorer.MAX_TOKENS,)))
    assert page.startswith("<!DOCTYPE html>")
    with pytest.raises(ValueError, match=f"at most {explorer.MAX_TOKENS} tokens, got {explorer.MAX_TOKENS + 1}"):
        explorer.explorer_html(_explorer_model(), torch.randint(5, 40, (explorer.MAX_TOKENS + 1,)))


def test_the_explorer_leaves_a_model_in_eval_mode_in_eval_mode():
    """explorer_html restores the mode the model had: eval stays eval (not switched to train)."""
    model = _explorer_model().eval()
    explorer.explorer_html(model, torch.randint(5, 40, (5,)))
    assert not model.training


def test_embedded_json_escapes_the_line_separators_and_refuses_nan():
    """embedded_json: U+2028 / U+2029 are written as \\u escapes (old JavaScript parsers end a string at them),
    and NaN or inf are refused, since JSON has neither."""
    text = explorer.embedded_json({"t": "a\u2028b\u2029c"})
    assert "\u2028" not in text and "\u2029" not in text and "\\u2028" in text and "\\u2029" in text
    with pytest.raises(ValueError):
        explorer.embedded_json({"x": float("nan")})


def test_cell_size_stays_between_8_and_30_pixels():
    """cell_size: max(8, min(30, 480 // L)) -- the page's JavaScript uses the same rule."""
    assert explorer.cell_size(4) == 30 and explorer.cell_size(20) == 24
    assert explorer.cell_size(explorer.MAX_TOKENS) == 8  # 480 // 64 = 7, raised to the floor of 8


def test_show_explorer_is_tall_enough_for_the_whole_map():
    """show_explorer's default height: 420 px of controls plus L cells of the main map."""
    pytest.importorskip("IPython")
    shown = explorer.show_explorer(_explorer_model(), torch.randint(5, 40, (6,)))
    assert f"height:{420 + 6 * explorer.cell_size(6)}px" in shown.data
    assert "height:300px" in explorer.show_explorer(_explorer_model(), torch.randint(5, 40, (6,)), height=300).data


def test_shown_prefers_the_data_root_even_inside_the_project(monkeypatch):
    """explorer._shown: a data root inside the repository is still called $DEBERTA_EDU_DATA (it is checked
    first), and a path under neither shows only its name (no path of this machine)."""
    data = facts.PROJECT_ROOT / "my-data"
    monkeypatch.setenv(facts.DATA_ENV, str(data))
    assert explorer._shown(data / "checkpoints" / "x") == "$DEBERTA_EDU_DATA/checkpoints/x"
    assert explorer._shown(facts.PROJECT_ROOT / "results" / "y") == "results/y"


def test_shown_names_no_path_outside_the_data_root_and_the_project(monkeypatch, tmp_path):
    monkeypatch.delenv(facts.DATA_ENV, raising=False)
    assert explorer._shown(tmp_path / "elsewhere" / "run") == "run"


@pytest.fixture(scope="module")
def small_spm(tmp_path_factory):
    spm = pytest.importorskip("sentencepiece")
    folder = tmp_path_factory.mktemp("spm")
    text = folder / "text.txt"
    text.write_text("a new store opened beside the new mall\nthe mall is new and the store is old\n" * 50)
    spm.SentencePieceTrainer.train(
        input=str(text), model_prefix=str(folder / "sp"), vocab_size=24, model_type="unigram", pad_id=0, bos_id=1,
        eos_id=2, unk_id=3, pad_piece="[PAD]", bos_piece="[CLS]", eos_piece="[SEP]", unk_piece="[UNK]",
        user_defined_symbols=["[MASK]"], minloglevel=2)
    return folder / "sp.model", spm.SentencePieceProcessor(model_file=str(folder / "sp.model"))


def test_load_demo_refuses_an_id_equal_to_the_models_vocabulary_size(small_spm, tmp_path):
    """load_demo: a token id == vocab_size is already outside the embedding (ids run 0 .. V-1)."""
    from deberta_edu import DebertaForMaskedLM
    from deberta_edu.model import checkpoint

    spm_file, sp = small_spm
    sentence = "the new store opened beside the old mall"
    top = max(sp.encode(sentence, out_type=int))
    torch.manual_seed(0)
    folder = checkpoint.save_pretrained(DebertaForMaskedLM(make_config("tiny", vocab_size=top)), tmp_path / "small",
                                        tokenizer_file=spm_file)
    with pytest.raises(ValueError, match=f"produced id {top} but the model's vocabulary has {top} entries"):
        explorer.load_demo(sentence, folder=folder)
    folder = checkpoint.save_pretrained(DebertaForMaskedLM(make_config("tiny", vocab_size=top + 1)),
                                        tmp_path / "fits", tokenizer_file=spm_file)
    assert int(explorer.load_demo(sentence, folder=folder).input_ids.max()) == top


def test_the_random_demo_is_the_documented_stand_in(tmp_path):
    """load_demo without a checkpoint: v1's clamp at k = 4 and a wide initialisation (0.1, not 0.02), so that
    the maps of random weights are not flat."""
    demo = explorer.load_demo("a new store opened", folder=tmp_path / "nothing")
    c = demo.model.config
    assert c.max_relative_positions == 4 and c.position_buckets == -1 and c.initializer_range == 0.1
    assert c.hidden_dropout_prob == 0.0 and c.attention_probs_dropout_prob == 0.0
    weight = demo.model.encoder.layers[0].attention.query_proj.weight
    assert 0.07 < float(weight.detach().std()) < 0.13


# ================================================================ lessons/pretraining_view.py
from test_pretraining_view import Words as _Words  # noqa: E402  (one piece "▁word" per word, plus "ed")

from deberta_edu.facts import CLS_ID, SEP_ID, SPECIAL_IDS  # noqa: E402
from deberta_edu.lessons import pretraining_view as view  # noqa: E402


def test_partly_hidden_keeps_word_numbers_of_rows_apart_when_a_row_starts_mid_word():
    """partly_hidden numbers words row by row with a stride of L + 1: a row of L word starts takes numbers 1..L,
    and the next row's leading continuation piece (word number 0 of its own row) must not join that row's last
    word. Rows here are windows (no [CLS] first), as the docstring's (N, L) allows."""
    tok = _Words()
    word_starts = torch.tensor([p.startswith("▁") for p in tok.pieces])
    the, new, store, ed = (tok.pieces.index(p) for p in ("▁the", "▁new", "▁store", "ed"))
    rows = torch.tensor([[the, new, store], [ed, the, new]])  # row 0: three word starts; row 1 opens with "ed"
    labels = torch.full_like(rows, -100)
    labels[1, 0] = ed  # only the lone "ed" is chosen: its word (in this window) is wholly hidden
    assert view.partly_hidden(rows, labels, word_starts) == 0.0


def test_guesses_give_five_by_default():
    """pretraining_view.guesses: k = 5 guesses per [MASK] unless told otherwise (as viz.fill_mask)."""
    from deberta_edu import DebertaForMaskedLM

    tok = _Words()
    torch.manual_seed(0)
    model = DebertaForMaskedLM(make_config("tiny", vocab_size=len(tok.pieces))).eval()
    found = view.guesses(model, [view.hide(tok, "the new store", ["store"])], tok.id_to_piece)
    assert [len(g.pieces) for g in found] == [5]


# ================================================================ ablation/timing.py
from deberta_edu.ablation import plan, timing  # noqa: E402


def _smoke_timings(eval_s=0.0, **by_variant):
    return {"variants": {v: {"first_window_s": 2.0, "step_s": 0.02, "eval_s": eval_s, "metrics_s": by_variant.get(v, 3.0)}
                         for v in plan.VARIANTS}}


@pytest.fixture
def recorded_jobs(monkeypatch):
    """timing.smoke_check with run_job replaced: the jobs it would run, and a record per job."""
    seen, records = [], {}

    def fake_run_job(job):
        seen.append(job)
        return records.get(job.variant, {"first_window_s": 1.5, "step_s": 0.01, "first_eval_s": 7.0, "eval_s": 0.5,
                                         "pretrain_s": 2.0, "metrics_s": 4.0})

    monkeypatch.setattr(timing, "run_job", fake_run_job)
    return seen, records


def test_the_smoke_check_runs_every_variant_at_the_grids_middle_rate(recorded_jobs, capsys):
    """smoke_check: every variant once, at the middle rate of the grid, for the steps asked, with two evaluations
    of every held-out row a run evaluates, at step 0 and at the end (the first's time is charged once per run, the
    second's per further evaluation); DeBERTa fine-tunes on the scale's full number of examples, the others on
    SMOKE_FINETUNE."""
    seen, _ = recorded_jobs
    cpu = plan.get_scale("cpu")
    scale = plan.get_scale("cpu", lr_grid=(1e-3, 2e-3, 4e-3), train=cpu.train.replace(eval_rows=1000))
    out = timing.smoke_check(scale, steps=3)
    assert [j.variant for j in seen] == list(plan.VARIANTS) and set(out["variants"]) == set(plan.VARIANTS)
    assert {j.lr for j in seen} == {2e-3}
    assert all(j.cfg.steps == 3 for j in seen) and out["steps"] == 3
    assert all(j.cfg.eval_rows == 1000 and j.cfg.eval_every == 3 for j in seen)  # at step 0 and at the end
    assert all(timing.evaluations(j.cfg) == 2 for j in seen)
    assert {j.variant: j.finetune_examples for j in seen} == {
        v: (None if v == "deberta" else timing.SMOKE_FINETUNE) for v in plan.VARIANTS}
    assert out["variants"]["bert"]["step_s"] == 0.01 and out["variants"]["bert"]["precision"] == "fp32"
    assert out["variants"]["bert"]["eval_s"] == 0.5 and out["variants"]["bert"]["first_eval_s"] == 7.0
    assert "0.5 s per evaluation (first 7.0 s)" in capsys.readouterr().out


def test_the_smoke_check_stops_at_a_variant_whose_loss_was_not_finite(recorded_jobs):
    seen, records = recorded_jobs
    records["bert"] = {"failed": "loss nan at step 2", "first_window_s": 1.0, "step_s": 0.01, "first_eval_s": 0.1,
                       "eval_s": 0.1,
                       "pretrain_s": 1.0, "metrics_s": 1.0}
    with pytest.raises(RuntimeError, match=r"bert variant's loss was not finite on cpu in its 3 steps or its "
                       r"fine-tuning \(loss nan at step 2\)"):
        timing.smoke_check(plan.get_scale("cpu"), steps=3)


def test_fit_budget_refuses_when_the_fixed_costs_take_all_the_time():
    """seconds == the fixed costs leaves no time for training: refused as such (not as 'only 0 tokens')."""
    scale = plan.get_scale("gpu")
    n = len(scale.lr_grid) + len(scale.seeds) - 1
    fixed = n * len(plan.VARIANTS) * (2.0 + 3.0)
    with pytest.raises(RuntimeError, match="before any training"):
        timing.fit_budget(scale, _smoke_timings(), fixed)


def test_fit_budget_charges_every_run_deberta_s_measurements():
    """fit_budget: the measurements of every run are charged at DeBERTa's time (the full fine-tuning ran for
    DeBERTa only in the smoke check), not each variant's own shorter one."""
    scale = plan.get_scale("gpu")
    n = len(scale.lr_grid) + len(scale.seeds) - 1
    fit = timing.fit_budget(scale, _smoke_timings(deberta=10.0, bert=1.0), 5000.0, baselines_s=9.0)
    assert fit["fixed_s"] == pytest.approx(9.0 + n * len(plan.VARIANTS) * (2.0 + 10.0))
    fit = timing.fit_budget(scale, _smoke_timings(eval_s=0.5, deberta=10.0, bert=1.0), 5000.0, baselines_s=9.0)
    assert fit["fixed_s"] == pytest.approx(9.0 + n * len(plan.VARIANTS) * (2.0 + 10.0 + (scale.evals + 2) * 0.5))


def test_the_first_evaluation_of_a_run_is_charged_once_and_the_others_at_the_steady_time():
    """With torch.compile the first evaluation compiles the eval-mode graphs (on this CPU 15.9 s against 0.16-0.38
    s for the next ones, smoke scale). Each run pays it once: fit_budget and predict_job charge it once and the
    steady time for the others. Charging every evaluation the first one's time, 10 per run, refused a
    COMPILE=1 GPU run as having no time left for training."""
    from deberta_edu.ablation import jobs

    scale = plan.get_scale("gpu")
    n = len(scale.lr_grid) + len(scale.seeds) - 1
    smoke = _smoke_timings(eval_s=0.5, deberta=10.0)
    for v in plan.VARIANTS:
        smoke["variants"][v]["first_eval_s"] = 16.0
    fit = timing.fit_budget(scale, smoke, 5000.0, baselines_s=9.0)
    assert fit["fixed_s"] == pytest.approx(9.0 + n * len(plan.VARIANTS) * (2.0 + 10.0 + 16.0 + (scale.evals + 1) * 0.5))
    cfg = plan.run_config(scale, "bert", 0, 5e-4)
    job = jobs.Job("bert", 0, 5e-4, cfg, scale, None)
    assert timing.predict_job(job, smoke) == pytest.approx(2.0 + cfg.steps * 0.02 + 16.0 + 9 * 0.5 + 10.0)


def test_attention_path_reads_the_backends_for_any_cuda_device():
    """attention_path: 'cuda:1' is a GPU too; its backends are listed, not just the device name."""
    assert timing.attention_path("cpu") == {"device": "cpu"}
    path = timing.attention_path("cuda:1")
    assert "device" not in path and "math" in path


def test_predict_job_charges_deberta_s_measurement_time():
    """predict_job: first window + steps x step time + evaluations x evaluation time + DeBERTa's measurement time
    (an upper bound for all)."""
    from deberta_edu.ablation import jobs

    scale = plan.get_scale("gpu")
    cfg = plan.run_config(scale, "bert", 0, 5e-4)
    job = jobs.Job("bert", 0, 5e-4, cfg, scale, None)
    smoke = _smoke_timings(eval_s=0.5, deberta=10.0, bert=1.0)
    assert (cfg.steps, cfg.eval_every) == (677, 84) and timing.evaluations(cfg) == 10  # step 0, 84 ... 672, 677
    assert timing.predict_job(job, smoke) == pytest.approx(2.0 + cfg.steps * 0.02 + 10 * 0.5 + 10.0)
    assert timing.predict_job(job, None) == 0.0


# ================================================================ ablation/stats.py
from deberta_edu.ablation import stats  # noqa: E402


def test_a_p_value_of_exactly_alpha_is_not_significant():
    """verdict: significant means p < 0.05, strictly (the module's docstring and the report's words)."""
    assert stats.verdict({"p": stats.ALPHA, "mean_difference": 1.0}, higher_is_better=True) == "within noise"
    assert stats.verdict({"p": 0.049, "mean_difference": 1.0}, higher_is_better=True) == "agrees"


def test_interpolate_across_two_points_at_the_same_x():
    """interpolate: a vertical step (x[i] == x[i + 1]) gives the first point's y, not a division by zero."""
    assert stats.interpolate([0, 0, 10], [1, 2, 3], 0) == 1
    assert stats.interpolate([0, 5, 5, 10], [1, 2, 4, 6], 5) == 2


def test_differences_equal_up_to_rounding_have_no_spread():
    """paired_test: differences that are one number up to float rounding (0.3 - 0.2 and 1.1 - 1.0) have no
    spread: p is 0 and the interval a point, not a t-test on rounding noise."""
    t = stats.paired_test([0.3, 0.7, 1.1], [0.2, 0.6, 1.0])
    assert len(set(t["differences"])) == 2  # the rounding is real
    assert t["p"] == 0.0 and t["t"] is None and t["ci95"] == [t["mean_difference"]] * 2


def test_area_under_refuses_x_and_y_of_different_lengths():
    with pytest.raises(ValueError, match="two or more"):
        stats.area_under([0, 1, 2], [5, 6])


# ================================================================ ablation/markdown.py
from deberta_edu.ablation import markdown  # noqa: E402


def test_a_spread_of_zero_is_shown():
    """markdown._ms: a std of 0.0 (every seed the same) is a number to show; only None (one seed) is left out."""
    assert markdown._ms({"mean": 0.5, "std": 0.0, "n": 3}) == "0.500 ± 0.000 (n=3)"
    assert markdown._ms({"mean": 0.5, "std": None, "n": 1}) == "0.500 (n=1)"


def test_the_plateau_table_lists_runs_by_id():
    """markdown._plateau_table: one row per run, sorted by run id whatever order the runs came in."""
    run = {"on_plateau": False, "tokens": 1000, "val_loss": 4.0, "val_accuracy": 0.25}
    results = {"unigram_baseline": {"val_loss": 5.0},
               "runs": {"deberta-seed1": run, "bert-seed0": run, "deberta-seed0": {"failed": "nan"}}}
    rows = markdown._plateau_table(results)[2:]
    assert [r.split(" | ")[0] for r in rows] == ["| bert-seed0", "| deberta-seed0", "| deberta-seed1"]
    assert rows[0] == "| bert-seed0 | 1,000 | 4.0000 | 1.000 | 25.0% | left the plateau |"


def test_a_p_value_of_zero_is_printed_in_the_claims_table():
    """markdown._claim_rows: p = 0 (the same difference at every seed) is a result, printed as 0; only an
    untested claim (p None) shows a dash."""
    test = {"mean_difference": -0.1, "n": 3, "ci95": [-0.1, -0.1], "p": 0.0}
    rows = markdown._claim_rows({"claims": [{"other": "bert", "metric": "val_loss", "test": test,
                                             "verdict": "agrees"}]})
    assert rows[2] == ("| DeBERTa better than BERT-style | held-out MLM loss, end of the run | -0.1 (n=3) | "
                       "-0.1 … -0.1 | 0 | **agrees** |")


# ================================================================ ablation/publish.py
from deberta_edu.ablation import publish, report  # noqa: E402


def _publish_with(monkeypatch, results):
    monkeypatch.setattr(publish.report, "summarize", lambda folder: dict(results))
    monkeypatch.setattr(publish.markdown, "comparison", lambda results: "the text\n")


def test_results_json_is_written_as_utf8_text(monkeypatch, tmp_path):
    """write_report: results.json keeps '−EMD' and 'β' as they are (ensure_ascii=False), readable by a person."""
    _publish_with(monkeypatch, {"label": "−EMD", "note": "β2 0.98"})
    publish.write_report(tmp_path, figures=False)
    text = (tmp_path / report.RESULTS_FILE).read_text(encoding="utf-8")
    assert "−EMD" in text and "β2 0.98" in text and "\\u" not in text


def test_results_json_refuses_nan(monkeypatch, tmp_path):
    """write_report: a NaN would make results.json invalid JSON for every strict reader: refused, and the old
    results.json is left as it was."""
    (tmp_path / report.RESULTS_FILE).write_text("{}\n", encoding="utf-8")
    _publish_with(monkeypatch, {"val_loss": float("nan")})
    with pytest.raises(ValueError):
        publish.write_report(tmp_path, figures=False)
    assert (tmp_path / report.RESULTS_FILE).read_text(encoding="utf-8") == "{}\n"


# ================================================================ training/evaluate.py
import math  # noqa: E402

from deberta_edu.facts import PAD_ID  # noqa: E402
from deberta_edu.model.emd import DebertaForMaskedLM  # noqa: E402
from deberta_edu.training.configs import get_config  # noqa: E402
from deberta_edu.training.engine import Distributed, Precision  # noqa: E402
from deberta_edu.training.evaluate import Evaluator  # noqa: E402
from deberta_edu.training.mlm_data import Batches, MaskSpec, synthetic_data  # noqa: E402


def test_perplexity_is_exp_of_the_loss_until_the_loss_is_absurd(one_thread):
    """Evaluator: val_perplexity = exp(val_loss); only a loss past 80 nats (overflow ahead) is capped."""
    cfg = get_config("debug")
    torch.manual_seed(0)
    model = DebertaForMaskedLM(cfg.model_config())
    with torch.no_grad():
        model.head.bias[PAD_ID] = 25.0  # every guess is [PAD], which is never a target: a loss of ~25 nats
    metrics = Evaluator(synthetic_data(32, 32, 64, seed=1), cfg, MaskSpec(64), Distributed(),
                        Precision("fp32", "cpu"))(model)
    assert 10 < metrics["val_loss"] < 80
    assert metrics["val_perplexity"] == pytest.approx(math.exp(metrics["val_loss"]), rel=1e-9)


# ================================================================ training/documents.py
from deberta_edu.training import documents  # noqa: E402


def test_the_classes_default_counts_the_test_labels_too(monkeypatch):
    """finetuned_accuracy: with classes=None the head has max(train labels, test labels) + 1 outputs, so a class
    that only the test set holds still has a row in the scores."""
    made = []

    class Stop(Exception):
        pass

    def recording(encoder, classes):
        made.append(classes)
        raise Stop

    monkeypatch.setattr(documents, "MeanPoolClassifier", recording)
    with pytest.raises(Stop):
        documents.finetuned_accuracy(torch.nn.Linear(1, 1), None, ["a", "b"], [0, 1], ["c"], [2], seed=0)
    assert made == [3]


# ================================================================ training/mlm_data.py
def test_synthetic_rows_are_cls_content_sep_and_follow_the_grammar():
    """synthetic_data: [CLS] x_1 .. x_n [SEP], content ids only inside, and x_{t+1} = successor(x_t) about 90%
    of the time (noise=0.1)."""
    x = synthetic_data(200, 16, 64, seed=0)
    assert (x[:, 0] == CLS_ID).all() and (x[:, -1] == SEP_ID).all()
    inner = x[:, 1:-1]
    assert (inner >= len(SPECIAL_IDS)).all() and (inner < 64).all()
    # the most common follower of each token is its successor; it follows it about 90% of the time
    pairs = torch.stack([inner[:, :-1].flatten(), inner[:, 1:].flatten()], 1)
    follows = {}
    for a, b in pairs.tolist():
        follows.setdefault(a, []).append(b)
    top = sum(max(bs.count(b) for b in set(bs)) for bs in follows.values()) / len(pairs)
    assert 0.85 < top < 0.95


def test_prepare_data_packs_a_held_out_set_only_for_another_corpus(monkeypatch, tmp_path):
    """prepare_data: eval_source equal to source (or None) reads the source's own val.npy; only another corpus
    is packed with pack_validation."""
    from deberta_edu.data import packing

    packed = []
    monkeypatch.setattr(packing, "build_dataset", lambda source, vocab, length, progress: (tmp_path / "train.npy",
                                                                                  tmp_path / "val.npy", "tok"))
    monkeypatch.setattr(packing, "pack_validation",
                        lambda source, tok, length, folder, progress: packed.append(source) or tmp_path / f"val-{source}.npy")
    monkeypatch.setattr(packing, "PackedDataset", lambda path: path)
    from deberta_edu.training.mlm_data import prepare_data

    cfg = get_config("tiny", smoke=False)
    assert prepare_data(cfg.replace(eval_source="bbc")) == (tmp_path / "train.npy", tmp_path / "val.npy", "tok")
    assert prepare_data(cfg.replace(eval_source=None))[1] == tmp_path / "val.npy"
    assert packed == []
    assert prepare_data(cfg.replace(eval_source="large"))[1] == tmp_path / "val-large.npy" and packed == ["large"]


def test_whole_word_masking_on_synthetic_rows_falls_back_to_token_masking():
    """MaskSpec.of: synthetic rows have no words, so whole_word_masking needs no tokenizer there (per token);
    any other source without a tokenizer is refused."""
    spec = MaskSpec.of(get_config("debug", whole_word_masking=True))
    assert spec.vocab_size == 64 and spec.word_starts is None
    with pytest.raises(ValueError, match="needs a tokenizer"):
        MaskSpec.of(get_config("debug", whole_word_masking=True, source="bbc", vocab_size=8000))


def test_an_epoch_is_the_whole_batches_only():
    """Batches: steps_per_epoch = rows // batch_size; the rows of a last partial batch wait for the next epoch
    (every step is a full batch of batch_size rows), and step steps_per_epoch opens epoch 1."""
    cfg = get_config("debug", batch_size=8)
    batches = Batches(synthetic_data(20, 32, 64), cfg, MaskSpec(64), Distributed())
    assert batches.steps_per_epoch == 2
    assert batches.global_batch(2).input_ids.shape == (8, 32)


def test_without_a_tokenizer_all_five_specials_stay_special():
    """MaskSpec.of without a tokenizer: the course's five special ids, so neither [UNK] nor [MASK] is ever a
    target or a random replacement."""
    from deberta_edu.facts import UNK_ID

    spec = MaskSpec.of(get_config("debug"))
    assert tuple(spec.special_ids) == SPECIAL_IDS and spec.mask_id == facts.MASK_ID and spec.pad_id == PAD_ID
    batch = spec.mask(synthetic_data(2000, 32, 64), 0.15, torch.Generator().manual_seed(0))
    assert not (batch.input_ids == UNK_ID).any()


# ================================================================ training/configs.py
from deberta_edu.training.configs import (  # noqa: E402
    CONFIGS,
    NON_TRAJECTORY_FIELDS,
    TrainConfig,
    apply_overrides,
    trajectory_differences,
)


@pytest.mark.parametrize("changes, words", [
    (dict(steps=True), "steps must be a whole number, got True"),  # a bool is an int to Python, not to us
    (dict(lr=False), "lr must be a number, got False"),
    (dict(adam_betas=(0.9, 1.0)), "adam_betas must be two numbers in \\[0, 1\\)"),  # β2 = 1: no forgetting
    (dict(seq_length=7), "seq_length must be at least 8"),
    (dict(eval_batch_size=0), "eval_batch_size must be at least 1"),
    (dict(max_grad_norm=0.0), "max_grad_norm must be > 0"),
    (dict(budget_seconds=0.0), "budget_seconds must be > 0"),
    (dict(weight_decay=-0.01), "weight_decay must be >= 0"),
    (dict(steps=None), "steps must be a whole number, got None"),
    (dict(budget_tokens=32 * 128), None),  # exactly one step is enough
])
def test_train_config_limits(changes, words):
    if words is None:
        assert TrainConfig(**changes).steps == 1
        return
    with pytest.raises(ValueError, match=words):
        TrainConfig(**changes)


def test_train_config_accepts_its_lower_edges():
    """The smallest legal values pass: seq_length 8, warmup_fraction 0 (no warmup), β1 = 0."""
    cfg = TrainConfig(seq_length=8, warmup_fraction=0.0, adam_betas=(0.0, 0.98))
    assert cfg.seq_length == 8 and cfg.warmup_fraction == 0.0 and cfg.adam_betas == (0.0, 0.98)


def test_a_token_budget_gives_the_whole_steps_it_pays_for():
    """budget_tokens // tokens_per_step: a budget of 2.5 steps trains 2 (never more tokens than budgeted)."""
    assert TrainConfig(batch_size=32, seq_length=128, budget_tokens=int(2.5 * 32 * 128)).steps == 2


def test_a_model_override_wins_over_the_dropout_shortcut():
    """TrainConfig.model_config: dropout sets both dropout rates, but a model_overrides entry naming one of them
    explicitly wins (``--set dropout=0 --set model.hidden_dropout_prob=0.2``)."""
    cfg = get_config("debug", dropout=0.0)
    cfg = cfg.replace(model_overrides={**cfg.model_overrides, "hidden_dropout_prob": 0.2})
    model = cfg.model_config()
    assert model.hidden_dropout_prob == 0.2 and model.attention_probs_dropout_prob == 0.0


def test_compile_may_change_on_resume():
    """trajectory_differences: compile computes the same numbers, so a resumed run may switch it."""
    cfg = get_config("debug")
    saved = files.as_saved(cfg.to_dict())
    assert "compile" in NON_TRAJECTORY_FIELDS
    assert trajectory_differences(saved, cfg.replace(compile=True, eval_every=5)) == {}
    assert trajectory_differences(saved, cfg.replace(lr=3e-3)) == {"lr": (cfg.lr, 3e-3)}


def test_overrides_add_to_a_configs_own_model_overrides():
    """apply_overrides: --set model.x=... adds to the named config's model_overrides (course: 4 layers)."""
    cfg = apply_overrides(CONFIGS["course"], ["model.hidden_size=64", "lr=3e-4"])
    assert cfg.model_overrides == {"num_hidden_layers": 4, "hidden_size": 64} and cfg.lr == 3e-4
    assert cfg.model_config().num_hidden_layers == 4


def test_overrides_check_the_model_settings_at_once():
    """apply_overrides: a model setting DebertaConfig refuses is refused when set, not when the model is built."""
    with pytest.raises(ValueError):
        apply_overrides(get_config("debug"), ["model.hidden_dropout_prob=1.5"])


def test_from_dict_ignores_fields_it_does_not_know():
    """TrainConfig.from_dict: a train_config.json from a newer version (an extra field) still loads."""
    cfg = get_config("debug")
    assert TrainConfig.from_dict({**cfg.to_dict(), "a_future_field": 1}) == cfg


def test_a_zero_batch_with_a_token_budget_is_named_not_a_division_by_zero():
    """TrainConfig divided budget_tokens by tokens_per_step before it checked batch_size >= 1: `pretrain --set
    batch_size=0 --set budget_tokens=N` ended in a ZeroDivisionError traceback, not the one line it gives now."""
    with pytest.raises(ValueError, match="batch_size must be at least 1, got 0"):
        TrainConfig(batch_size=0, budget_tokens=10_000)
