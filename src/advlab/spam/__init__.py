"""Spam filters under attack: good-word and obfuscation attacks on bag-of-words classifiers (Dalvi et al. 2004; Lowd & Meek 2005).

- :mod:`advlab.spam.features`: binary bag of words, obfuscation (``free`` -> ``fr3e``) and the attacked text;
- :mod:`advlab.spam.models`: multinomial and Bernoulli naive Bayes, logistic regression (one linear form), a small net;
- :mod:`advlab.spam.attacks`: the white-box greedy word attack and Lowd & Meek's query-only good-word attack;
- :mod:`advlab.spam.defense`: Dalvi et al.'s adversary-aware naive Bayes and adversarial training;
- :mod:`advlab.spam.experiment`: the experiment behind ``advlab spam`` and ``bench/spam_words.py``.

Examples:
    >>> from advlab.data.sms_spam import load_sms_spam, stratified_split
    >>> from advlab.spam import SpamExperiment, SpamSettings
    >>> split = stratified_split(load_sms_spam(), 0.25, seed=0)
    >>> record = SpamExperiment(split, SpamSettings(models=("logistic",), budget=20)).run()
"""

from advlab.spam.attacks import GoodWords, GoodWordSearch, QueryCounter, WordAttackResult, greedy_attack, query_attack
from advlab.spam.defense import AdversaryAwareNB, adversarial_training
from advlab.spam.experiment import DEFENSES, SpamExperiment, SpamSettings
from advlab.spam.features import BagOfWords, apply_edits, obfuscate
from advlab.spam.models import MODEL_NAMES, LinearSpamModel, NeuralSpamModel, SpamModel, train_model

__all__ = [
    "DEFENSES",
    "MODEL_NAMES",
    "AdversaryAwareNB",
    "BagOfWords",
    "GoodWordSearch",
    "GoodWords",
    "LinearSpamModel",
    "NeuralSpamModel",
    "QueryCounter",
    "SpamExperiment",
    "SpamModel",
    "SpamSettings",
    "WordAttackResult",
    "adversarial_training",
    "apply_edits",
    "greedy_attack",
    "obfuscate",
    "query_attack",
    "train_model",
]
