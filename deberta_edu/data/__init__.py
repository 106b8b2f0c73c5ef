"""The data wing: text from packages to fixed-length rows of ids. It never imports the model.

text (cleaning, licences) → corpus (sources, splits; large_corpus builds the big one) → tokenizer
(SentencePiece unigram) → packing (rows of [CLS] … [SEP] in memory-mapped arrays) → shards (checked .tar.xz
archives for offline machines), all writing through the shared ``deberta_edu.files`` (atomic writes and build
locks); sentiment
(lesson 5's labelled snippets); batch (one Batch type for MLM and classification).
"""
