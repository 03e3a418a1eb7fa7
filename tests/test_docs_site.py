"""The documentation site (docs/, built by Sphinx): every public name has an API entry, every page
is reachable from the start page, and the guide's examples run and print what they show (the
same doctests ``sphinx-build -b doctest`` runs; here without Sphinx, in the default suite)."""
import doctest
import re
from pathlib import Path

import numpy as np
import pytest

import hsrgeom
import hsrgeom.attention

DOCS = Path(__file__).resolve().parents[1] / "docs"
FENCE = re.compile(r"^```\{doctest\}[^\n]*\n(.*?)^```", re.S | re.M)
# sphinx.ext.doctest's defaults (docs/conf.py keeps them)
FLAGS = doctest.ELLIPSIS | doctest.IGNORE_EXCEPTION_DETAIL | doctest.DONT_ACCEPT_TRUE_FOR_1


def _documented(page):
    text = (DOCS / "api" / page).read_text(encoding="utf-8")
    return set(re.findall(r"\.\. auto(?:class|function|module):: ([\w.]+)", text))


@pytest.mark.parametrize("module, page", [(hsrgeom, "hsrgeom.md"), (hsrgeom.attention, "attention.md")])
def test_every_public_name_has_an_api_entry(module, page):
    documented = _documented(page)
    missing = [n for n in module.__all__ if f"{module.__name__}.{n}" not in documented]
    assert not missing, f"add {missing} to docs/api/{page}"


def _pages():
    return sorted(p.relative_to(DOCS).with_suffix("").as_posix() for p in DOCS.rglob("*.md")
                  if "_build" not in p.parts)


def test_every_page_is_in_the_toctree():
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^([\w/]+)$", index, re.M))
    orphans = [p for p in _pages() if p != "index" and p not in listed]
    assert not orphans, f"add {orphans} to a toctree of docs/index.md"


def _doctest_pages():
    return [p for p in _pages() if FENCE.search((DOCS / f"{p}.md").read_text(encoding="utf-8"))]


def test_the_guide_has_examples():
    pages = _doctest_pages()
    assert {"getting_started", "guide/reporting", "guide/topk_sums", "guide/choosing", "guide/dynamic",
            "guide/files", "guide/threads", "guide/attention", "exactness"} <= set(pages)


@pytest.mark.parametrize("page", _doctest_pages())
def test_guide_examples_run(page):
    text = (DOCS / f"{page}.md").read_text(encoding="utf-8")
    globs = {"np": np, "hsrgeom": hsrgeom}  # docs/conf.py's doctest_global_setup
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    parser = doctest.DocTestParser()
    for i, block in enumerate(FENCE.findall(text)):   # one namespace per page, as Sphinx's "default" group
        test = parser.get_doctest(block, globs, f"{page}[{i}]", str(DOCS / f"{page}.md"), 0)
        runner.run(test, clear_globs=False)
        globs = test.globs  # DocTest copies its globals: carry the page's names to its next block
    result = runner.summarize(verbose=False)
    assert result.attempted > 0
    assert result.failed == 0, f"{result.failed} example(s) of docs/{page}.md failed (output above)"
