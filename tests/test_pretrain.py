"""The MLM trainer: configs, optimizer, schedule, masks, gradient accumulation, evaluation, outputs, CLI."""

import json
import math

import pytest
import torch

from deberta_edu.data.batch import Batch
from deberta_edu.facts import LOG_FILE, STATE_FILE
from deberta_edu.lessons.plots import LivePlot, compare_runs, in_notebook, load_records, plot_training, smooth
from deberta_edu.model.checkpoint import lesson_checkpoint, load_pretrained, load_tensors
from deberta_edu.model.config import SIZES, VARIANTS, make_config
from deberta_edu.model.emd import DebertaForMaskedLM
from deberta_edu.training.configs import CONFIGS, get_config
from deberta_edu.training.engine import Distributed, Precision, build_optimizer, optimizer_step, warmup_linear
from deberta_edu.training.mlm_data import Batches, MaskSpec, prepare_data, synthetic_data
from deberta_edu.training.pretrain import Evaluator, main, mlm_loss, train
from deberta_edu.training.state import read_jsonl

TRAIN = synthetic_data(256, 32, 64, seed=0)  # (256, 32): [CLS] ... [SEP], vocabulary of 64
VAL = synthetic_data(32, 32, 64, seed=1)


pytestmark = pytest.mark.usefixtures("one_thread")


def params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_every_size_and_variant_is_a_named_config():
    for size in SIZES:
        assert CONFIGS[size].model_config() == CONFIGS[f"{size}-deberta"].model_config()
        for variant in VARIANTS:
            cfg = CONFIGS[f"{size}-{variant}"]
            assert cfg.model_config() == make_config(size, variant, vocab_size=cfg.vocab_size)
    for name in ("lesson4", "lesson4-smoke", "debug"):
        assert name in CONFIGS


def test_smoke_env_picks_the_smoke_config(monkeypatch):
    monkeypatch.setenv("DEBERTA_EDU_SMOKE", "1")
    assert get_config("lesson4").name == "lesson4-smoke"
    assert get_config("tiny").name == "tiny"  # no smoke version: the config itself
    monkeypatch.setenv("DEBERTA_EDU_SMOKE", "0")
    assert get_config("lesson4").name == "lesson4"
    assert get_config("lesson4", smoke=True).steps < get_config("lesson4").steps


def test_get_config_returns_a_copy():
    cfg = get_config("debug")
    cfg.model_overrides["hidden_size"] = 999
    assert CONFIGS["debug"].model_overrides["hidden_size"] == 32


def test_config_errors_say_what_to_do():
    with pytest.raises(ValueError, match="unknown config"):
        get_config("huge")
    with pytest.raises(ValueError, match="multiple of log_every"):
        get_config("debug", log_every=3, save_every=10)
    with pytest.raises(ValueError, match="split evenly"):
        Batches(TRAIN, get_config("debug", batch_size=6, grad_accum=4), MaskSpec(64), Distributed())


def test_lesson_checkpoint_is_under_the_data_root(monkeypatch, tmp_path):
    monkeypatch.setenv("DEBERTA_EDU_DATA", str(tmp_path))
    assert lesson_checkpoint() == tmp_path / "checkpoints" / "lesson4"
    assert lesson_checkpoint("x") == tmp_path / "checkpoints" / "x"


def test_adamw_decays_matrices_only():
    model = DebertaForMaskedLM(get_config("debug").model_config())
    opt = build_optimizer(model, lr=1e-3)
    names = {p: n for n, p in model.named_parameters()}
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decay["params"])
    skipped = {names[p] for p in no_decay["params"]}
    assert "head.bias" in skipped and "deberta.embeddings.norm.weight" in skipped
    assert all(n.endswith("bias") or "norm" in n for n in skipped)
    assert "deberta.embeddings.word_embeddings.weight" in {names[p] for p in decay["params"]}
    assert opt.defaults["eps"] == 1e-6
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_warmup_then_linear_decay():
    lrs = [warmup_linear(s, 4, 12) for s in range(12)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert lrs[4:] == [(12 - s) / 8 for s in range(4, 12)]
    assert all(a >= b for a, b in zip(lrs[3:-1], lrs[4:], strict=True)) and lrs[-1] > 0
    assert warmup_linear(12, 4, 12) == 0.0


def test_masks_are_a_function_of_seed_and_step_and_change_every_epoch():
    cfg = get_config("debug")
    a = Batches(TRAIN, cfg, MaskSpec(64), Distributed())
    b = Batches(TRAIN, cfg, MaskSpec(64), Distributed())
    for step in (0, 5, 40):
        assert all(torch.equal(x, y) for x, y in zip(a.global_batch(step), b.global_batch(step), strict=True))
    assert not torch.equal(a.global_batch(0).labels, b.global_batch(1).labels)
    # Every row once per epoch, each time with a new mask.
    per_epoch = a.steps_per_epoch
    assert sorted(a.order(0).tolist()) == list(range(len(TRAIN)))
    row = int(a.order(0)[0])  # the first row of step 0
    step1 = per_epoch + int((a.order(1) == row).nonzero()) // cfg.batch_size
    pos1 = int((a.order(1) == row).nonzero()) % cfg.batch_size
    labels0, labels1 = a.global_batch(0).labels[0], a.global_batch(step1).labels[pos1]
    assert torch.equal(torch.where(labels0 != -100, labels0, TRAIN[row]), TRAIN[row])  # the same row
    assert not torch.equal(labels0 != -100, labels1 != -100)


def test_every_step_of_an_epoch_draws_its_own_mask_and_every_epoch_its_own_order():
    cfg = get_config("debug")
    batches = Batches(TRAIN, cfg, MaskSpec(64), Distributed())
    assert batches.steps_per_epoch > 2
    where = [batches.global_batch(step).labels != -100 for step in range(3)]  # steps 0, 1, 2 of epoch 0
    assert not torch.equal(where[0], where[1]) and not torch.equal(where[1], where[2])
    assert not torch.equal(batches.order(0), batches.order(1))


def test_the_attention_mask_is_zero_on_padding_only():
    rows = torch.tensor([[1, 7, 8, 9, 2, 0, 0], [1, 10, 11, 12, 13, 14, 2]])
    batch = MaskSpec(64).mask(rows, 0.5, torch.Generator().manual_seed(0))
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 1, 0, 0], [1] * 7]
    assert bool((batch.labels[rows == 0] == -100).all())


class _WordTokenizer:
    """What MaskSpec.of reads of a tokenizer: sizes, special ids and word starts (even ids here)."""

    vocab_size, mask_id, pad_id, special_ids = 64, 4, 0, (0, 1, 2, 3, 4)

    def word_start_mask(self):
        starts = torch.arange(64) % 2 == 0
        starts[:5] = False
        return starts


def test_whole_word_masking_follows_the_config():
    spec = MaskSpec.of(get_config("debug", whole_word_masking=True, source="bbc", vocab_size=8000), _WordTokenizer())
    assert spec.word_starts is not None and torch.equal(spec.word_starts, _WordTokenizer().word_start_mask())
    assert (spec.vocab_size, spec.mask_id, spec.pad_id, tuple(spec.special_ids)) == (64, 4, 0, (0, 1, 2, 3, 4))
    per_token = MaskSpec.of(get_config("debug", whole_word_masking=False, source="bbc", vocab_size=8000), _WordTokenizer())
    assert per_token.word_starts is None
    with pytest.raises(ValueError, match="whole_word_masking needs a tokenizer"):
        MaskSpec.of(get_config("debug", whole_word_masking=True, source="bbc", vocab_size=8000))
    # whole words in the batch: a continuation piece (odd id) is chosen exactly when its word start is
    rows = torch.tensor([[1] + [6, 7, 9, 8, 11, 10, 12, 13, 15, 17] * 6 + [2]])
    labels = spec.mask(rows, 0.3, torch.Generator().manual_seed(0)).labels[0]
    chosen = (labels != -100).tolist()
    assert 0 < sum(chosen) < len(chosen) - 2  # some words chosen and some not, so the check below can fail
    start = None
    for i, token in enumerate(rows[0].tolist()):
        if token in (1, 2):
            continue
        if token % 2 == 0:
            start = i
        assert chosen[i] == chosen[start], f"piece {i} chosen apart from its word"


def test_micro_batches_are_slices_of_the_global_batch():
    cfg = get_config("debug", grad_accum=4)
    batches = Batches(TRAIN, cfg, MaskSpec(64), Distributed())
    whole = batches.global_batch(3)
    micro, weights = batches.micro_batches(3)
    assert all(isinstance(b, Batch) for b in [whole, *micro]) and len(micro) == 4
    for field in Batch._fields:  # input_ids, labels, attention_mask: each the global batch's, cut in 4
        assert torch.equal(torch.cat([getattr(b, field) for b in micro]), getattr(whole, field))
    assert weights == [b.num_targets for b in micro] and sum(weights) == int((whole.labels != -100).sum())
    ids, labels, mask = whole  # unpacks in the order pretraining batches always had
    assert torch.equal(mask, (ids != 0).long()) and torch.equal(labels, whole.labels)


def test_update_does_not_depend_on_how_the_batch_is_split():
    """Loss = mean over all masked tokens of the global batch, whether 1 x 8 or 4 x 2 rows."""
    results = []
    for accum in (1, 4):
        cfg = get_config("debug", grad_accum=accum, dropout=0.0, steps=3, eval_every=0)
        results.append(train(cfg, TRAIN, progress=False))
    (a, b) = results
    assert a.losses == pytest.approx(b.losses, rel=1e-5)
    for k, v in params(a.model).items():
        torch.testing.assert_close(v, params(b.model)[k], rtol=1e-5, atol=1e-6)


def test_precisions_on_cpu():
    assert Precision("auto", torch.device("cpu")).name == "fp32"
    with pytest.raises(ValueError, match="precision"):
        Precision("fp8", torch.device("cpu"))
    cfg = get_config("debug")
    batches = Batches(TRAIN, cfg, MaskSpec(64), Distributed())
    losses = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)):
        # the autocast and GradScaler code paths, run on the CPU
        torch.manual_seed(0)
        model = DebertaForMaskedLM(cfg.model_config())
        precision = Precision(name, "cpu")
        micro, weights = batches.micro_batches(0)
        seen = []  # the matrix products run in the precision asked for (LayerNorm and the loss stay float32)
        hook = model.head.dense.register_forward_hook(lambda module, args, out, seen=seen: seen.append(out.dtype))
        with torch.no_grad(), precision.autocast():
            model(micro[0].input_ids, micro[0].attention_mask)
        hook.remove()
        assert seen == [dtype], name
        assert precision.scaler.is_enabled() == (name == "fp16")
        out = optimizer_step(model, build_optimizer(model, 1e-3), micro, mlm_loss, weights, precision=precision)
        assert torch.isfinite(out.loss) and out.loss.item() > 0
        losses[name] = out.loss.item()
    assert len(set(losses.values())) == 3  # same weights and batch: only the rounding differs, in each pair
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.02)


def test_evaluation_masks_are_fixed():
    cfg = get_config("debug")
    model = DebertaForMaskedLM(cfg.model_config())
    evaluator = Evaluator(VAL, cfg, MaskSpec(64), Distributed(), Precision("fp32", "cpu"))
    first = evaluator(model)
    again = Evaluator(VAL, cfg.replace(seed=7), MaskSpec(64), Distributed(), Precision("fp32", "cpu"))(model)
    assert first == again
    assert set(first) == {"val_loss", "val_accuracy", "val_perplexity", "val_tokens"}
    assert model.training  # evaluation puts the model back in training mode
    model.eval()
    evaluator(model)
    assert not model.training  # ... and an evaluated model in eval mode stays there (the lessons' course model)
    model.train()
    # the same numbers written plainly: every position's logits, cross-entropy over the masked ones
    ids, labels, mask = evaluator.batch.rows(torch.arange(min(cfg.eval_rows, len(VAL))))
    model.eval()
    with torch.no_grad():
        logits = model(ids, mask).logits  # (B, L, V)
    model.train()
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100).item()
    right = (logits.argmax(-1) == labels)[labels != -100].float().mean().item()
    assert first["val_loss"] == pytest.approx(loss, rel=1e-5) and first["val_accuracy"] == pytest.approx(right)
    assert first["val_perplexity"] == pytest.approx(math.exp(loss), rel=1e-5)
    assert first["val_tokens"] == int((labels != -100).sum())


def test_train_learns_logs_and_saves(tmp_path):
    cfg = get_config("debug", steps=60, lr=2e-2, warmup_steps=10, eval_every=30, save_every=30)
    live = LivePlot(every=5)
    result = train(cfg, TRAIN, VAL, out_dir=tmp_path, callback=live, progress=False)

    evals = [r for r in result.history if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [0, 30, 60]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 1.0  # it learns the synthetic grammar
    assert result.metrics == {k: v for k, v in evals[-1].items() if k.startswith("val_")}
    train_records = [r for r in result.history if r["kind"] == "train"]
    assert [r["step"] for r in train_records] == list(range(1, 61))
    assert train_records[-1]["tokens"] == 60 * cfg.batch_size * cfg.seq_length
    assert {"loss", "lr", "tokens", "tokens_per_s", "time", "grad_norm"} <= set(train_records[0])
    assert result.tokens_per_s > 0

    assert read_jsonl(tmp_path / LOG_FILE) == result.history == live.records
    assert not in_notebook() and live.draws == 0  # outside a notebook the live plot only collects
    assert json.loads((tmp_path / "train_config.json").read_text())["steps"] == 60
    loaded = load_pretrained(tmp_path)
    ids = VAL[:2]
    torch.testing.assert_close(loaded(ids).logits, result.model(ids).logits, rtol=0, atol=0)


def test_plots_return_figures(tmp_path):
    result = train(get_config("debug", steps=6, eval_every=3, save_every=3), TRAIN, VAL, out_dir=tmp_path,
                   progress=False)
    fig = plot_training(tmp_path)  # a run folder, a metrics.jsonl, a list of records or a TrainResult
    assert len(fig.axes) == 4  # loss, accuracy, learning rate (+ tokens/s on a twin axis)
    assert load_records(result) == load_records(tmp_path / LOG_FILE)
    assert len(compare_runs({"a": result, "b": result.history}, "val_loss").axes[0].lines) == 2
    assert smooth([1.0, 1.0, 1.0]) == pytest.approx([1.0, 1.0, 1.0])  # debiased: no dip at the start
    evals = [{"kind": "eval", "step": s, "val_loss": 5.0, "val_accuracy": a, "val_perplexity": p}
             for s, a, p in ((10, 0.1, 900.0), (20, 0.4, 120.0))]
    assert plot_training(evals).axes[1].get_title() == "last: accuracy 40.0%, perplexity 120.0"  # the last, not the first
    ax_acc = plot_training(evals).axes[1]
    assert ax_acc.yaxis.get_major_formatter()(0.4, 0).startswith("40")  # the axis in percent too, not 0.40


def test_cli(tmp_path, capsys):
    result = main(["--config", "debug", "--steps", "4", "--out", str(tmp_path), "--no-progress",
                   "--set", "eval_every=2", "--set", "save_every=2", "--set", "model.hidden_size=16"])
    assert result.model.config.hidden_size == 16
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "trainer_state.safetensors").exists()
    assert "debug: 4 steps" in capsys.readouterr().out
    main(["--list"])
    listed = capsys.readouterr().out
    assert "tiny-no_c2p" in listed and "150 s" in listed  # lesson4 runs on the clock


def test_no_progress_hides_the_data_builds_bars_too(tmp_path, monkeypatch, capsys):
    """--no-progress (a log file) silences the tokenizing bars of a first data build, not only training's."""
    from test_packing import write_corpus  # 200 documents of 16 words: a 320-piece tokenizer fits

    corpus = write_corpus(tmp_path)
    for name, quiet in (("quiet", True), ("loud", False)):
        monkeypatch.setenv("DEBERTA_EDU_DATA", str(tmp_path / name / "data"))  # each run builds its data afresh
        main(["--config", "debug", "--steps", "2", "--data", str(corpus), "--out", str(tmp_path / name / "run"),
              "--set", "vocab_size=320", "--set", "eval_every=2", "--set", "save_every=2"] + ["--no-progress"] * quiet)
        err = capsys.readouterr().err
        assert ("tokenizing" in err) != quiet, err[-500:]


def test_cli_steps_replace_a_configs_budget(tmp_path, monkeypatch, capsys):
    """--steps 8 on a config with a time (or token) budget trains 8 steps, its schedule tied to them."""
    for budget in ({"budget_seconds": 1000.0}, {"budget_tokens": 16 * 32 * 50}):
        monkeypatch.setitem(CONFIGS, "debug", get_config("debug").replace(**budget))
        out = tmp_path / next(iter(budget))
        result = main(["--config", "debug", "--steps", "8", "--out", str(out), "--no-progress"])
        assert "debug: 8 steps" in capsys.readouterr().out
        lrs = [r["lr"] for r in result.history if r.get("kind") == "train"]
        assert len(lrs) == 8 and lrs[-1] < max(lrs) / 3  # warmup (4 steps), then the decay, within the 8
    with pytest.raises(SystemExit, match="not a TrainConfig field"):
        main(["--config", "debug", "--set", "learning_rate=1", "--out", str(tmp_path)])


def test_a_token_budget_sets_the_steps():
    cfg = get_config("debug").replace(budget_tokens=16 * 32 * 7)
    cfg = type(cfg).from_dict(cfg.to_dict())
    assert cfg.steps == 7
    with pytest.raises(ValueError, match="less than one step"):
        get_config("debug").replace(budget_tokens=10)


def test_the_unigram_baseline_counts_the_training_rows_and_scores_the_evaluated_masks():
    """The plateau every run is measured against: add-one counts of the TRAINING rows (specials never targets),
    scored on exactly the masked held-out tokens the Evaluator scores. Counted on the held-out rows, it would
    look better than any model that has not seen them."""
    from deberta_edu.facts import SPECIAL_IDS
    from deberta_edu.training.evaluate import unigram_baseline

    cfg = get_config("debug")
    counts = torch.bincount(TRAIN.flatten(), minlength=64).double()
    counts[list(SPECIAL_IDS)] = 0
    log_p = ((counts + 1) / (counts + 1).sum()).log()  # (64,)
    labels = Evaluator(VAL, cfg, MaskSpec(64), Distributed(), Precision("fp32", "cpu")).batch.labels
    targets = labels[labels != -100]
    found = unigram_baseline(cfg, data=(TRAIN, VAL, None))
    assert found["val_tokens"] == len(targets) > 0
    assert found["val_loss"] == pytest.approx(-log_p[targets].mean().item(), rel=1e-12)
    assert found["val_accuracy"] == pytest.approx((targets == log_p.argmax()).double().mean().item())
    val_counts = torch.bincount(VAL.flatten(), minlength=64).double()
    assert not torch.allclose(val_counts / val_counts.sum(), counts / counts.sum(), atol=1e-3)  # the two differ


def test_one_cycle_warms_up_then_reaches_zero_at_the_end_of_the_budget():
    from deberta_edu.training.engine import one_cycle

    assert one_cycle(0.025, 0.05) == pytest.approx(0.5) and one_cycle(0.05, 0.05) == pytest.approx(1.0)
    assert one_cycle(0.525, 0.05) == pytest.approx(0.5) and one_cycle(1.0, 0.05) == 0.0
    assert one_cycle(2.0, 0.05) == 0.0 and one_cycle(0.0, 0.05) == 1e-3  # the first step moves, barely
    assert one_cycle(0.001, 0.05) == pytest.approx(0.02)  # then the warmup's own line


def test_a_time_budget_stops_the_run_and_its_schedule_ends_near_zero(tmp_path):
    cfg = get_config("debug").replace(steps=100_000, budget_seconds=1.5, log_every=1, eval_every=0,
                                      save_every=0, warmup_fraction=0.1)
    train_data, val_data, tok = prepare_data(cfg)
    result = train(cfg, train_data, val_data, tokenizer=tok, out_dir=tmp_path, progress=False)
    steps = [r for r in result.history if r["kind"] == "train"]
    assert 1 < len(steps) < 100_000
    assert steps[-1]["train_time"] == pytest.approx(1.5, abs=0.5)
    assert steps[-1]["lr"] < 0.2 * cfg.lr  # the schedule followed the clock down
    assert max(r["lr"] for r in steps) > 0.8 * cfg.lr


def test_the_small_budget_recipe_pretrains_without_dropout():
    """Lesson 4 and the course model: no dropout, AdamW β2 0.98, clipping at 1, token masking (configs, recipe)."""
    for name in ("lesson4", "lesson4-smoke", "course", "course-smoke"):
        cfg = CONFIGS[name]
        model = cfg.model_config()
        assert model.hidden_dropout_prob == 0.0 and model.attention_probs_dropout_prob == 0.0, name
        assert cfg.adam_betas == (0.9, 0.98) and cfg.max_grad_norm == 1.0 and not cfg.whole_word_masking, name
    assert CONFIGS["lesson4"].budget_seconds == 150 and CONFIGS["course"].budget_seconds == 5000


def test_a_time_budget_needs_a_positive_budget_and_a_warmup_below_the_whole_of_it():
    with pytest.raises(ValueError, match="budget_seconds must be > 0"):
        get_config("debug", budget_seconds=0.0)
    with pytest.raises(ValueError, match="warmup_fraction must be in"):
        get_config("debug", budget_seconds=10.0, warmup_fraction=1.0)  # one_cycle would divide by 1 - 1


def test_a_run_trains_with_its_configs_adam_settings(tmp_path):
    """β2 0.98 (lesson 4's), eps and weight decay reach the optimizer: the checkpoint holds its groups."""
    cfg = get_config("debug", steps=2, eval_every=0, save_every=0, adam_betas=(0.9, 0.98), adam_eps=1e-8,
                     weight_decay=0.05)
    train(cfg, TRAIN, out_dir=tmp_path, progress=False)
    _, meta = load_tensors(tmp_path / STATE_FILE)
    groups = json.loads(meta["optimizer_groups"])
    assert [g["betas"] for g in groups] == [[0.9, 0.98], [0.9, 0.98]]
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0] and [g["eps"] for g in groups] == [1e-8, 1e-8]


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_gradients_are_clipped_to_max_grad_norm_and_the_norm_before_is_reported(precision):
    """loss = w·x / 1000 has the gradient x / 1000, of norm 0.05; clipped to 0.005, one SGD step of rate 1 moves w by
    exactly that. fp16's GradScaler multiplies the loss by 65,536: the gradients are unscaled before clipping."""
    model = torch.nn.Linear(2, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    x = torch.tensor([[30.0, 40.0]])
    out = optimizer_step(model, opt, [x], lambda m, b: m(b).float().sum() / 1000, [1.0],
                         precision=Precision(precision, "cpu"), max_grad_norm=0.005)
    assert out.grad_norm.item() == pytest.approx(0.05, rel=1e-2)
    torch.testing.assert_close(model.weight.detach(), torch.tensor([[-0.003, -0.004]]), rtol=1e-2, atol=0)


def test_a_run_clips_its_gradients_at_the_configs_max_grad_norm(tmp_path):
    """After one update AdamW's first moment is (1 - β1) g, so its norm shows the gradient as clipped."""
    for max_norm in (1e-3, 1e6):
        out = tmp_path / f"clip-{max_norm}"
        cfg = get_config("debug", steps=1, eval_every=0, save_every=0, max_grad_norm=max_norm)
        result = train(cfg, TRAIN, out_dir=out, progress=False)
        tensors, _ = load_tensors(out / STATE_FILE)
        first_moment = torch.cat([v.flatten() for k, v in tensors.items() if k.endswith(".exp_avg")]).norm().item()
        (record,) = [r for r in result.history if r["kind"] == "train"]
        grad_norm = record["grad_norm"]  # before clipping
        assert grad_norm > 1e-3
        assert first_moment == pytest.approx((1 - cfg.adam_betas[0]) * min(grad_norm, max_norm), rel=1e-4)


def test_the_logged_learning_rate_is_the_one_that_moves_the_weights():
    cfg = get_config("debug", steps=6, warmup_steps=2, lr=1e-2, eval_every=0, save_every=0, dropout=0.0)
    lrs = [r["lr"] for r in train(cfg, TRAIN, progress=False).history if r["kind"] == "train"]
    assert lrs == pytest.approx([1e-2 * f for f in (0.5, 1.0, 1.0, 0.75, 0.5, 0.25)])  # warmup, then down to 1/4
    # AdamW's first update moves a weight by lr g / (|g| + eps), about ±lr: the biases and gains (no decay) show it
    start = params(train(cfg.replace(steps=1, lr=0.0), TRAIN, progress=False).model)
    moved = params(train(cfg.replace(steps=1), TRAIN, progress=False).model)
    step = max((moved[k] - start[k]).abs().max().item() for k in start if start[k].ndim == 1)
    assert step == pytest.approx(0.5 * 1e-2, rel=1e-3)  # update 1 of 2 of warmup: half the rate


def test_a_train_record_holds_the_mean_of_the_steps_since_the_last_one():
    cfg = get_config("debug", steps=10, eval_every=0, save_every=0)
    every = [r for r in train(cfg, TRAIN, progress=False).history if r["kind"] == "train"]
    fives = [r for r in train(cfg.replace(log_every=5), TRAIN, progress=False).history if r["kind"] == "train"]
    assert [r["step"] for r in fives] == [5, 10]
    for record, window in zip(fives, (every[:5], every[5:]), strict=True):
        assert record["loss"] == pytest.approx(sum(r["loss"] for r in window) / 5, rel=1e-6)
        assert record["grad_norm"] == pytest.approx(sum(r["grad_norm"] for r in window) / 5, rel=1e-6)
        assert record["lr"] == window[-1]["lr"]


def test_a_step_without_a_world_keeps_its_loss_on_the_models_device():
    """Fine-tuning calls optimizer_step without ``world``: the loss it sums must live where the model does
    (a CPU sum refuses a CUDA loss's +=). "meta" stands in for a GPU on a machine without one."""
    model = torch.nn.Linear(3, 2, device="meta")
    out = optimizer_step(model, torch.optim.AdamW(model.parameters()), [torch.randn(4, 3, device="meta")],
                         lambda m, x: m(x).pow(2).mean(), [4.0], precision=Precision("fp32", "cpu"))
    assert out.loss.device.type == "meta" and out.grad_norm.device.type == "meta"


@pytest.mark.parametrize(("major", "expected"), [(7, "fp16"), (8, "bf16"), (9, "bf16")])
def test_auto_precision_takes_bf16_only_where_the_gpu_has_it(monkeypatch, major, expected):
    """A T4 or V100 (compute capability 7.x) emulates bf16, and torch.cuda.is_bf16_supported() counts that as
    support: "auto" then chose slow emulated bf16 there instead of fp16 with a GradScaler. torch.cuda is faked."""
    from types import SimpleNamespace

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace(major=major, minor=5))
    monkeypatch.setattr(torch.cuda, "_check_bf16_tensor_supported", lambda device: True, raising=False)
    assert Precision("auto", "cuda").name == expected
