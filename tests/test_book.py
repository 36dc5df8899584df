"""The book's structure: one URL for the repository, every notebook in the TOC once, GPU cells
that the book build and nbval both skip without CUDA, and no logic hidden in notebooks' set-up."""
import json
import re
import sys
from pathlib import Path

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


def _project():
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def setup_cell_source() -> str:
    """The one set-up cell every notebook starts with: in Colab, ``%pip install`` (so a failure shows pip's
    message) of the package at the release tag ``v<version>`` from the repository URL in ``_config.yml``."""
    url = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    tag = "v" + _project()["version"]
    return ("# Set-up. In Colab this installs embedlessons (release " + tag + ") from the book's\n"
            "# repository, and data then come from the Hugging Face hub. On a local checkout,\n"
            "# where the package is installed, it does nothing.\n"
            "import sys\n"
            "if \"google.colab\" in sys.modules:\n"
            f"    %pip install -q \"embedlessons[colab] @ git+{url}@{tag}\"")


def test_setup_cells_install_a_pinned_release_from_the_configured_repository():
    url = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    assert url.startswith("https://")
    expected = setup_cell_source()
    for path in NOTEBOOKS:
        setup = [c for c in _cells(path) if "colab-setup" in c["metadata"].get("tags", [])]
        assert len(setup) == 1, f"{path.name}: expected one set-up cell"
        assert _cells(path).index(setup[0]) <= 1, f"{path.name}: the set-up cell must come first"
        assert "".join(setup[0]["source"]) == expected, f"{path.name}: set-up cell differs from setup_cell_source()"


def _notebook_imports() -> set[str]:
    modules = set()
    for path in NOTEBOOKS:
        for cell in _cells(path):
            if cell["cell_type"] == "code":
                for line in "".join(cell["source"]).splitlines():
                    m = re.match(r"\s*(?:from|import)\s+([A-Za-z_][\w]*)", line)
                    if m:
                        modules.add(m.group(1))
    return modules


#: what a Colab runtime already has (its preinstalled packages); everything else a notebook imports must come
#: from the package's dependencies or its [colab] extra
COLAB_PROVIDES = {"numpy", "matplotlib", "torch", "transformers", "scipy", "sklearn", "pandas", "yaml", "IPython",
                  "tqdm", "requests"}


def test_colab_extra_covers_what_the_notebooks_import():
    import importlib.metadata as md

    project = _project()
    declared = project["dependencies"] + project["optional-dependencies"]["colab"]
    names = {re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0].lower().replace("_", "-") for d in declared}
    dists = md.packages_distributions()
    missing = []
    for module in sorted(_notebook_imports()):
        if module in sys.stdlib_module_names or module in COLAB_PROVIDES or module == "embedlessons":
            continue
        providers = {d.lower().replace("_", "-") for d in dists.get(module, [module])}
        if not providers & names:
            missing.append(f"{module} (from {sorted(providers)})")
    assert not missing, f"notebooks import modules that neither the dependencies nor [colab] provide: {missing}"
    # Colab preinstalls an older sentence-transformers: the extra must ask for the version the code needs
    book_st = [d for d in project["optional-dependencies"]["book"] if d.startswith("sentence-transformers")]
    colab_st = [d for d in project["optional-dependencies"]["colab"] if d.startswith("sentence-transformers")]
    assert colab_st and [d.split("#")[0].strip() for d in colab_st] == [d.split("#")[0].strip() for d in book_st]


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
                # "Run all" on a CPU runtime must not stop here: the cell checks for CUDA itself
                assert "if full_size_here(" in "".join(cell["source"]), f"{path.name}: gpu cell without full_size_here"


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

