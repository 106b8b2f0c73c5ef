"""The training wing: it imports the model and the data, never the lessons.

masking (80/10/10, whole-word spans) → engine (seeds, DDP, optimizer, schedule, precision, the step,
logs and resumable state) → pretrain (configs, data, loop, CLI); sift (adversarial fine-tuning),
finetune (classification runs), bench (our step against transformers').
"""
