"""bench/growth.py (issue 20): a smoke run measures every stage and writes the table and plot; bad arguments are
refused before anything is generated."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_growth_smoke_writes_the_table_and_plot(tmp_path):
    out = tmp_path / "growth.md"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "growth.py"), "--items", "300", "--stages",
                           "prepare,load,embed,kmeans,eval", "--embed-sample", "8", "--eval-users", "40", "--work",
                           str(tmp_path / "work"), "--out", str(out)], capture_output=True, text=True, cwd=ROOT,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    row = [line for line in out.read_text().splitlines() if line.startswith("| 300 |")]
    assert len(row) == 1, out.read_text()
    cells = [c.strip() for c in row[0].strip("|").split("|")]
    users, interactions = int(cells[1].replace(",", "")), int(cells[2].replace(",", ""))
    assert users == 300 and interactions >= 5 * 300  # one user per item, 5-core sequences
    assert "texts/s)" in cells[7] and "failed" not in row[0]
    seconds = [float(cells[i].split()[0]) for i in (3, 5, 7, 9, 11)]
    rss = [float(cells[i].split(" / ")[0]) for i in (4, 6, 8, 10, 12)]
    assert float(cells[8].split(" / ")[1]) >= rss[2]  # embed: the model's peak, then the whole stage's
    assert min(seconds) >= 0 and min(rss) > 0
    assert (tmp_path / "work" / "n300" / "data" / "Synthetic" / "codes" / "growth-kmeans").is_dir()
    assert out.with_suffix(".png").stat().st_size > 1000
    assert "Cells measured at commit" in out.read_text()
    # a second call reuses the cells kept under --work, but for the stages named in --remeasure
    again = subprocess.run([sys.executable, str(ROOT / "bench" / "growth.py"), "--items", "300", "--stages",
                            "prepare,load,embed,kmeans,eval", "--embed-sample", "8", "--eval-users", "40", "--work",
                            str(tmp_path / "work"), "--remeasure", "kmeans", "--out", str(out)],
                           capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert again.returncode == 0, again.stderr[-2000:]
    reused = {line.split()[1] for line in again.stdout.splitlines() if "(measured earlier)" in line}
    assert reused == {"prepare", "load", "embed", "eval"}
    kept = [line for line in out.read_text().splitlines() if line.startswith("| 300 |")][0]
    assert kept.split("|")[4:6] == row[0].split("|")[4:6]  # prepare's cell as measured the first time


def test_bad_growth_arguments_are_refused(tmp_path):
    for args, message in ((["--stages", "prepare,train"], "--stages: known prepare"), (["--items", "ten"], "--items"),
                          (["--items", "50"], "--items >= 100"),
                          (["--remeasure", "train"], "--remeasure: all or stages")):
        done = subprocess.run([sys.executable, str(ROOT / "bench" / "growth.py"), *args, "--work",
                               str(tmp_path / "work"), "--out", str(tmp_path / "x.md")], capture_output=True,
                              text=True, cwd=ROOT, timeout=120)
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
        assert not (tmp_path / "work").exists() and not (tmp_path / "x.md").exists()
