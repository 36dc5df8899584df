"""nbval must fail when a notebook's stored output no longer matches what its code prints.

We copy a real notebook, change one printed number in its stored output by one unit in the last
printed digit, and run nbval on the copy in a subprocess: it must fail, and point at that number.
(The unchanged notebook passing is the ordinary nbval run of notebooks/.)
"""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "part1" / "1_4_landscape.ipynb"


def test_nbval_fails_on_a_changed_stored_number(tmp_path):
    nb = json.loads(NOTEBOOK.read_text())
    changed = False
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            text = "".join(out.get("text", ""))
            # the quality table: MiniLM's STS-B Spearman, 0.820 (MTEB: 82.0)
            if out.get("output_type") == "stream" and "STS-B Spearman" in text and "0.820" in text \
                    and not changed:
                out["text"] = text.replace("0.820", "0.821")
                changed = True
    assert changed, "the quality table was not found in the stored outputs"
    broken = tmp_path / NOTEBOOK.name
    broken.write_text(json.dumps(nb))

    env = dict(os.environ, TQDM_DISABLE="1", EMBEDLESSONS_PROFILE="cpu")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", str(broken), "--nbval", "--nbval-current-env", "-p", "no:cacheprovider",
         "-o", "addopts=", "--rootdir", str(tmp_path), "-x", "-q"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert "1 failed" in output, output[-3000:]
    assert "0.821" in output and "0.820" in output, output[-3000:]
