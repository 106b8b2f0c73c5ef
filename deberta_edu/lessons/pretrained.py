"""Which pretrained model the lessons use, found or (quickly) made."""

from __future__ import annotations

from deberta_edu.data.tokenizer import load_tokenizer
from deberta_edu.facts import MODEL_FILE, TOKENIZER_FILE
from deberta_edu.model.checkpoint import describe_checkpoint, lesson_checkpoint, load_pretrained


def pretrained_for_lessons(name: str = "lesson4", progress: bool = False):
    """(model, tokenizer, origin): lesson 4's checkpoint if it exists, else a smoke-size pretraining now.

    The smoke pretraining (about 20 s on 2 CPU cores) is saved where lesson 4 saves its model, so it
    is made once; running lesson 4 at full size replaces it with a better model.
    """
    folder = lesson_checkpoint(name)
    if not ((folder / MODEL_FILE).exists() and (folder / TOKENIZER_FILE).exists()):
        from deberta_edu.training.configs import get_config
        from deberta_edu.training.mlm_data import prepare_data
        from deberta_edu.training.pretrain import train

        cfg = get_config(name, smoke=True)
        train_data, val_data, tokenizer = prepare_data(cfg)
        train(cfg, train_data, val_data, tokenizer=tokenizer, out_dir=folder, progress=progress)
    model = load_pretrained(folder)
    tokenizer = load_tokenizer(folder / TOKENIZER_FILE)
    return model, tokenizer, describe_checkpoint(folder)
