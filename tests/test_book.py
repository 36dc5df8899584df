"""The book's structure: one URL for the repository, every notebook in the TOC once, GPU cells
that the book build and nbval both skip without CUDA, and no logic hidden in notebooks' set-up."""
import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").rglob("*.ipynb"))
NOTEBOOKS = [p for p in NOTEBOOKS if ".ipynb_checkpoints" not in p.parts]


def _cells(path):
    return json.loads(path.read_text())["cells"]


def _toc_files(node):
    if isinstance(node, dict):
        files = [node["file"]] if "file" in node else []
        for value in node.values():
            files += _toc_files(value)
        return files
    if isinstance(node, list):
        return [f for item in node for f in _toc_files(item)]
    return []


def test_every_notebook_is_in_the_toc_exactly_once():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]] + _toc_files(toc["parts"])
    assert len(files) == len(set(files)), "a page is listed twice"
    listed = {f for f in files if f.startswith("notebooks/")}
    present = {str(p.relative_to(ROOT).with_suffix("")) for p in NOTEBOOKS}
    assert listed == present
    for f in files:
        assert (ROOT / f"{f}.md").exists() or (ROOT / f"{f}.ipynb").exists(), f


def test_setup_cells_install_from_the_configured_repository():
    url = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    assert url.startswith("https://")
    for path in NOTEBOOKS:
        setup = [c for c in _cells(path) if "colab-setup" in c["metadata"].get("tags", [])]
        assert len(setup) == 1, f"{path.name}: expected one set-up cell"
        source = "".join(setup[0]["source"])
        assert f"git+{url}" in source, f"{path.name}: set-up cell does not install from {url}"
        assert '"google.colab" in sys.modules' in source, f"{path.name}: set-up must do nothing outside Colab"


def test_gpu_cells_are_skipped_by_the_book_build_too():
    for path in NOTEBOOKS:
        for cell in _cells(path):
            tags = cell["metadata"].get("tags", [])
            if "gpu" in tags:
                assert "skip-execution" in tags, f"{path.name}: gpu cell without skip-execution"
                assert not cell.get("outputs"), f"{path.name}: gpu cell with stored CPU outputs"
                # no stored output to compare with: on a GPU machine nbval runs the cell and must not
                # fail on "unexpected output fields"
                assert "nbval-ignore-output" in tags, f"{path.name}: gpu cell without nbval-ignore-output"


def test_notebooks_have_stored_outputs_and_no_errors():
    for path in NOTEBOOKS:
        code = [c for c in _cells(path) if c["cell_type"] == "code"]
        assert any(c.get("outputs") for c in code), f"{path.name}: run it and save the outputs"
        for cell in code:
            for out in cell.get("outputs", []):
                assert out["output_type"] != "error", f"{path.name}: stored error output"
                if out["output_type"] == "stream":
                    assert "%|" not in out["text"], f"{path.name}: a progress bar in a stored output"


def test_each_notebook_checks_its_claims_and_ends_with_takeaways():
    for path in NOTEBOOKS:
        cells = _cells(path)
        text = "".join("".join(c["source"]) for c in cells)
        if "summary" in path.name:
            assert "{exercise}" in text
        else:
            assert re.search(r"^assert ", text, re.M), f"{path.name}: no checked claim"
            assert "## Takeaways" in text, f"{path.name}: no takeaway section"

