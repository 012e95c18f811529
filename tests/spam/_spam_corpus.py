"""A small inline SMS-like corpus for the spam tests (no shared data folder needed)."""

from __future__ import annotations

SPAM = [
    "WIN a FREE prize now call {n}",
    "URGENT you have won cash claim your prize txt {n}",
    "free entry to win tickets text WIN to {n}",
    "Congratulations you won a free holiday call now {n}",
    "claim your cash award now reply STOP {n}",
]
HAM = [
    "see you at home later mum",
    "are we still meeting for lunch today",
    "ok i will call you when i get home",
    "sorry i am late the bus was slow",
    "can you pick up some milk on the way",
    "happy birthday hope you have a great day",
    "what time does the film start tonight",
    "i am going to sleep now good night",
]


def corpus_text(copies: int = 4) -> str:
    """``label<TAB>message`` lines: each template ``copies`` times (spam with different numbers)."""
    lines = []
    for c in range(copies):
        lines += [f"spam\t{t.format(n=80000 + 17 * c + i)}" for i, t in enumerate(SPAM)]
        lines += [f"ham\t{t} {'ok' if c % 2 else 'yes'}" for t in HAM]
    return "\n".join(lines) + "\n"
