"""Sphinx configuration of the hsrgeom documentation site.

Build (warnings are errors): ``pip install '.[docs]' && sphinx-build -W -b html docs docs/_build/html``;
run the guide's examples: ``sphinx-build -W -b doctest docs docs/_build/doctest``.
The Markdown pages of docs/ are read by myst-parser as they are (the lab logs are written by
other tools and stay plain Markdown); the API reference is autodoc over the installed package.
"""
import hsrgeom

project = "hsrgeom"
author = "the hsrgeom authors"
copyright = "the hsrgeom authors, BSD-3-Clause"
release = version = hsrgeom.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.doctest",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "img/*.md", "**/.asv"]

# Markdown: $...$ math, ::: fences, header anchors for in-page links ("#section")
myst_enable_extensions = ["dollarmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
# The pages of docs/ link to the repository's files (../cpp/..., ../benchmarks/...), which are not
# documents of the site: those links stay plain links, everything else must resolve.
# ref.python: "more than one target found" for attribute names that two classes share (n, d)
suppress_warnings = ["myst.xref_missing", "myst.header", "ref.python"]

# API reference: numpy-style docstrings through napoleon; members in source order
napoleon_numpy_docstring = True
napoleon_google_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True  # attributes as fields: __slots__ members are documented once
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": True}
autodoc_typehints = "none"  # the signatures and docstrings already say the types
autosummary_generate = False

# doctest: the guide's ```{doctest} blocks share one namespace per page
doctest_global_setup = "import numpy as np\nimport hsrgeom"
doctest_test_doctest_blocks = "default"  # also the >>> examples of the docstrings

html_theme = "furo"
html_title = f"hsrgeom {release}"
html_static_path = []
