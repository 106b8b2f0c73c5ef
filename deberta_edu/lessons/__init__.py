"""The lessons wing: what the notebooks show. It may import every other wing; nothing imports it.

viz/ (pure functions → arrays and figures, one module per lesson), plots (training curves), widgets
(sliders wired to viz), explorer (the offline attention page; its HTML, explorer.html, is package data),
pretraining_view (lesson 4's rows, masks and guesses as text), pretrained (which checkpoint a lesson uses
and how it is labelled), exercises/ (the checkers, one module per lesson).
"""
