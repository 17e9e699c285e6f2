"""Regenerate the figures under docs/ that the README shows.

    python experiments/docs_figures.py

Runs each experiment with its documented command (``implicit-bias experiment=NAME``) into a
temporary sweep directory and copies the figure it produced to ``docs/NAME.png``, reduced to
a 256-colour palette so the committed files stay small.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
FIGURES = {  # experiment: the figure of its sweep directory that shows its point
    "homework": "sweep_trajectories.png",
    "lr_sweep": "sweep_schedule.lr.png",
    "sign_schedules": "sweep_trajectories.png",
    "eps_sweep": "sweep_optimizer.eps.png",
    "p_sweep": "sweep_optimizer.p.png",
    "separating": "sweep_references.png",
}


def main() -> None:
    (ROOT / "docs").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for experiment, figure in FIGURES.items():
            sweep_dir = Path(tmp) / experiment
            subprocess.run(
                [sys.executable, "-m", "implicit_bias", f"experiment={experiment}", f"hydra.sweep.dir={sweep_dir}"],
                check=True, cwd=tmp, stdout=subprocess.DEVNULL,
            )
            target = ROOT / "docs" / f"{experiment}.png"
            Image.open(sweep_dir / figure).convert("RGB").quantize(256).save(target, optimize=True)
            print(f"{target.relative_to(ROOT)}: {target.stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main()
