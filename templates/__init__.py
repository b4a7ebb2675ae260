"""feynmlp.templates: the Jinja2 templates (`<output>.<ext>.jinja`) shipped as package data.

In: strings and metadata prepared by feynmlp.codegen. Out: kernel modules and LaTeX documents.
"""
