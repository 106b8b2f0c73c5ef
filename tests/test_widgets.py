"""widgets: moving a control from code redraws the picture and updates the data behind it."""

import numpy as np
import torch

from deberta_edu import DebertaModel, make_config, viz
from deberta_edu import widgets as w


def test_delta_widget_follows_its_sliders():
    panel = w.delta_widget(length=8, k=2)
    assert set(panel.controls) == {"length", "k"}
    png, data = panel.image.value, panel.data
    assert png[:4] == b"\x89PNG" and data.shape == (8, 8) and data.max() == 3
    panel.controls["k"].value = 9
    assert panel.data.max() == 16  # L = 8 <= k: the top row 2k − 1 = 17 is never reached
    assert panel.image.value != png
    png = panel.image.value
    panel.controls["length"].value = 14
    assert panel.data.shape == (14, 14) and panel.data.max() == 17
    assert np.array_equal(panel.data, viz.delta_matrix(14, 9))
    assert panel.image.value != png
    assert panel.message.value == ""
    panel.controls["k"].value = 1  # the lesson's question: two rows, "is the key to my right?"
    i, j = np.indices((14, 14))
    assert np.array_equal(panel.data, (j <= i).astype(panel.data.dtype))


def test_bucket_widget_counts_and_reports_bad_settings():
    panel = w.bucket_widget(length=2048, k=512, position_buckets=256)
    assert list(panel.data) == [1024, 512]
    png = panel.image.value
    panel.controls["position_buckets"].value = 32
    assert list(panel.data) == [1024, 64]
    assert panel.image.value != png
    panel.controls["position_buckets"].value = 256
    png, data = panel.image.value, panel.data
    panel.controls["k"].value = 64  # 64 <= 256 / 2 + 1: log buckets have nothing to bucket
    assert "max_relative_positions" in panel.message.value
    assert panel.image.value == png and panel.data is data  # the last valid picture stays
    panel.controls["k"].value = 512
    assert panel.message.value == ""


def test_attention_widget_switches_maps():
    torch.manual_seed(0)
    cfg = make_config(
        "tiny", vocab_size=20, initializer_range=0.1, position_buckets=-1, max_relative_positions=3
    )
    maps = viz.attention_maps(DebertaModel(cfg).eval(), torch.randint(5, 20, (6,)), tokens=list("abcdef"))
    panel = w.attention_widget(maps)
    assert list(panel.controls["kind"].options) == ["c2c", "c2p", "p2c", "sum", "probs"]
    seen = {panel.image.value}
    assert np.array_equal(panel.data, maps.get(0, 0, "sum"))
    panel.controls["kind"].value = "c2p"
    assert np.array_equal(panel.data, maps.get(0, 0, "c2p"))
    seen.add(panel.image.value)
    panel.controls["head"].value = 1
    assert np.array_equal(panel.data, maps.get(0, 1, "c2p"))
    seen.add(panel.image.value)
    panel.controls["layer"].value = 1
    panel.controls["kind"].value = "probs"
    np.testing.assert_allclose(panel.data.sum(-1), 1.0, rtol=1e-5)
    seen.add(panel.image.value)
    assert len(seen) == 4


def test_shift_widget():
    torch.manual_seed(0)
    kw = {"vocab_size": 20, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    rel = DebertaModel(make_config("tiny", "no_emd", **kw)).eval()
    bert = DebertaModel(make_config("tiny", "bert", **kw)).eval()
    runs = {
        "relative": lambda x, m: rel(x, m).last_hidden_state,
        "bert": lambda x, m: bert(x, m).last_hidden_state,
    }
    panel = w.shift_widget(runs, torch.randint(5, 20, (5,)), list("abcde"), shift=0, models="random weights")
    assert panel.data["bert"].max() == 0
    png = panel.image.value
    panel.controls["shift"].value = 4
    assert panel.data["relative"].max() < 1e-5 < panel.data["bert"].min()
    assert panel.image.value != png
