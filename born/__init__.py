"""feynmlp.born: S-wave scattering lengths of step potentials and their Born series."""
