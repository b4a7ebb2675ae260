"""Sphinx configuration of the feynmlp documentation.

In: the Markdown pages of docs/ (MyST), the executable tutorials (MyST notebooks, run by
myst-nb at every build so that a broken example fails it) and the docstrings of the installed
`feynmlp` package. Out: the HTML site, built with
    python -m sphinx -W -b html docs docs/_build/html
Nothing is fetched at build or view time: MathJax is served from the site's own _static
folder (sphinx-mathjax-offline), the theme is Sphinx's builtin alabaster, and myst-nb's
ipywidgets loader (which points at a CDN) is switched off.
"""
from __future__ import annotations

import os

import feynmlp

project = "feynmlp"
author = "feynmlp developers"
copyright = "feynmlp developers"
release = version = feynmlp.__version__

extensions = [
    "myst_nb",                       # MyST Markdown and executed MyST notebooks
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",           # the code's docstrings use Google-style Args:/Returns:
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",        # MathJax 3 copied into _static/mathjax: no CDN
]

source_suffix = {".md": "myst-nb"}
exclude_patterns = ["_build", "jupyter_execute", ".ipynb_checkpoints"]
root_doc = "index"

# MyST: $...$ and $$...$$ math, rendered by MathJax; :::{note} fences.
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3

# myst-nb: every notebook page is run at every build; an exception in a cell fails the build.
nb_execution_mode = "force"
nb_execution_raise_on_error = True
nb_execution_timeout = 300
nb_execution_show_tb = True
nb_merge_streams = True
# Markdown that a cell displays (the report's table) is read with GitHub's tables.
nb_render_markdown_format = "gfm"
# The default loads require.js and the widget manager from a CDN on every notebook page; the
# pages show no widgets.
nb_ipywidgets_js = {}

# One thread per kernel process keeps the build's timing steady on a shared machine.
os.environ.setdefault("NUMBA_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": False}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
# "Attributes:" sections as :ivar: fields: a dataclass's fields are then not described twice
# (once by the section, once by autodoc's members).
napoleon_use_ivar = True


def _literal_bars(app, what, name, obj, options, lines):
    """Keep the docstrings' plain-text notation |alpha|, |U_n| as written: reStructuredText
    would read |word| as a substitution reference, which does not exist."""
    lines[:] = [line.replace("|", "\\|") for line in lines]


def setup(app):
    app.connect("autodoc-process-docstring", _literal_bars)

html_theme = "alabaster"
html_title = f"feynmlp {release}"
html_static_path: list[str] = []
html_theme_options = {"description": "Taylor coefficients of MLPs through Feynman-like rules",
                      "fixed_sidebar": False}
