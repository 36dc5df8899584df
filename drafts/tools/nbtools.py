"""Build notebooks from cell lists: md(text), code(text, tags=()), colab(), write(path, cells)."""
import json, textwrap, nbformat

COLAB = '''# Set-up. In Colab this installs embedlessons (release v0.2.0) from the book's
# repository, and data then come from the Hugging Face hub. On a local checkout,
# where the package is installed, it does nothing.
import sys
if "google.colab" in sys.modules:
    %pip install -q "embedlessons[colab] @ git+https://github.com/embedlessons/embedlessons@v0.2.0"'''


def md(text):
    return nbformat.v4.new_markdown_cell(textwrap.dedent(text).strip("\n"))


def code(text, tags=()):
    c = nbformat.v4.new_code_cell(textwrap.dedent(text).strip("\n"))
    if tags:
        c.metadata["tags"] = list(tags)
    return c


def colab():
    return code(COLAB, tags=["colab-setup", "hide-input"])


def write(path, cells):
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                   "language_info": {"name": "python", "version": "3.11.7"}}
    for i, c in enumerate(cells):
        c["id"] = f"c{i:03d}"
    nb.cells = cells
    nbformat.write(nb, path)
