"""``python -m tlstudio.gui.screens OUT_DIR`` drives the real window through the whole workflow."""

from __future__ import annotations

import os
import subprocess
import sys

from PIL import Image

PAGES = ("1-data.png", "2-model.png", "3-train.png", "4-evaluate.png", "5-export.png", "6-predict.png", "7-runs.png")


def test_screens_saves_a_picture_of_every_page(tmp_path):
    out = tmp_path / "screens"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [sys.executable, "-m", "tlstudio.gui.screens", "--quick", str(out)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for name in PAGES:
        with Image.open(out / name) as image:
            assert image.size == (1280, 820)
            colours = image.convert("RGB").resize((64, 64)).getcolors(64 * 64)
            assert colours is None or len(colours) > 20, f"{name} looks blank"
