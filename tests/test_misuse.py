"""Mistakes a learner makes with the library and its commands, each named in one line before any work is done.

Not a raw traceback from deep inside torch, a silently wrong result (a negative max_grad_norm that flips every
gradient, a term given twice that changes the scale, an EMD select of another shape), or a file lost (a results
JSON of other settings replaced, a benchmark's numbers lost to a --json that is a folder). Each test failed on the
code before the check it tests was added.
"""

from __future__ import annotations

import json
import re

import pytest
import safetensors.torch
import torch

import deberta_edu as de
from deberta_edu.facts import RESULTS_ROOT

COURSE = RESULTS_ROOT / "course-model"


def small_config(**changes):
    return de.make_config("tiny", vocab_size=100, hidden_size=32, intermediate_size=64, max_position_embeddings=64,
                          position_buckets=16, **changes)


def ids(batch=2, length=10):
    return torch.randint(5, 100, (batch, length), generator=torch.Generator().manual_seed(0))


# ----------------------------------------------------------------------------- TrainConfig / --set


@pytest.mark.parametrize("field, value", [
    ("max_grad_norm", -1.0),  # clip_grad_norm_ with a negative norm flips every gradient: training ascends the loss
    ("weight_decay", -0.01),  # AdamW grows the weights instead of shrinking them
    ("save_every", -1),  # done % -1 == 0: a checkpoint after every step
    ("eval_every", -1),  # an evaluation after every step
])
def test_train_config_refuses_negative_settings_that_silently_change_training(field, value):
    from deberta_edu.training.configs import get_config

    with pytest.raises(ValueError, match=field):
        get_config("debug", smoke=False).replace(**{field: value})


@pytest.mark.parametrize("betas", [0.9, (0.9,), (0.9, 1.5), (0.9, 0.98, 0.999)])
def test_train_config_checks_adam_betas(betas):
    from deberta_edu.training.configs import get_config

    with pytest.raises(ValueError, match="adam_betas"):
        get_config("debug", smoke=False).replace(adam_betas=betas)


def test_pretrain_set_adam_betas_of_one_value_is_one_line(tmp_path):
    """Today: a raw IndexError traceback from torch/optim/adam.py."""
    from deberta_edu.training.pretrain import main

    with pytest.raises(SystemExit, match="adam_betas"):
        main(["--config", "debug", "--set", "adam_betas=[0.9]", "--out", str(tmp_path / "run"), "--no-progress"])


def test_debug_config_on_a_corpus_says_which_vocab_size_to_set(tmp_path, monkeypatch):
    """Today: 'vocab_size must be a whole number >= 262 ..., got 64', after the data work, naming no option."""
    from deberta_edu.training import pretrain

    def prepare_data(cfg, progress=True):
        raise RuntimeError(f"reached the data with vocab_size {cfg.vocab_size}")

    monkeypatch.setattr(pretrain, "prepare_data", prepare_data)
    command = ["--config", "debug", "--data", "bbc", "--out", str(tmp_path / "run"), "--no-progress"]
    with pytest.raises(SystemExit, match=r"vocab_size=64 suits only synthetic data.*--set vocab_size=8000"):
        pretrain.main(command)
    with pytest.raises(SystemExit, match="reached the data with vocab_size 300"):  # the advice works
        pretrain.main([*command, "--set", "vocab_size=300"])


def test_command_flags_and_set_are_checked_together():
    """--data bbc with --set vocab_size=300: neither alone is a config the debug one can become."""
    from deberta_edu.training.configs import apply_overrides, get_config

    cfg = apply_overrides(get_config("debug", smoke=False), ["vocab_size=300", "lr=0.5"], source="bbc", lr=0.1,
                          seed=None)
    assert (cfg.source, cfg.vocab_size, cfg.lr, cfg.seed) == ("bbc", 300, 0.5, 0)  # --set wins over a flag


def test_set_model_overrides_points_at_model_dot_field():
    """Today: 'TrainConfig.replace() got multiple values for keyword argument 'model_overrides''."""
    from deberta_edu.training.configs import apply_overrides, get_config

    with pytest.raises(ValueError, match=r"model\.<field>|model\.hidden_size"):
        apply_overrides(get_config("debug", smoke=False), ['model_overrides={"hidden_size": 64}'])


def test_ctrl_c_during_pretraining_ends_in_one_line_that_says_how_to_resume(tmp_path, monkeypatch):
    """Today: a 30-line KeyboardInterrupt traceback and no word about --resume."""
    from deberta_edu.training import pretrain

    real, calls = pretrain.optimizer_step, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(pretrain, "optimizer_step", interrupted)
    out = tmp_path / "run"
    try:
        with pytest.raises(SystemExit, match="--resume"):
            pretrain.main(["--config", "debug", "--steps", "20", "--set", "save_every=2", "--set", "eval_every=0",
                           "--out", str(out), "--no-progress"])
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C reached the learner as a raw KeyboardInterrupt traceback")
    assert (out / "trainer_state.safetensors").exists()


# ----------------------------------------------------------------------------- DebertaConfig


def test_a_term_given_twice_is_refused():
    """Today ('c2c', 'c2p', 'c2p') is accepted and divides the scores by sqrt(3d) instead of sqrt(2d): a different
    model from ('c2c', 'c2p') with nothing said."""
    with pytest.raises(ValueError, match=r"(?i)twice|more than once|repeat|duplicate"):
        small_config(terms=("c2c", "c2p", "c2p"))


@pytest.mark.parametrize("value", [-0.02, "0.02"])
def test_initializer_range_is_checked_with_the_other_fields(value):
    """Today accepted by the config; the model then fails inside torch.nn.init (RuntimeError / TypeError)."""
    with pytest.raises((ValueError, TypeError), match="initializer_range"):
        small_config(initializer_range=value)


@pytest.mark.parametrize("field, value, words", [
    ("num_attention_heads", 3, "num_attention_heads"),  # today: unflatten error 20 frames deep, at forward
    ("emd", "no", "true or false"),  # today: the string is truthy, an EMD is built
    ("terms", "c2c", "term"),  # today: KeyError: 'c' deep inside attention
])
def test_a_config_edited_after_it_was_made_is_checked_when_a_model_is_built(field, value, words):
    config = small_config()
    setattr(config, field, value)
    with pytest.raises(ValueError, match=words):
        de.DebertaForMaskedLM(config)(ids())


# ----------------------------------------------------------------------------- model inputs


def test_an_empty_batch_gives_empty_logits_or_a_clear_error():
    """Today: RuntimeError 'cannot reshape tensor of 0 elements' from attention.py, 23 frames deep."""
    model = de.DebertaForMaskedLM(small_config()).eval()
    try:
        out = model(ids()[:0])
    except ValueError as err:
        assert "batch" in str(err)
    else:
        assert out.logits.shape == (0, 10, 100)


@pytest.mark.parametrize("dtype", [torch.int16, torch.uint8])
def test_small_integer_ids_work_or_are_named(dtype):
    """Today: they pass check_ids ('an integer tensor') and fail inside nn.Embedding ('Expected ... Long, Int')."""
    model = de.DebertaForMaskedLM(small_config()).eval()
    try:
        out = model(ids().to(dtype))
    except (ValueError, TypeError) as err:
        assert "input_ids" in str(err)
    else:
        assert out.logits.shape == (2, 10, 100)


def test_emd_select_of_another_shape_is_refused():
    """Today a (2, 9) select for a (2, 10) batch silently decodes 18 rows, some of them the wrong tokens."""
    enc = de.DebertaModel(small_config()).eval()
    state = enc(ids()).encoder_state
    with pytest.raises(ValueError, match="select"):
        de.EnhancedMaskDecoder()(enc.encoder.layers[-1], state, select=torch.ones(2, 9, dtype=torch.bool))


def test_emd_on_an_encoder_without_absolute_positions_says_so():
    """Today: TypeError: unsupported operand type(s) for +: 'NoneType' and 'Tensor'."""
    enc = de.DebertaModel(small_config(emd=False)).eval()
    state = enc(ids()).encoder_state
    with pytest.raises(ValueError, match="position"):
        de.EnhancedMaskDecoder()(enc.encoder.layers[-1], state)


def test_naive_attention_refuses_a_batch():
    """naive_attention takes one sequence (L, D); a batch (B, L, D) today gives 'mat1 and mat2 shapes cannot be
    multiplied (2x4 and 2x4)' from inside the loops."""
    config = de.make_config("tiny", vocab_size=100, hidden_size=8, num_attention_heads=2, intermediate_size=16,
                            max_position_embeddings=64, position_buckets=-1, max_relative_positions=4)
    attention = de.DisentangledSelfAttention(config)
    hidden, table = torch.randn(2, 5, 8), torch.randn(8, 8)
    with pytest.raises(ValueError, match="hidden"):
        de.naive_attention(attention, hidden, table, lambda i, j: de.relative_distance(i, j, 4))


def test_relative_distances_need_whole_numbers():
    """Today relative_distance_matrix(3.5, k=2) returns a 4 x 4 *float* matrix, and relative_distance accepts
    k=2.5."""
    with pytest.raises((TypeError, ValueError)):
        de.relative_distance_matrix(3.5, k=2)
    with pytest.raises((TypeError, ValueError)):
        de.relative_distance(3, 7, k=2.5)


def test_mask_tokens_refuses_word_starts_shorter_than_the_vocabulary():
    """Today ids past the end of word_starts are silently looked up at its last entry (a clamp)."""
    word_starts = torch.zeros(100, dtype=torch.bool)
    word_starts[::2] = True
    with pytest.raises(ValueError, match="word_starts"):
        de.mask_tokens(ids(), vocab_size=100, mask_token_id=4, special_token_ids=[0, 1, 2, 3, 4],
                       word_starts=word_starts[:10])


# ----------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("config", [{"hidden_size": 33}, [1, 2]])
def test_a_bad_config_in_a_checkpoint_names_the_file(tmp_path, config):
    """Today: 'hidden_size (33) must be a multiple of num_attention_heads (4)' (which file?) or an AttributeError."""
    model = de.DebertaForMaskedLM(small_config())
    path = tmp_path / "model.safetensors"
    safetensors.torch.save_file(model.state_dict(), str(path), metadata={"config": json.dumps(config), "kind": "mlm"})
    with pytest.raises(ValueError, match=re.escape(str(path))):
        de.load_pretrained(tmp_path)


def test_save_pretrained_to_the_file_path_that_load_pretrained_accepts(tmp_path):
    """load_pretrained takes a folder or its model.safetensors; save_pretrained given the file path today raises
    FileExistsError from pathlib (and, for a new name, makes a folder called *.safetensors)."""
    model = de.DebertaForMaskedLM(small_config())
    de.save_pretrained(model, tmp_path)
    try:
        de.save_pretrained(model, tmp_path / "model.safetensors")
    except ValueError as err:
        assert "folder" in str(err)
    else:
        assert (tmp_path / "model.safetensors").is_file()
        de.load_pretrained(tmp_path)


def test_load_pretrained_on_a_transformers_folder_points_at_from_hf(tmp_path):
    """Today: 'has no deberta_edu config ...; was it written by save_pretrained?': it was, by transformers'."""
    model = de.DebertaForMaskedLM(small_config())
    safetensors.torch.save_file(model.state_dict(), str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "deberta-v2"}))
    with pytest.raises(ValueError, match="from_hf"):
        de.load_pretrained(tmp_path)


HF_CONFIG = {"model_type": "deberta-v2", "vocab_size": 100, "hidden_size": 32, "num_hidden_layers": 1,
             "num_attention_heads": 2, "intermediate_size": 64}


@pytest.mark.parametrize("name", ["model.safetensors", "pytorch_model.bin"])
def test_from_hf_names_a_damaged_weights_file(tmp_path, name):
    """Today: safetensors' 'Error while deserializing header: incomplete metadata, file not fully covered', or
    'OSError: [Errno 22] Invalid argument' for a cut pytorch_model.bin; neither names the file."""
    (tmp_path / "config.json").write_text(json.dumps(HF_CONFIG))
    state = {"embeddings.word_embeddings.weight": torch.zeros(100, 32)}
    if name.endswith(".bin"):
        torch.save(state, tmp_path / name)
    else:
        safetensors.torch.save_file(state, str(tmp_path / name))
    blob = (tmp_path / name).read_bytes()
    (tmp_path / name).write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match=re.escape(name)):
        de.from_hf(tmp_path)


def test_from_hf_of_a_deberta_edu_model_says_it_is_one_already():
    """Today: AttributeError: 'bool' object has no attribute 'lower'."""
    with pytest.raises(TypeError, match=r"deberta_edu|already|to_hf"):
        de.from_hf(de.DebertaModel(small_config()))


# ----------------------------------------------------------------------------- command lines


def _tokenizer_of_another_vocabulary(folder):
    de.save_pretrained(de.DebertaForMaskedLM(small_config()), folder)  # vocab 100
    (folder / "tokenizer.model").write_bytes((COURSE / "tokenizer.model").read_bytes())  # vocab 8000


def test_finetune_refuses_a_model_and_tokenizer_of_different_vocabularies(tmp_path, monkeypatch):
    """Today the command starts fine-tuning and dies with a raw traceback (input_ids contains 402, but ids must
    lie in [0, 99]) after writing its journal."""
    from deberta_edu.training import finetune

    folder = tmp_path / "encoder"
    _tokenizer_of_another_vocabulary(folder)

    def trained(*args, **kwargs):
        raise AssertionError("fine-tuning started with a model and a tokenizer that do not belong together")

    monkeypatch.setattr(finetune, "compare", trained)
    with pytest.raises(SystemExit, match="vocab"):
        finetune.main(["--encoder", str(folder), "--out", str(tmp_path / "r.json"), "--seeds", "0", "--lams", "0"])


def test_finetune_does_not_silently_replace_results_of_other_settings(tmp_path, monkeypatch):
    """Today the results JSON at --out (by default the committed results/sift/results.json that lesson 5 reads) is
    replaced by a run of any other settings, e.g. the README's --random-init command run without its --out.
    pretrain and recipe refuse the same mistake and offer --overwrite."""
    from deberta_edu.training import finetune

    monkeypatch.setattr(finetune, "compare", lambda *a, **k: {0.0: {"mean": 0.5, "std": 0.0, "test": [0.5]}})
    out = tmp_path / "results.json"
    before = json.dumps({"command": "python -m deberta_edu.finetune", "seeds": [0, 1, 2],
                         "test_accuracy": {"lambda=0.0": {"mean": 0.8}, "lambda=1.0": {"mean": 0.81}}})
    out.write_text(before)
    with pytest.raises(SystemExit):
        finetune.main(["--encoder", str(COURSE), "--out", str(out), "--seeds", "7", "--lams", "0", "--random-init"])
    assert out.read_text() == before


def test_recipe_refuses_a_seed_given_twice(tmp_path, monkeypatch):
    """Today every arm is trained twice on the same seed, and the table's means and Welch p count both runs.
    (finetune already refuses repeated seeds.)"""
    from deberta_edu.training import recipe

    def trained(*args, **kwargs):
        raise AssertionError("the recipe started training with a repeated seed")

    monkeypatch.setattr(recipe, "run", trained)
    with pytest.raises(SystemExit, match="seed"):
        recipe.main(["--seeds", "0", "0", "--out", str(tmp_path)])


BENCH_SMALL = ["--hidden", "32", "--layers", "1", "--heads", "2", "--ffn", "64", "--vocab", "100", "--rounds", "1",
               "--warmup", "0", "--batch", "1", "--length", "16", "--threads", "1"]


def _no_benchmark(monkeypatch):
    from deberta_edu.training import bench

    def built(*args, **kwargs):
        raise AssertionError("the benchmark ran before its command line was checked")

    monkeypatch.setattr(bench, "build", built)
    return bench


def test_bench_json_that_is_a_folder_is_refused_before_the_benchmark(tmp_path, monkeypatch, one_thread):
    """Today the benchmark runs to the end, then open(--json, 'w') raises IsADirectoryError: the numbers are lost."""
    bench = _no_benchmark(monkeypatch)
    with pytest.raises(SystemExit, match="--json"):
        bench.main([*BENCH_SMALL, "--json", str(tmp_path)])


@pytest.mark.parametrize("buckets", ["1", "2000"])
def test_bench_buckets_the_model_cannot_use_are_one_line(monkeypatch, buckets, one_thread):
    """Today DebertaConfig's ValueError escapes as a traceback from deberta_edu/model/config.py."""
    bench = _no_benchmark(monkeypatch)
    with pytest.raises(SystemExit, match="buckets"):
        bench.main([*BENCH_SMALL, "--buckets", buckets])


def test_reproduce_refuses_negative_threads_before_any_work():
    """Today --threads -1 is accepted; the baselines run, then a worker dies with 'set_num_threads expects a
    positive integer', which does not name --threads."""
    from deberta_edu.ablation.run import on_this_machine

    with pytest.raises(ValueError, match="threads"):
        on_this_machine("smoke", threads=-1)


def test_resume_before_the_first_checkpoint_says_it_starts_at_step_0(tmp_path, capsys):
    """A run cut before its first checkpoint leaves a log and no state: --resume starts it again, and says so
    (before, only the progress bar's 0 told)."""
    from deberta_edu.facts import LOG_FILE
    from deberta_edu.training import pretrain

    out = tmp_path / "run"
    out.mkdir()
    (out / LOG_FILE).write_text('{"kind": "train", "step": 1}\n')
    pretrain.main(["--config", "debug", "--steps", "2", "--resume", "--out", str(out), "--no-progress"])
    assert f"--resume: no checkpoint in {out} yet; starting at step 0" in capsys.readouterr().err


def test_downstream_does_not_silently_replace_results_of_other_settings(tmp_path, monkeypatch):
    """The committed results/pretraining-value/results.json (lesson 4's proof) would be replaced by a run with
    fewer seeds or parts skipped; the same command line again goes on."""
    from deberta_edu.training import downstream

    out = tmp_path / "value"
    out.mkdir()
    (out / "results.json").write_text(json.dumps({"command": "python -m deberta_edu.training.downstream"}))
    with pytest.raises(SystemExit, match=r"holds results of other settings \(--seeds, --skip-curve\).*--overwrite"):
        downstream.main(["--out", str(out), "--seeds", "2", "--skip-curve"])
    import deberta_edu.training.course as course

    monkeypatch.setattr(course, "load_course_model", lambda *a: 1 / 0)  # past the check: the work would start
    with pytest.raises(ZeroDivisionError):
        downstream.main(["--out", str(out)])
    with pytest.raises(ZeroDivisionError):
        downstream.main(["--out", str(out), "--seeds", "2", "--overwrite"])


def test_loading_a_run_cut_before_its_end_says_how_to_finish_it(tmp_path):
    """A run cut before its end holds its training state but no model.safetensors yet: the message says so and
    names --resume, instead of "pretrain writes one"."""
    from deberta_edu.facts import STATE_FILE

    (tmp_path / STATE_FILE).write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"did not finish: go on with .*--resume --out"):
        de.load_pretrained(tmp_path)


def test_mask_tokens_refuses_a_cap_of_no_predictions():
    """max_predictions=0 still masked a word per row (the spans' loop takes one before it checks the cap)."""
    with pytest.raises(ValueError, match="max_predictions"):
        de.mask_tokens(ids(), vocab_size=100, mask_token_id=4, special_token_ids=[0, 1, 2, 3, 4],
                       word_starts=torch.ones(100, dtype=torch.bool), max_predictions=0)
