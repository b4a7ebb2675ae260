"""feynmlp.codegen: the symbolic side (SymPy and Jinja2), never imported on the runtime's hot path.

In: an expansion order K and an activation. Out: activation derivatives as printed code,
Faa di Bruno vertex sums, diagram enumerations, LaTeX of the rules, and the kernel modules
written into generated/. Submodules are imported explicitly; this package imports nothing
heavy on its own so that `import feynmlp` stays free of SymPy and Jinja2.
"""
