#!/usr/bin/env python3
"""Open the built book in headless Chromium and check what a reader sees.

The Sphinx build (``jupyter-book build -W -n``) catches broken references, but not what only shows
once a browser has rendered a page: math that MathJax never typeset, MyST roles that reached the
page as plain text, images that do not load, exercises that lost their box. This script loads every
content page of ``_build/html`` in headless Chromium with the network switched off (as a reader of an
offline copy sees it), waits until MathJax has typeset the page, takes the rendered DOM
(``--dump-dom``) and looks for:

failures (exit status 1)
    * raw TeX left in the text: ``\\(``, ``\\[``, ``$$`` or ``\\begin{`` outside code;
    * raw MyST roles: ``{glue``, ``{cite`` or any ``{role}`` followed by a backtick;
    * MathJax missing, loaded from the network instead of the book's ``_static``, not run, or
      reporting a TeX error;
    * an ``<img>`` whose file is missing or empty, or that the browser could not decode
      (``naturalWidth`` 0), or that comes from the network;
    * fewer exercise / solution boxes (sphinx-exercise's ``exercise admonition`` and
      ``solution admonition``) than ``{exercise}`` / ``{solution}`` directives in the page's source.

warnings (printed; failures only with ``--fail-on-overflow``)
    * code cells and outputs wider than the page column at 1280 px (the reader must scroll
      sideways), with the longest line;
    * scripts loaded from the network (missing offline).

It also saves one screenshot per part of the book, of the part's first notebook page, to
``_build/screenshots/``.

How it works: one Chromium process loads a small harness page that opens the book's pages one by
one in a 1280 px wide iframe (``--allow-file-access-from-files`` lets it read them), waits for
``MathJax.startup.promise`` and the images, records what only the browser knows (``naturalWidth``,
overflow, MathJax version) as ``data-check-*`` attributes, and hands back each page's DOM. Pages are
split over ``--jobs`` Chromium processes. ``--virtual-time-budget`` makes Chromium's clock advance only
as fast as the pages do their work, so a loaded machine does not turn into spurious timeouts.
The screenshots come from one more Chromium process that shoots the pages stacked in iframes.
:func:`parse` is pure Python on the DOM text, so it is tested without a browser
(tests/test_check_pages.py).

Usage::

    python .ci/check_pages.py                      # every page of _build/html
    python .ci/check_pages.py --html _build/html --jobs 2 --screenshots _build/screenshots
    python .ci/check_pages.py --pages notebooks/part2/2_2_infonce.html
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

REPO = Path(__file__).resolve().parents[1]

WINDOW_WIDTH = 1280  # px: a laptop window; the page column must hold ~100 characters of code here
WINDOW_HEIGHT = 900
SCREENSHOT_HEIGHT = 1600  # px: the title, the first prose and the first code cells of a part
PAGE_TIMEOUT_MS = 30_000  # virtual ms for one page to load and typeset
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

# Options for every Chromium run: headless, no sandbox (CI runs as root in a container), nothing
# fetched in the background, and no name resolution at all, so that anything the book takes from the
# network fails exactly as it does for an offline reader.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--no-first-run",
    "--no-default-browser-check",
    "--host-resolver-rules=MAP * ~NOTFOUND",
)


@dataclass(frozen=True)
class Problem:
    """One thing wrong on a rendered page.

    Args:
        page: the page, relative to the html folder (e.g. ``notebooks/part2/2_2_infonce.html``).
        kind: short name of the check (``raw-tex``, ``raw-role``, ``image``, ``mathjax``,
            ``exercise``, ``overflow``, ``remote-script``, ``browser``).
        detail: what was found, with enough text to locate it.
        fatal: True for failures, False for warnings.
    """

    page: str
    kind: str
    detail: str
    fatal: bool = True

    def __str__(self) -> str:
        return f"{'FAIL' if self.fatal else 'WARN'} {self.page}: [{self.kind}] {self.detail}"


# ----------------------------------------------------------------------------------------------
# Pure-HTML part: parse(dom) -> problems
# ----------------------------------------------------------------------------------------------

# Text inside these elements is code, or MathJax's own output, and may hold TeX or braces.
_CODE_TAGS = {
    "script", "style", "pre", "code", "kbd", "samp", "tt", "textarea", "template", "noscript",
    "svg", "math", "mjx-container", "mjx-assistive-mml",
}
_CODE_CLASSES = {"highlight", "cell_input", "literal-block-wrapper", "notranslate-code"}
_VOID_TAGS = {
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
    "track", "wbr",
}
_HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}

RAW_TEX = re.compile(r"\\\(|\\\)|\\\[|\\\]|\$\$|\\begin\{")
RAW_ROLE = re.compile(r"\{(?:glue|cite)[^}]*\}?|\{[a-z][a-z0-9_:+-]*\}`")
SOURCE_DIRECTIVE = re.compile(
    r"^[ \t>]*(?:`{3,}|:{3,}|~{3,})[ \t]*\{(exercise|exercise-start|solution|solution-start)\}",
    re.MULTILINE,
)


def _is_remote(url: str) -> bool:
    return url.startswith(("http://", "https://", "//"))


def _excerpt(text: str, start: int, end: int, width: int = 50) -> str:
    left = max(0, start - width)
    snippet = text[left : end + width]
    snippet = re.sub(r"\s+", " ", snippet).strip()
    return ("…" if left > 0 else "") + snippet + ("…" if end + width < len(text) else "")


class _DomScanner(HTMLParser):
    """Walks a serialized DOM once and records what :func:`parse` checks.

    Text is gathered per "prose block" (everything between two block boundaries outside code), so a
    raw role split over a text node and an inline ``<code>`` is still seen in one piece.
    """

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, bool]] = []  # (tag, starts a code context)
        self.code_depth = 0
        self.heading = ""
        self.in_heading = False
        self.heading_parts: list[str] = []
        self.text_blocks: list[tuple[str, str]] = []  # (text, heading above it)
        self.block_parts: list[str] = []
        self.images: list[dict[str, str]] = []
        self.scripts: list[str] = []
        self.math_elements = 0
        self.mjx_containers = 0
        self.mathjax_errors: list[str] = []
        self.exercise_boxes = 0
        self.solution_boxes = 0
        self.overflows: list[dict[str, str]] = []
        self.root_attrs: dict[str, str] = {}

    # block boundaries: flush the text gathered so far
    def _flush(self) -> None:
        text = "".join(self.block_parts)
        if text.strip():
            self.text_blocks.append((text, self.heading))
        self.block_parts = []

    def handle_starttag(self, tag: str, attrs_list: list[tuple[str, str | None]]) -> None:
        attrs = {k: (v or "") for k, v in attrs_list}
        classes = set(attrs.get("class", "").split())
        if tag == "html":
            self.root_attrs = attrs
        if tag == "img":
            self.images.append(attrs)
        if tag == "script" and attrs.get("src"):
            self.scripts.append(attrs["src"])
        if "math" in classes:
            self.math_elements += 1
        if tag == "mjx-container":
            self.mjx_containers += 1
        if tag == "mjx-merror":
            self.mathjax_errors.append(attrs.get("data-mjx-error", "") or "(no message)")
        if "admonition" in classes:
            self.exercise_boxes += "exercise" in classes
            self.solution_boxes += "solution" in classes
        if "data-check-overflow" in attrs:
            self.overflows.append(attrs)
        if tag in _VOID_TAGS:
            return
        if tag in _HEADINGS and self.code_depth == 0:
            self._flush()
            self.in_heading = True
            self.heading_parts = []
        elif tag in ("p", "div", "li", "td", "th", "dt", "dd", "section", "table", "tr", "blockquote",
                     "details", "summary", "figcaption", "aside", "nav", "header", "footer"):
            if self.code_depth == 0:
                self._flush()
        starts_code = tag in _CODE_TAGS or bool(classes & _CODE_CLASSES)
        self.stack.append((tag, starts_code))
        self.code_depth += starts_code

    def handle_startendtag(self, tag: str, attrs_list: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs_list)
        if tag not in _VOID_TAGS:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in _VOID_TAGS:
            return
        # a well-formed DOM serialization closes every element; tolerate a stray end tag
        if not any(t == tag for t, _ in self.stack):
            return
        while self.stack:
            t, starts_code = self.stack.pop()
            self.code_depth -= starts_code
            if t == tag:
                break
        if tag in _HEADINGS and self.in_heading and self.code_depth == 0:
            self.heading = re.sub(r"\s+", " ", "".join(self.heading_parts)).strip().rstrip("#").strip()
            self.in_heading = False
            self._flush()

    def handle_data(self, data: str) -> None:
        if self.in_heading:
            self.heading_parts.append(data)
        if self.code_depth == 0:
            self.block_parts.append(data)
        elif self.block_parts and not self.block_parts[-1].endswith("\x00"):
            # inline code between two pieces of prose: keep a marker so that "{glue:text}" +
            # <code>name</code> is still one piece, without matching TeX inside the code
            self.block_parts.append("\x00")

    def close(self) -> None:
        super().close()
        self._flush()


def count_source_directives(source_text: str) -> dict[str, int]:
    """Count ``{exercise}`` / ``{solution}`` directives (and their ``-start`` forms) in MyST text.

    Args:
        source_text: the page's source: a Markdown file, or a notebook's markdown cells joined.

    Returns:
        ``{"exercise": n, "solution": m}``.
    """
    counts = {"exercise": 0, "solution": 0}
    for name in SOURCE_DIRECTIVE.findall(source_text):
        counts[name.split("-")[0]] += 1
    return counts


def read_source_text(source: Path) -> str:
    """The MyST text of a page's source: a ``.md`` file as is, a notebook's markdown cells joined."""
    if source.suffix == ".ipynb":
        notebook = json.loads(source.read_text(encoding="utf-8"))
        return "\n\n".join(
            "".join(cell.get("source", ""))
            for cell in notebook.get("cells", [])
            if cell.get("cell_type") == "markdown"
        )
    return source.read_text(encoding="utf-8")


def _check_image(attrs: dict[str, str], page_file: Path | None) -> str | None:
    src = attrs.get("src", "")
    label = src if len(src) < 100 else src[:60] + "…"
    if not src:
        return "<img> without src"
    if src.startswith("data:"):
        if not src.partition(",")[2].strip():
            return f"<img> with an empty data: URI ({attrs.get('alt', '')!r})"
    elif _is_remote(src):
        return f"<img> loaded from the network (missing offline): {label}"
    elif page_file is not None:
        target = (page_file.parent / unquote(urlsplit(src).path)).resolve()
        if not target.is_file():
            return f"<img> file missing: {label}"
        if target.stat().st_size == 0:
            return f"<img> file is empty (0 bytes): {label}"
    if attrs.get("data-check-natural-width") == "0":
        return f"<img> did not load in the browser (naturalWidth 0): {label}"
    return None


def parse(
    dom: str,
    page: str = "page.html",
    page_file: Path | None = None,
    source_text: str | None = None,
    overflow_details: bool = False,
) -> list[Problem]:
    """Check one rendered page.

    Args:
        dom: the page's HTML, ideally the DOM after MathJax ran (``--dump-dom``); the browser harness
            adds ``data-check-*`` attributes (MathJax status on ``<html>``, ``naturalWidth`` on
            ``<img>``, overflow on code blocks), which are used when present.
        page: the name to report problems under.
        page_file: where the page lives on disk, to resolve relative ``<img>`` / ``<script>``
            paths; ``None`` skips the file checks.
        source_text: the page's MyST source (see :func:`read_source_text`), to count the exercise
            and solution directives that must have become boxes; ``None`` skips that check.
        overflow_details: one warning per code cell / output wider than the column, instead of
            one summary per page.

    Returns:
        the problems found, failures and warnings, in page order per check.
    """
    scanner = _DomScanner()
    scanner.feed(dom)
    scanner.close()
    problems: list[Problem] = []

    def add(kind: str, detail: str, fatal: bool = True) -> None:
        problems.append(Problem(page, kind, detail, fatal))

    for text, heading in scanner.text_blocks:
        where = f" (under heading {heading!r})" if heading else ""
        visible = text.replace("\x00", " ")
        for match in RAW_TEX.finditer(text):
            add("raw-tex", f"raw TeX {match.group()} in the text: "
                           f'"{_excerpt(visible, match.start(), match.end())}"{where}')
            break  # one report per block is enough to find it
        for match in RAW_ROLE.finditer(text):
            add("raw-role", f"raw MyST role {match.group().rstrip('`')} in the text: "
                            f'"{_excerpt(visible, match.start(), match.end())}"{where}')
            break

    for attrs in scanner.images:
        message = _check_image(attrs, page_file)
        if message:
            add("image", message)

    mathjax_scripts = [s for s in scanner.scripts if "mathjax" in s.lower()]
    has_math = scanner.math_elements > 0 or scanner.mjx_containers > 0
    for src in mathjax_scripts:
        if _is_remote(src):
            add("mathjax", f"MathJax is loaded from the network, not served with the book: {src}")
        elif page_file is not None:
            target = (page_file.parent / unquote(urlsplit(src).path)).resolve()
            if not target.is_file():
                add("mathjax", f"MathJax script missing from the build: {src}")
    local_mathjax = [s for s in mathjax_scripts if not _is_remote(s)]
    if has_math and not local_mathjax:
        add("mathjax", f"the page has {scanner.math_elements} math elements but loads no local MathJax")
    status = scanner.root_attrs.get("data-check-mathjax")
    if has_math and status is not None and not status.startswith("ok"):
        add("mathjax", f"MathJax did not typeset the page in the browser ({status})")
    if has_math and status is not None and status.startswith("ok") and scanner.mjx_containers == 0:
        add("mathjax", "MathJax ran but typeset nothing (no <mjx-container> on a page with math)")
    for message in scanner.mathjax_errors:
        add("mathjax", f"TeX error: {message}")

    if source_text is not None:
        wanted = count_source_directives(source_text)
        for name, rendered in (("exercise", scanner.exercise_boxes), ("solution", scanner.solution_boxes)):
            if rendered < wanted[name]:
                add("exercise", f"the source has {wanted[name]} {{{name}}} directives but the page shows "
                                f"{rendered} '{name} admonition' boxes (sphinx-exercise)")

    for src in scanner.scripts:
        if _is_remote(src) and "mathjax" not in src.lower():
            add("remote-script", f"script loaded from the network (missing offline): {src}", fatal=False)

    if scanner.overflows and overflow_details:
        for attrs in scanner.overflows:
            add("overflow", f"{attrs.get('data-check-kind', 'block')}: {attrs.get('data-check-chars', '?')}-character "
                            f"line, {attrs.get('data-check-overflow')} px too wide: "
                            f"{attrs.get('data-check-line', '')!r}", fatal=False)
    elif scanner.overflows:
        by_kind: dict[str, int] = {}
        for attrs in scanner.overflows:
            by_kind[attrs.get("data-check-kind", "block")] = by_kind.get(attrs.get("data-check-kind", "block"), 0) + 1
        widest = max(scanner.overflows, key=lambda a: int(a.get("data-check-overflow", "0") or 0))
        counts = ", ".join(f"{n} {kind}" for kind, n in sorted(by_kind.items()))
        add("overflow", f"{counts} wider than the page column at {WINDOW_WIDTH} px (horizontal scrolling); "
                        f"widest by {widest.get('data-check-overflow')} px, longest line "
                        f"{widest.get('data-check-chars', '?')} characters: "
                        f"{widest.get('data-check-line', '')!r}", fatal=False)
    return problems


# ----------------------------------------------------------------------------------------------
# Browser part
# ----------------------------------------------------------------------------------------------

_HARNESS = r"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>check_pages harness</title></head>
<body><script id="out" type="application/json"></script>
<script>
const PAGES = __PAGES__;
const WIDTH = __WIDTH__, HEIGHT = __HEIGHT__, TIMEOUT = __TIMEOUT__;
const sleep = ms => new Promise(r => setTimeout(r, ms));
const race = (p, ms, late) => Promise.race([p, sleep(ms).then(() => late)]);

function markOverflow(d) {
  // code cells and text outputs that need horizontal scrolling
  const blocks = d.querySelectorAll(
    'div.cell_input pre, div.cell_output pre, div.highlight pre, div.cell_output div.output');
  for (const el of blocks) {
    const extra = el.scrollWidth - el.clientWidth;
    if (el.clientWidth === 0 || extra <= 1) continue;
    if (el.tagName !== 'PRE' && el.querySelector('pre')) continue;  // reported on its <pre>
    const lines = (el.textContent || '').split('\n');
    const longest = lines.reduce((a, b) => (b.length > a.length ? b : a), '');
    el.setAttribute('data-check-overflow', String(extra));
    el.setAttribute('data-check-kind', el.closest('div.cell_input, div.highlight:not(.cell_output *)')
      ? 'code blocks' : 'outputs');
    el.setAttribute('data-check-chars', String(longest.length));
    el.setAttribute('data-check-line', longest.slice(0, 140));
  }
}

async function inspect(url) {
  const frame = document.createElement('iframe');
  frame.style.cssText = `width:${WIDTH}px;height:${HEIGHT}px;border:0`;
  const loaded = new Promise(r => frame.addEventListener('load', () => r(true), {once: true}));
  frame.src = url;
  document.body.appendChild(frame);
  try {
    if (!(await race(loaded, TIMEOUT, false))) return {url, error: 'the page did not finish loading'};
    const w = frame.contentWindow, d = frame.contentDocument;
    if (!d || !d.documentElement) return {url, error: 'cannot read the page (file access blocked?)'};
    let mathjax = 'absent';
    if (w.MathJax && w.MathJax.startup && w.MathJax.startup.promise) {
      const r = await race(w.MathJax.startup.promise.then(() => 'ok', e => 'error: ' + e), TIMEOUT, 'timeout');
      mathjax = r === 'ok' ? 'ok ' + w.MathJax.version : r;
    } else if (w.MathJax) {
      mathjax = 'configured but the MathJax script did not load';
    }
    d.documentElement.setAttribute('data-check-mathjax', mathjax);
    for (const img of d.images) {
      img.loading = 'eager';
      if (!img.complete) {
        await race(new Promise(r => { img.addEventListener('load', r); img.addEventListener('error', r); }),
                   TIMEOUT, null);
      }
      img.setAttribute('data-check-natural-width', String(img.naturalWidth));
    }
    for (const det of d.querySelectorAll('details')) det.open = true;  // measure hidden cells too
    markOverflow(d);
    return {url, dom: '<!DOCTYPE html>\n' + d.documentElement.outerHTML};
  } catch (e) {
    return {url, error: String(e)};
  } finally {
    frame.remove();
  }
}

(async () => {
  const results = [];
  for (const url of PAGES) results.push(await inspect(url));
  const out = document.getElementById('out');
  out.textContent = JSON.stringify(results).replace(/</g, '\\u003c');
  document.body.setAttribute('data-done', String(results.length));
})();
</script></body></html>
"""


def find_chromium(name: str | None = None) -> str | None:
    """The Chromium executable: ``name`` if given, else ``$CHROMIUM``, else the first on PATH."""
    for candidate in ([name] if name else []) + [os.environ.get("CHROMIUM", "")] + list(CHROMIUM_NAMES):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


def _run_chromium(chromium: str, args: list[str], profile: Path, timeout_s: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=timeout_s, check=False,
    )


def render_pages(
    chromium: str, page_files: list[Path], workdir: Path, timeout_s: float | None = None
) -> dict[Path, str | Exception]:
    """Render pages in one Chromium process and return each page's DOM after MathJax ran.

    Args:
        chromium: the Chromium executable.
        page_files: absolute paths of the HTML pages.
        workdir: a scratch folder for the harness page and the browser profile.
        timeout_s: wall-clock limit for the whole process; default 60 s + 10 s per page (a page
            takes ~0.5 s of CPU; the margin is for a machine shared with other jobs).

    Returns:
        page path -> its DOM (with ``data-check-*`` attributes), or a RuntimeError saying why not.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    harness = workdir / "harness.html"
    harness.write_text(
        _HARNESS.replace("__PAGES__", json.dumps([p.as_uri() for p in page_files]))
        .replace("__WIDTH__", str(WINDOW_WIDTH))
        .replace("__HEIGHT__", str(WINDOW_HEIGHT))
        .replace("__TIMEOUT__", str(PAGE_TIMEOUT_MS)),
        encoding="utf-8",
    )
    budget_ms = PAGE_TIMEOUT_MS * (2 * len(page_files) + 1)
    timeout_s = timeout_s if timeout_s is not None else 60.0 + 10.0 * len(page_files)
    try:
        proc = _run_chromium(
            chromium,
            ["--allow-file-access-from-files", f"--window-size={WINDOW_WIDTH + 40},{WINDOW_HEIGHT}",
             f"--virtual-time-budget={budget_ms}", "--dump-dom", harness.as_uri()],
            workdir / "profile", timeout_s,
        )
    except subprocess.TimeoutExpired:
        error = RuntimeError(f"Chromium did not finish within {timeout_s:.0f} s")
        return {p: error for p in page_files}
    match = re.search(r'<script id="out" type="application/json">(.*?)</script>', proc.stdout, re.DOTALL)
    if not match or not match.group(1).strip():
        tail = (proc.stderr or "").strip().splitlines()[-3:]
        error = RuntimeError(f"Chromium (exit {proc.returncode}) returned no result: {' | '.join(tail)}")
        return {p: error for p in page_files}
    by_uri = {p.as_uri(): p for p in page_files}
    results: dict[Path, str | Exception] = {}
    for item in json.loads(match.group(1)):
        page = by_uri[item["url"]]
        results[page] = item["dom"] if "dom" in item else RuntimeError(item.get("error", "unknown error"))
    for page in page_files:
        results.setdefault(page, RuntimeError("the browser never reached this page"))
    return results


def screenshots_of(chromium: str, shots: dict[Path, Path], workdir: Path, timeout_s: float | None = None) -> dict[Path, str]:
    """Save a ``WINDOW_WIDTH`` x ``SCREENSHOT_HEIGHT`` screenshot of each page after MathJax ran.

    One Chromium process (a browser start costs about a CPU second) shoots a strip page that
    stacks the pages in iframes of that size; Pillow (a matplotlib dependency) cuts the strip
    into one PNG per page.

    Args:
        chromium: the Chromium executable.
        shots: PNG to write -> page to show.
        workdir: a scratch folder.
        timeout_s: wall-clock limit; default 60 s + 10 s per page.

    Returns:
        PNG -> what went wrong, for the screenshots that failed (empty when all were written).
    """
    from PIL import Image

    if not shots:
        return {}
    workdir.mkdir(parents=True, exist_ok=True)
    frames = "".join(
        f'<iframe src="{page.as_uri()}" style="display:block;border:0;width:{WINDOW_WIDTH}px;'
        f'height:{SCREENSHOT_HEIGHT}px"></iframe>' for page in shots.values())
    strip_page = workdir / "strip.html"
    strip_page.write_text(f"<!DOCTYPE html><html><body style=\"margin:0\">{frames}</body></html>",
                          encoding="utf-8")
    strip_png = workdir / "strip.png"
    timeout_s = timeout_s if timeout_s is not None else 60.0 + 10.0 * len(shots)
    try:
        proc = _run_chromium(
            chromium,
            [f"--window-size={WINDOW_WIDTH},{SCREENSHOT_HEIGHT * len(shots)}", "--virtual-time-budget=8000",
             f"--screenshot={strip_png}", strip_page.as_uri()],
            workdir / "profile", timeout_s,
        )
    except subprocess.TimeoutExpired:
        return {png: f"Chromium did not finish within {timeout_s:.0f} s" for png in shots}
    if not strip_png.is_file() or strip_png.stat().st_size == 0:
        error = f"no screenshot written (exit {proc.returncode}): {(proc.stderr or '').strip()[-200:]}"
        return {png: error for png in shots}
    failed: dict[Path, str] = {}
    with Image.open(strip_png) as strip:
        scale = strip.width / WINDOW_WIDTH  # 1 unless Chromium was told to use another pixel ratio
        for k, png in enumerate(shots):
            png.parent.mkdir(parents=True, exist_ok=True)
            box = (0, round(k * SCREENSHOT_HEIGHT * scale), strip.width,
                   round((k + 1) * SCREENSHOT_HEIGHT * scale))
            if box[3] > strip.height:
                failed[png] = f"the screenshot strip is {strip.height} px high, expected {box[3]}"
                continue
            strip.crop(box).save(png)
    return failed


# ----------------------------------------------------------------------------------------------
# The book: which pages, their sources, the parts
# ----------------------------------------------------------------------------------------------

def _natural_key(path: Path) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.as_posix())]


def content_pages(html_dir: Path) -> list[Path]:
    """Every page of the book a reader opens: all ``.html`` files except Sphinx's own
    (``_static``, ``_sources``, ``_images``, genindex, search, the ``index.html`` redirect)."""
    skip = {"genindex.html", "search.html", "index.html", "py-modindex.html"}
    pages = []
    for page in html_dir.rglob("*.html"):
        rel = page.relative_to(html_dir)
        if any(part.startswith(("_", ".")) for part in rel.parts) or (len(rel.parts) == 1 and rel.name in skip):
            continue
        pages.append(page)
    return sorted(pages, key=_natural_key)


def source_of(page_rel: Path, source_dir: Path) -> Path | None:
    """The notebook or Markdown file a page was built from, if it is there."""
    for suffix in (".ipynb", ".md"):
        candidate = source_dir / page_rel.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    return None


def first_page_of_each_part(pages: list[Path], html_dir: Path) -> dict[str, Path]:
    """``{"part1": first notebook page of notebooks/part1/, ...}`` in reading order."""
    parts: dict[str, Path] = {}
    for page in pages:  # already in natural order: 1_2 before 1_10
        rel = page.relative_to(html_dir)
        if len(rel.parts) >= 3 and rel.parts[0] == "notebooks":
            parts.setdefault(rel.parts[1], page)
    return parts


def check_book(
    html_dir: Path,
    source_dir: Path,
    chromium: str,
    pages: list[Path] | None = None,
    screenshots: Path | None = None,
    jobs: int = 2,
    overflow_details: bool = False,
) -> tuple[list[Problem], list[Path], int]:
    """Render and check pages of a built book.

    Args:
        html_dir: the built HTML (``_build/html``).
        source_dir: the book's source root, to find each page's notebook / Markdown source.
        chromium: the Chromium executable.
        pages: the pages to check (absolute paths); default: :func:`content_pages`.
        screenshots: folder for one screenshot per part; None for none.
        jobs: Chromium processes run side by side.
        overflow_details: passed to :func:`parse`.

    Returns:
        (problems, screenshots written, number of pages checked).
    """
    pages = pages if pages is not None else content_pages(html_dir)
    if not pages:
        return [Problem(str(html_dir), "browser", "no HTML pages found: was the book built?")], [], 0
    jobs = max(1, min(jobs, len(pages)))
    batches = [pages[i::jobs] for i in range(jobs)]
    shots = first_page_of_each_part(pages, html_dir) if screenshots is not None else {}
    problems: list[Problem] = []
    written: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="check_pages_") as tmp, ThreadPoolExecutor(jobs) as pool:
        renders = [pool.submit(render_pages, chromium, batch, Path(tmp) / f"job{i}")
                   for i, batch in enumerate(batches)]
        pngs = {screenshots / f"{part}_{page.stem}.png": page for part, page in shots.items()}
        shot_job = pool.submit(screenshots_of, chromium, pngs, Path(tmp) / "shots") if pngs else None
        doms: dict[Path, str | Exception] = {}
        for future in renders:
            doms.update(future.result())
        failed = shot_job.result() if shot_job is not None else {}
        for png, page in pngs.items():
            if png in failed:
                problems.append(Problem(page.relative_to(html_dir).as_posix(), "browser",
                                        f"screenshot failed: {failed[png]}"))
            else:
                written.append(png)
    for page in pages:
        rel = page.relative_to(html_dir)
        dom = doms[page]
        if isinstance(dom, Exception):
            problems.append(Problem(rel.as_posix(), "browser", str(dom)))
            continue
        source = source_of(rel, source_dir)
        problems += parse(dom, rel.as_posix(), page,
                          read_source_text(source) if source is not None else None, overflow_details)
    return problems, written, len(pages)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--html", type=Path, default=REPO / "_build" / "html", help="the built book")
    parser.add_argument("--source", type=Path, default=REPO, help="the book's source root")
    parser.add_argument("--screenshots", type=Path, default=REPO / "_build" / "screenshots",
                        help="where to save one screenshot per part")
    parser.add_argument("--no-screenshots", action="store_true")
    parser.add_argument("--pages", nargs="*", type=Path,
                        help="pages to check, relative to --html (default: every content page)")
    parser.add_argument("--jobs", type=int, default=2, help="Chromium processes side by side")
    parser.add_argument("--chromium", default=None, help="Chromium executable (default: $CHROMIUM or PATH)")
    parser.add_argument("--fail-on-overflow", action="store_true",
                        help="treat code cells wider than the column as failures")
    parser.add_argument("--verbose", "-v", action="store_true",
                        help="one line per code cell / output wider than the column")
    args = parser.parse_args(argv)

    chromium = find_chromium(args.chromium)
    if chromium is None:
        print("check_pages: no Chromium found (install it with .ci/install_chromium.sh, "
              "or pass --chromium / set $CHROMIUM)", file=sys.stderr)
        return 2
    html_dir = args.html.resolve()
    if not html_dir.is_dir():
        print(f"check_pages: {html_dir} does not exist: build the book first", file=sys.stderr)
        return 2
    pages = None
    if args.pages:
        pages = [(html_dir / p).resolve() for p in args.pages]
        missing = [str(p) for p in pages if not p.is_file()]
        if missing:
            print(f"check_pages: no such page: {', '.join(missing)}", file=sys.stderr)
            return 2

    start = time.monotonic()
    problems, shots, n_pages = check_book(
        html_dir, args.source.resolve(), chromium, pages,
        None if args.no_screenshots else args.screenshots.resolve(), args.jobs, args.verbose,
    )
    elapsed = time.monotonic() - start
    if args.fail_on_overflow:
        problems = [Problem(p.page, p.kind, p.detail, True) if p.kind == "overflow" else p for p in problems]
    for problem in sorted(problems, key=lambda p: (not p.fatal, _natural_key(Path(p.page)))):
        print(problem)
    failures = sum(p.fatal for p in problems)
    for png in shots:
        print(f"screenshot: {png}")
    print(f"check_pages: {n_pages} pages in {elapsed:.1f} s: {failures} failures, "
          f"{len(problems) - failures} warnings")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
