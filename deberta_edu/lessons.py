"""What several lessons share: the pretrained model of lesson 4, found or (quickly) made."""

from __future__ import annotations

import json

from .checkpoint import MODEL_FILE, TOKENIZER_FILE, lesson_checkpoint, load_pretrained
from .tokenizer import load_tokenizer


def pretrained_for_lessons(name: str = "lesson4", progress: bool = False):
    """(model, tokenizer, origin): lesson 4's checkpoint if it exists, else a smoke-size pretraining now.

    The smoke pretraining (about 20 s on 2 CPU cores) is saved where lesson 4 saves its model, so it
    is made once; running lesson 4 at full size replaces it with a better model.
    """
    folder = lesson_checkpoint(name)
    if not ((folder / MODEL_FILE).exists() and (folder / TOKENIZER_FILE).exists()):
        from .pretrain import get_config, prepare_data, train

        cfg = get_config(name, smoke=True)
        train_data, val_data, tokenizer = prepare_data(cfg)
        train(cfg, train_data, val_data, tokenizer=tokenizer, out_dir=folder, progress=progress)
    model = load_pretrained(folder)
    tokenizer = load_tokenizer(folder / TOKENIZER_FILE)
    origin = f"checkpoint {folder.name}"
    config_file = folder / "train_config.json"
    if config_file.exists():
        cfg = json.loads(config_file.read_text())
        steps = f"{cfg.get('steps')} steps of {cfg.get('batch_size')} x {cfg.get('seq_length')} tokens"
        origin = f"{cfg.get('name')} ({steps}, {cfg.get('source')}), checkpoint {folder.name}"
    return model, tokenizer, origin
