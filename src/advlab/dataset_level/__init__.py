"""Dataset-level procedures: universal adversarial perturbations and fooling images."""
