"""One palette for the digits: the explorer page's live map (service/static/js/map.js) and the report's latent map
(training/report.py) both colour digit d with lvm.reports.DIGIT_COLOURS[d]."""

from __future__ import annotations

import re

import numpy as np
import torch
from matplotlib.colors import to_hex
from PIL import Image

from lvm.reports import DIGIT_COLOURS
from tests.helpers import ROOT


def test_the_page_uses_the_reports_palette():
    source = (ROOT / "service/static/js/map.js").read_text()
    page = re.search(r"export const PALETTE = \[([^\]]*)\]", source)[1]
    assert [c.upper() for c in re.findall(r'"(#[0-9A-Fa-f]{6})"', page)] == [c.upper() for c in DIGIT_COLOURS]


def test_the_report_latent_map_draws_each_digit_in_its_colour(tmp_path):
    from training.report import DIGIT_CMAP, latent_map

    assert [to_hex(DIGIT_CMAP(d)).upper() for d in range(10)] == [c.upper() for c in DIGIT_COLOURS]

    class TwoDigits:  # codes far apart: digit 0's points on the left, digit 7's on the right
        latent_dim = 2

        def encode(self, x, y=None):
            return x[:, :2], None

    y = torch.tensor([0] * 200 + [7] * 200)
    x = torch.cat([torch.randn(200, 2) * 0.1 - 2, torch.randn(200, 2) * 0.1 + 2])
    pixels = np.asarray(Image.open(latent_map(TwoDigits(), x, y, tmp_path / "latent.png", "t")).convert("RGB"))
    colours = {tuple(int(c[i:i + 2], 16) for i in (1, 3, 5)) for c in ("#0072B2", "#000000")}
    # Scatter points are drawn with alpha 0.6 over white: look for the blend of each colour.
    blended = {tuple(round(0.6 * v + 0.4 * 255) for v in c) for c in colours}
    found = {tuple(p) for p in pixels.reshape(-1, 3)}
    assert all(any(max(abs(a - b) for a, b in zip(c, f)) <= 3 for f in found) for c in blended)
    tab10_blue = tuple(round(0.6 * v + 0.4 * 255) for v in (0x1F, 0x77, 0xB4))  # matplotlib's old colour for 0
    assert not any(max(abs(a - b) for a, b in zip(tab10_blue, f)) <= 3 for f in found)
