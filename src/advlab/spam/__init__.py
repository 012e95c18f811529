"""Spam filters under attack: good-word and obfuscation attacks on bag-of-words classifiers (Dalvi et al. 2004; Lowd & Meek 2005)."""
