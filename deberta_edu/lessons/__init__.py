"""The lessons wing: what the notebooks show. It may import every other wing; nothing imports it.

viz (pure functions → arrays and figures, per lesson), plots (training curves), widgets (sliders wired
to viz), explorer (the offline attention page; its HTML is package data), pretrained (which checkpoint
a lesson uses and how it is labelled), exercises/ (the checkers, one module per lesson).
"""
