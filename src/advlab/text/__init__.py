"""Text classifiers: adversarial and virtual adversarial training on word embeddings (Miyato et al. 2016)."""
