"""The training wing: it imports the model and the data, never the lessons.

masking (80/10/10, whole-word spans) → engine (seeds, DDP, optimizer, schedule, precision, the step)
→ state (logs, resumable state) → configs (the named runs) → mlm_data (rows, masks, micro-batches)
→ pretrain (evaluation, the loop, CLI); sift (adversarial fine-tuning), finetune (classification
runs), bench (our step against transformers'). Pretraining and SiFT fine-tuning read the one
``data.batch.Batch``; the document fine-tuning of ``documents`` and the probes of ``probe`` have their own.
"""
