"""feynmlp.generated: kernel modules emitted by `feynmlp generate-kernels`. Never edit by hand.

In: nothing (the files are written by feynmlp.codegen.generate). Out: one module per
(activation, order), named `<activation>_order<K>.py`, and `manifest.json` listing each file
with its SHA-256 and the generator signature it was produced under.
"""
