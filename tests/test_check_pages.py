"""Tests of .ci/check_pages.py, the headless-browser check of the built book.

The pure-HTML part (``parse(dom) -> problems``) is tested on small synthetic pages without a browser;
the browser part runs Chromium on synthetic pages in a temporary folder and is skipped where no
Chromium is installed (install it with .ci/install_chromium.sh).
"""

from __future__ import annotations

import importlib.util
import struct
import sys
import zlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load_check_pages():
    spec = importlib.util.spec_from_file_location("check_pages", REPO / ".ci" / "check_pages.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_pages"] = module  # dataclasses look the module up while it executes
    spec.loader.exec_module(module)
    return module


check_pages = _load_check_pages()
parse = check_pages.parse

CHROMIUM = check_pages.find_chromium()
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (.ci/install_chromium.sh)")


def _packaged_mathjax() -> Path | None:
    """tex-chtml.js from the sphinx-mathjax-offline package (what the book serves), if installed."""
    spec = importlib.util.find_spec("sphinx-mathjax-offline")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "static" / "mathjax" / "tex-chtml.js"
    return path if path.is_file() else None


MATHJAX = _packaged_mathjax()

LOCAL_MATHJAX = '<script defer src="_static/mathjax/tex-chtml.js"></script>'
TYPESET = '<span class="math notranslate nohighlight"><mjx-container class="MathJax">x</mjx-container></span>'


def png_bytes(width: int = 2, height: int = 1) -> bytes:
    """A valid RGB PNG of the given size (white pixels), written with the standard library."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\x00" + b"\xff\xff\xff" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def page(body: str, head: str = "", html_attrs: str = "") -> str:
    return f"<!DOCTYPE html>\n<html{html_attrs}><head><title>t</title>{head}</head><body>{body}</body></html>"


def kinds(problems) -> list[str]:
    return [p.kind for p in problems if p.fatal]


# ------------------------------------------------------------------ parse(dom): no browser needed

def test_raw_inline_and_display_math_in_prose_are_failures():
    problems = parse(page("<h2>The ceiling</h2><p>The loss never falls below \\(\\log(K+1)\\).</p>"
                          "<p>Display: $$x^2$$</p><div>\\[ y \\]</div>"), "p.html")
    assert kinds(problems) == ["raw-tex", "raw-tex", "raw-tex"]
    assert "\\log(K+1)" in problems[0].detail and "The ceiling" in problems[0].detail
    assert str(problems[0]).startswith("FAIL p.html: [raw-tex]")


def test_raw_glue_and_cite_roles_are_failures():
    problems = parse(page("<p>NDCG@10 is {glue:text}`ndcg:.3f` here.</p>"
                          "<p>As shown by {cite}<code>oord2018</code>.</p>"
                          "<p>See {numref}`fig-1`.</p>"))
    assert kinds(problems) == ["raw-role", "raw-role", "raw-role"]
    assert "{glue:text}" in problems[0].detail and "{cite}" in problems[1].detail


def test_tex_and_roles_inside_code_and_typeset_math_are_fine():
    body = ("<pre>print('\\(x\\) $$ {glue:text}`a`')</pre><p>Use <code>{cite}`key`</code> and <code>$$</code>.</p>"
            '<div class="highlight"><span>\\[</span></div>'
            f"<p>Typeset: {TYPESET}</p>")
    assert parse(page(body, LOCAL_MATHJAX)) == []


def test_images_missing_empty_undecodable_or_remote_are_failures(tmp_path: Path):
    (tmp_path / "good.png").write_bytes(png_bytes())
    (tmp_path / "empty.png").write_bytes(b"")
    body = ('<img src="good.png" data-check-natural-width="2"><img src="missing.png">'
            '<img src="empty.png"><img src="good.png" data-check-natural-width="0">'
            '<img src="https://example.org/badge.svg"><img src="data:image/png;base64,">')
    problems = parse(page(body), "p.html", tmp_path / "p.html")
    details = [p.detail for p in problems]
    assert kinds(problems) == ["image"] * 5
    assert "missing" in details[0] and "empty" in details[1] and "naturalWidth 0" in details[2]
    assert "network" in details[3] and "data:" in details[4]


def test_mathjax_from_a_cdn_is_a_failure():
    cdn = '<script defer src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"></script>'
    problems = parse(page(f"<p>{TYPESET}</p>", cdn))
    assert "mathjax" in kinds(problems)
    assert any("network" in p.detail for p in problems)


def test_math_without_mathjax_or_not_typeset_or_tex_error_are_failures():
    no_script = parse(page(f"<p>{TYPESET}</p>"))
    assert kinds(no_script) == ["mathjax"]
    not_run = parse(page('<p><span class="math">\\(x\\)</span></p>', LOCAL_MATHJAX,
                        ' data-check-mathjax="timeout"'))
    assert sorted(kinds(not_run)) == ["mathjax", "raw-tex"]
    error = parse(page('<p><span class="math"><mjx-container><mjx-merror data-mjx-error="Undefined control '
                       'sequence \\lgo"></mjx-merror></mjx-container></span></p>', LOCAL_MATHJAX))
    assert kinds(error) == ["mathjax"] and "\\lgo" in error[0].detail


def test_missing_exercise_or_solution_box_is_a_failure():
    source = ("Intro\n\n```{exercise} Write the loss\n:label: ex-loss\nDo it.\n```\n\n"
              ":::{solution-start} ex-loss\n:::\nAnswer\n:::{solution-end}\n:::\n"
              "```python\nnot_a_directive = '{exercise}'\n```\n")
    assert check_pages.count_source_directives(source) == {"exercise": 1, "solution": 1}
    boxed = ('<div class="exercise admonition" id="ex-loss"><p>Do it.</p></div>'
             '<div class="solution dropdown admonition"><p>Answer</p></div>')
    assert parse(page(boxed), source_text=source) == []
    problems = parse(page("<p>Write the loss. Do it.</p>"), source_text=source)
    assert kinds(problems) == ["exercise", "exercise"]
    assert "1 {exercise} directives" in problems[0].detail


def test_wide_code_cells_are_warnings_not_failures():
    body = ('<div class="cell_input"><pre data-check-overflow="120" data-check-kind="code blocks" '
            'data-check-chars="115" data-check-line="x = 1  # a long line">x = 1</pre></div>')
    problems = parse(page(body))
    assert [(p.kind, p.fatal) for p in problems] == [("overflow", False)]
    assert "115 characters" in problems[0].detail


def test_notebook_source_text_is_its_markdown_cells(tmp_path: Path):
    notebook = tmp_path / "n.ipynb"
    notebook.write_text('{"cells": [{"cell_type": "markdown", "source": ["```{exercise} A\\n", "```"]},'
                        '{"cell_type": "code", "source": ["# ```{exercise} not markdown"]}]}')
    assert check_pages.count_source_directives(check_pages.read_source_text(notebook)) == {
        "exercise": 1, "solution": 0}


# ------------------------------------------------------------------ in headless Chromium

@pytest.fixture
def book(tmp_path: Path) -> Path:
    """A tiny 'built book': one bad page, one clean page, one page with math (MathJax served locally)."""
    (tmp_path / "good.png").write_bytes(png_bytes(3, 2))
    (tmp_path / "corrupt.png").write_bytes(b"this is not a PNG")
    (tmp_path / "bad.html").write_text(page(
        "<h1>Bad</h1><p>The loss is at least \\(\\log(K+1)\\).</p>"
        "<p>We measured {glue:text}`ndcg:.3f` on SciFact {cite}`wadden2020`.</p>"
        '<img src="missing.png" alt="a"><img src="corrupt.png" alt="b">'))
    (tmp_path / "clean.html").write_text(page(
        '<h1>Clean</h1><p>Code: <code>\\(x\\)</code></p><img src="good.png" alt="c">'))
    if MATHJAX is not None:
        (tmp_path / "math.html").write_text(page(
            '<h1>Math</h1><p>Inline <span class="math notranslate nohighlight">\\(\\log(K+1)\\)</span>.</p>',
            '<script>window.MathJax = {options: {processHtmlClass: "math"}}</script>'
            f'<script defer src="{MATHJAX.as_uri()}"></script>'))
    return tmp_path


@needs_chromium
def test_browser_check_finds_raw_math_glue_and_broken_images(book: Path):
    pages = sorted(book.glob("*.html"))
    problems, _, n_pages = check_pages.check_book(book, book, CHROMIUM, pages, screenshots=None, jobs=1)
    assert n_pages == len(pages)
    bad = [p for p in problems if p.page == "bad.html"]
    assert sorted(kinds(bad)) == ["image", "image", "raw-role", "raw-tex"]
    assert any("naturalWidth 0" in p.detail for p in bad)  # only the browser can tell
    assert [p for p in problems if p.page in ("clean.html", "math.html")] == []


@needs_chromium
@pytest.mark.skipif(MATHJAX is None, reason="sphinx-mathjax-offline is not installed")
def test_browser_check_waits_for_mathjax(book: Path):
    dom = check_pages.render_pages(CHROMIUM, [book / "math.html"], book / "work")[book / "math.html"]
    assert isinstance(dom, str)
    assert 'data-check-mathjax="ok 3.' in dom and "<mjx-container" in dom


@needs_chromium
def test_command_line_exit_status(book: Path, capsys):
    common = ["--html", str(book), "--source", str(book), "--no-screenshots", "--jobs", "1", "--pages"]
    assert check_pages.main([*common, "bad.html"]) == 1
    out = capsys.readouterr().out
    assert "FAIL bad.html: [raw-tex]" in out and "FAIL bad.html: [raw-role]" in out
    assert check_pages.main([*common, "clean.html"]) == 0


@needs_chromium
def test_screenshots_are_cut_one_per_page(book: Path):
    from PIL import Image

    pngs = {book / "shots" / "a.png": book / "clean.html", book / "shots" / "b.png": book / "bad.html"}
    assert check_pages.screenshots_of(CHROMIUM, pngs, book / "work") == {}
    for png in pngs:
        with Image.open(png) as image:
            assert image.size == (check_pages.WINDOW_WIDTH, check_pages.SCREENSHOT_HEIGHT)
            assert len(set(image.convert("L").resize((32, 40)).getdata())) > 1  # not a blank page
