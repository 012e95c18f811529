"""Model-based optimisation: optimising a design for a surrogate's predicted score, with standard and robust surrogates."""
