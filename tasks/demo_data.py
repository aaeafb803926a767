"""Synthetic support-ticket corpus for the zero-configuration demo.

Why generate instead of shipping a public dataset: the demo must run offline,
carry no licence baggage, and — most importantly — have *known* properties
that the pipeline is supposed to cope with. Every text here is produced by the
templates and vocabularies in this module; nothing is copied from a public
dataset.

What the corpus contains (``drift=False``, the reference distribution):

* **Five classes** with a realistic imbalance — ``billing`` 35 %,
  ``shipping`` 25 %, ``technical`` 20 %, ``account`` 12 %, ``feedback`` 8 %
  (:data:`CLASS_SHARES`). The two small classes are where random sampling
  wastes budget and active learning with class quotas can win.
* **Word-level variety**: each class has several intents, each rendered from
  templates whose slots draw from synonym lists; shared greetings, context
  sentences, product names and sign-offs appear in every class; ~3 % of
  longer words get a keyboard typo and some texts are lower-cased. Class
  vocabularies deliberately overlap ("account" is also a bank account,
  "order" appears everywhere, a refund often mentions a return), so
  TF-IDF + logistic regression needs a few hundred labels to get good, not
  fifty. Measured with the project default (TF-IDF 1–2-grams fitted on the
  pool, logistic regression C=10, balanced; 1000 held-out rows; 3 seeds):
  macro-F1 ≈ 0.60 at 50 random labels (0.64 stratified), 0.85 at 200,
  0.89 at 500, 0.91 at 1000.
* **Ambiguous tickets (~10 %)**: one core sentence of the labelled class
  plus one core sentence of another class mentioned as background or an
  aside ("Last time … but that got sorted.", "Also, …"). The label is the
  class the ticket is about (the dominant one). Word counts are roughly tied,
  so a bag-of-words model stays uncertain on them however many labels it
  gets (≈ 65 % right with 1000 labels) — the items uncertainty sampling
  should surface, and part of why macro-F1 plateaus around 0.9.
* **Label noise (~3 %)**: on those rows ``label`` is a uniformly drawn
  *wrong* class (the truth is ``true_label`` in the meta columns). The
  simulated annotators answer from ``label``, so the noise behaves like a
  systematic labelling mistake and also sits in the frozen test set, capping
  measurable macro-F1 the way real data does.
* **Near-duplicates (~5 %)**: rephrasings of an earlier ticket — same
  sentences with contractions/phrasing swapped, greeting and sign-off
  re-drawn half of the time, fresh typos (TF-IDF cosine to the source
  ≈ 0.85–0.9; ~15 % end up verbatim copies) — so deduplication has something
  to find. A near-duplicate keeps its source's true label.

``drift=True`` produces a batch from a *shifted* distribution, as if a new
product line had launched and tickets now came from a chat widget: new
products (thermostat, e-bike, drone, ...) and topics (buy-now-pay-later,
parcel lockers, passkeys, ...), chat-style phrasing (``pls``, ``u``,
``acct``, no greeting) and a shifted class mix (technical-heavy). A domain
classifier separates it from the reference easily, while
``generate_demo_corpus(n, seed=other)`` is a fresh sample of the reference
distribution and must not look drifted.

Pass ``with_meta=True`` to also get the ground truth behind the noise
(``true_label``, ``ambiguous``, ``noisy``, ``near_dup_of``) — used by tests
and benchmarks, never by the pipeline itself.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = [
    "CLASSES",
    "CLASS_SHARES",
    "DRIFT_CLASS_SHARES",
    "generate_demo_corpus",
    "write_demo_files",
]

CLASSES: tuple[str, ...] = ("billing", "shipping", "technical", "account", "feedback")

#: Reference class mix (sums to 1).
CLASS_SHARES: Mapping[str, float] = {
    "billing": 0.35,
    "shipping": 0.25,
    "technical": 0.20,
    "account": 0.12,
    "feedback": 0.08,
}

#: Class mix of drifted batches: the new product line brings technical issues.
DRIFT_CLASS_SHARES: Mapping[str, float] = {
    "billing": 0.22,
    "shipping": 0.18,
    "technical": 0.32,
    "account": 0.16,
    "feedback": 0.12,
}

AMBIGUOUS_RATE = 0.10
LABEL_NOISE_RATE = 0.03
NEAR_DUP_RATE = 0.05
TYPO_RATE = 0.03
ZIPF_EXPONENT = 1.5
CONTEXT_RATE = 0.3
TEMPLATE_ZIPF_EXPONENT = 0.7
DETAIL_RATE = 0.6

# --------------------------------------------------------------------------
# Vocabularies. ``{slot}`` placeholders are filled recursively from SLOTS
# (shared) or the class's own slot table; ``{num}``, ``{code}``, ``{ver}``,
# ``{years}`` are random numbers.
# --------------------------------------------------------------------------

SHARED_SLOTS: dict[str, list[str]] = {
    "product": [
        "Aurora speaker", "Zephyr router", "Lumen desk lamp", "Pulse fitness band",
        "Vertex headphones", "Cascade water filter", "Atlas backpack", "Echo smart plug",
        "Nova tablet", "Quill e-reader", "Brew coffee grinder", "Halo webcam",
        "Summit blender", "Orca power bank",
    ],
    "when": [
        "yesterday", "last week", "two days ago", "on Monday", "this morning",
        "a few weeks ago", "over the weekend", "last month", "on Friday", "three days ago",
        "earlier today", "a couple of days ago",
    ],
    "order": [
        "my order", "order #{num}", "order number {num}", "my last order", "the order",
        "purchase {num}", "my recent purchase", "the {product} I ordered",
    ],
    "asap": ["asap", "as soon as possible", "today if possible", "quickly", "urgently", "soon"],
    "ordinal": ["second", "third", "fourth", "fifth"],
}

GREETINGS = [
    "Hi,", "Hello,", "Hey there,", "Dear support,", "Good morning,", "Hi team,", "",
    "Hello support team,", "To whom it may concern,", "Hey,", "Good afternoon,", "", "",
]
CLOSINGS = [
    "Thanks.", "Thank you!", "Regards.", "Cheers", "Please help.", "Any help appreciated.",
    "Thanks in advance.", "", "Best, Sam", "Kind regards, Alex", "", "Thx",
    "Looking forward to your reply.", "Appreciate it.",
]
CONTEXT = [
    "I bought the {product} {when}.", "I've been a customer for {years} years.",
    "I already contacted you {when}.", "My order number is {num}.",
    "This is really frustrating.", "Not sure who else to ask.", "Sorry for the long message.",
    "Please get back to me {asap}.", "I got the {product} as a gift.",
    "My {product} is only a month old.", "I use the {product} every day.",
    "Your website was not much help.", "I have attached a screenshot.",
    "This is the {ordinal} time I write about this.", "Hope you can sort this out.",
]

CLASS_SLOTS: dict[str, dict[str, list[str]]] = {
    "billing": {
        "charged": ["charged", "billed", "debited", "overcharged", "invoiced", "charged again"],
        "twice": ["twice", "two times", "double", "three times", "more than once", "again"],
        "refund": ["refund", "reimburse me for", "give me my money back for",
                   "return the money for", "credit back", "pay back"],
        "amount": ["$49.99", "29 euros", "the full amount", "an extra fee", "$12", "£80",
                   "the difference", "$199"],
        "card": ["credit card", "debit card", "PayPal account", "bank account", "Visa",
                 "Mastercard", "Amex"],
        "unpaid": ["still shows unpaid", "says payment pending", "was cancelled anyway",
                   "shows as failed", "is marked as not paid"],
        "invoice": ["an invoice", "a receipt", "a VAT invoice", "a proper receipt",
                    "a billing statement", "an itemized bill"],
        "price": ["price", "fee", "monthly fee", "subscription cost", "rate", "annual charge"],
        "plan": ["subscription", "plan", "premium plan", "membership", "yearly plan"],
        "went_up": ["went up", "increased", "doubled", "changed", "jumped"],
        "charge_word": ["charge", "transaction", "pending charge", "debit", "payment"],
        "statement": ["bank statement", "card statement", "account statement",
                      "credit card bill"],
        "pay_failed": ["The payment failed", "My card was declined", "Checkout rejected my card",
                       "The transaction did not go through", "Payment keeps failing"],
        "cancelled": ["cancelled", "canceled", "stopped", "ended"],
        "coupon": ["discount code", "coupon", "promo code", "voucher", "gift card"],
        "full_price": ["full price", "the whole amount", "too much", "the original price"],
    },
    "shipping": {
        "not_arrived": ["has not arrived", "never arrived", "still hasn't shown up", "is late",
                        "is delayed", "is missing", "hasn't been delivered"],
        "yet": ["yet", "", "after two weeks", "even though it shipped",
                "and it was supposed to come {when}"],
        "tracking": ["tracking number", "tracking page", "tracking link", "shipment status",
                     "carrier website"],
        "says": ["says", "shows", "claims", "tells me"],
        "delivered": ["delivered", "out for delivery", "handed to a neighbour",
                      "delivered to the mailbox"],
        "nothing": ["nothing is here", "I have nothing", "there is no box", "I never received it",
                    "no parcel at my door"],
        "package": ["package", "parcel", "box", "shipment", "delivery"],
        "damaged": ["damaged", "crushed", "broken", "soaking wet", "torn open",
                    "with a dented corner"],
        "change_addr": ["change the delivery address", "update the shipping address",
                        "send it to my office instead", "redirect the parcel"],
        "courier": ["courier", "driver", "delivery guy", "postman", "carrier", "DHL driver",
                    "UPS driver"],
        "left": ["left", "dropped", "threw", "put"],
        "wrong_place": ["at the wrong house", "outside in the rain", "at a neighbour's door",
                        "in the lobby", "at the wrong address"],
        "stuck": ["stuck", "sitting", "on hold", "waiting"],
        "where": ["customs", "the warehouse", "the sorting center", "transit", "the depot"],
        "wrong_item": ["wrong item", "wrong size", "wrong colour", "someone else's order",
                       "only half the items"],
        "ship": ["ship", "be dispatched", "leave the warehouse", "be sent out", "get here"],
        "label": ["return label", "prepaid label", "shipping label", "return slip"],
    },
    "technical": {
        "keeps": ["keeps", "won't stop", "started", "randomly starts"],
        "crashing": ["crashing", "freezing", "rebooting", "disconnecting", "lagging",
                     "shutting down", "glitching"],
        "app": ["The app", "The mobile app", "The companion app", "The desktop client",
                "The web dashboard", "The iOS app", "The Android app"],
        "shows": ["shows", "throws", "gives me", "displays", "pops up with"],
        "error": ["error {code}", "an error", "error code {code}", "a blank screen",
                  "a spinning wheel", "a timeout", "a 500 error"],
        "action": ["open it", "sync my data", "pair the device", "save settings", "start it",
                   "upload photos"],
        "update": ["update", "firmware update", "latest patch", "software update",
                   "new version", "upgrade"],
        "wont": ["won't", "doesn't", "can't", "refuses to"],
        "function": ["turn on", "pair", "charge", "connect", "respond", "work properly", "boot"],
        "network": ["wifi", "Wi-Fi", "bluetooth", "my phone", "the hub", "my laptop",
                    "the network"],
        "battery": ["The battery", "Battery life", "The charge"],
        "drains": ["drains", "dies", "runs out", "drops"],
        "fast": ["really fast", "in an hour", "overnight", "within minutes", "way too quickly"],
        "screen": ["screen", "display", "touchscreen", "LED", "sound", "speaker", "microphone"],
        "broken": ["flickers", "goes black", "stopped working", "is distorted",
                   "is unresponsive", "crackles"],
        "fix": ["restarting it", "a factory reset", "reinstalling the app",
                "updating the firmware", "unplugging it", "clearing the cache"],
        "verb3": ["crashes", "freezes", "disconnects", "lags", "does not work",
                  "won't respond"],
    },
    "account": {
        "cant_login": ["can't log in", "cannot sign in", "am unable to log into",
                       "can't access", "am locked out of", "can't get into"],
        "account": ["account", "profile", "user account", "customer account", "login",
                    "member profile"],
        "forgot": ["forgot", "lost", "don't remember", "misplaced"],
        "password": ["password", "PIN", "passcode", "login details", "credentials"],
        "reset": ["reset link", "password reset email", "recovery email", "reset code"],
        "never": ["never comes", "never arrives", "doesn't work", "has expired",
                  "goes to spam"],
        "delete": ["delete", "close", "deactivate", "remove", "permanently erase"],
        "change": ["change", "update", "edit", "switch"],
        "email": ["email address", "username", "phone number", "display name",
                  "recovery email"],
        "locked": ["locked", "suspended", "blocked", "disabled", "frozen"],
        "too_many": ["too many login attempts", "a failed verification",
                     "I entered the wrong password", "a security check"],
        "hacked": ["hacked", "compromised", "accessed by someone else", "taken over"],
        "code": ["verification code", "two-factor code", "2FA code", "SMS code",
                 "one-time password", "confirmation email"],
        "merge": ["merge", "combine", "link", "consolidate"],
        "accounts": ["accounts", "profiles", "logins"],
    },
    "feedback": {
        "love": ["love", "really like", "am impressed by", "enjoy", "adore"],
        "great": ["great job", "well done", "keep it up", "fantastic work",
                  "thank you for making it"],
        "suggest": ["Suggestion: please add", "Feature request:", "It would be great to have",
                    "Please consider adding", "Idea for the next version:"],
        "feature": ["a dark mode", "more colour options", "an offline mode", "a bigger battery",
                    "a calendar view", "export to PDF", "voice control", "a widget"],
        "staff": ["staff", "support agent", "team", "customer service", "technician",
                  "chat assistant"],
        "helpful": ["was super helpful", "was very kind", "solved it quickly",
                    "went above and beyond", "was friendly and patient"],
        "meh": ["Disappointed", "Not happy", "Honestly unimpressed", "A bit let down",
                "Quite satisfied"],
        "quality": ["quality", "design", "build quality", "packaging", "sound quality",
                    "materials"],
        "recommend": ["recommend", "suggest", "happily recommend"],
        "friends": ["friends", "my family", "colleagues", "everyone"],
        "nice": ["nice", "great", "helpful", "awesome", "cool"],
    },
}

# Core sentences carry most of the class signal; details add a little more.
CORE: dict[str, list[str]] = {
    "billing": [
        "I was {charged} {twice} for {order}.",
        "Please {refund} {amount} for {order}.",
        "My {card} was {charged} but {order} {unpaid}.",
        "Can I get {invoice} for {order}?",
        "The {price} on my {plan} {went_up} without notice.",
        "Why is there {amount} {charge_word} on my {statement}?",
        "{pay_failed} when I tried to pay for the {product}.",
        "I {cancelled} my {plan} but you still {charged} me.",
        "The {coupon} was not applied and I paid {full_price}.",
    ],
    "shipping": [
        "{order} {not_arrived} {yet}.",
        "The {tracking} {says} {delivered} but {nothing}.",
        "My {package} arrived {damaged}.",
        "Can you {change_addr} for {order}?",
        "The {courier} {left} the {package} {wrong_place}.",
        "{order} is {stuck} in {where}.",
        "I got the {wrong_item} in my {package}.",
        "When will {order} {ship}?",
        "How do I get a {label} to send the {product} back?",
    ],
    "technical": [
        "The {product} {keeps} {crashing}.",
        "{app} {shows} {error} when I {action}.",
        "After the {update} the {product} {wont} {function}.",
        "The {product} {wont} connect to {network}.",
        "{battery} {drains} {fast}.",
        "The {screen} on the {product} {broken}.",
        "I tried {fix} but it still {verb3}.",
    ],
    "account": [
        "I {cant_login} my {account}.",
        "I {forgot} my {password} and the {reset} {never}.",
        "Please {delete} my {account}.",
        "How do I {change} the {email} on my {account}?",
        "My {account} was {locked} after {too_many}.",
        "I think my {account} was {hacked}.",
        "I never receive the {code}.",
        "Can you {merge} my two {accounts}?",
    ],
    "feedback": [
        "I {love} the {product}, {great}.",
        "{suggest} {feature}.",
        "Your {staff} {helpful}.",
        "{meh} with the {quality} of the {product}.",
        "I would {recommend} the {product} to {friends}.",
        "It would be {nice} if the {product} had {feature}.",
    ],
}

DETAIL: dict[str, list[str]] = {
    "billing": [
        "I need the money back {asap}.", "Please check my {statement}.",
        "This is the {ordinal} time I've been {charged} incorrectly.",
        "The {charge_word} is still pending.", "I want to keep my {plan} though.",
    ],
    "shipping": [
        "I need it by Friday.", "The {tracking} has not updated in days.",
        "The {courier} never rang the bell.", "I paid for express shipping.",
        "It was a gift so timing matters.",
    ],
    "technical": [
        "I'm on version {ver}.", "It happens every time I {action}.",
        "I tried {fix} already.", "It worked fine before the {update}.",
        "The light just blinks red.",
    ],
    "account": [
        "I still have access to my {email}.", "I need to get in for work.",
        "I did not request a {reset}.", "My {password} was definitely right.",
        "I have two {accounts} by mistake.",
    ],
    "feedback": [
        "Just wanted to share that.", "Overall a good experience.",
        "Keep up the good work.", "Others in the forum agree.", "Nothing urgent, just an idea.",
    ],
}

# --- drift: new product line, new topics, chat-style phrasing --------------

DRIFT_SHARED_SLOTS: dict[str, list[str]] = {
    "product": [
        "Nimbus thermostat", "Orbit e-bike", "Solace solar charger", "Kestrel drone",
        "Tundra smart fridge", "Meridian smartwatch", "Glide robot vacuum",
    ],
}

DRIFT_CORE: dict[str, list[str]] = {
    "billing": [
        "The {bnpl} instalment was taken twice from my {wallet}.",
        "I paid with {wallet} but the {product} preorder got cancelled.",
        "Is the {product} eligible for the trade-in rebate?",
        "The {bnpl} plan for the {product} shows the wrong balance.",
    ],
    "shipping": [
        "The pickup locker code for my {product} parcel doesn't work.",
        "The drone drop-off for the {product} landed in the wrong garden.",
        "Same-day delivery slot for the {product} got rescheduled three times.",
        "The {product} preorder still says awaiting allocation.",
    ],
    "technical": [
        "The {product} {tech_new}.",
        "The OTA firmware bricked my {product}.",
        "The {product} app pairing via QR code fails with {code_new}.",
        "Geofencing on the {product} triggers randomly.",
    ],
    "account": [
        "My passkey stopped working after I switched to a new phone.",
        "Face ID login to the {product} app keeps asking for a passkey.",
        "How do I add my kids to family sharing for the {product}?",
        "The {product} is registered to the previous owner's profile.",
    ],
    "feedback": [
        "Love the eco-friendly packaging of the {product}.",
        "The {product} is so quiet, honestly a game changer.",
        "Would be nice if the {product} had a carbon-neutral shipping option.",
        "The {product} community forum is super wholesome.",
    ],
}

DRIFT_SLOTS: dict[str, list[str]] = {
    "bnpl": ["Klarna", "Afterpay", "pay-in-4", "buy-now-pay-later"],
    "wallet": ["Apple Pay", "Google Pay", "crypto wallet", "USDC", "bitcoin"],
    "tech_new": ["won't hold the set temperature", "motor cuts out uphill",
                 "loses GPS mid-flight", "thinks the fridge door is open",
                 "pedal assist stays on level zero"],
    "code_new": ["E-THERM-{code}", "BLE-{code}", "OTA-FAIL-{code}"],
}

# Chat-widget style: abbreviations applied word by word (lowercased keys).
CHAT_ABBREV: dict[str, str] = {
    "please": "pls", "you": "u", "your": "ur", "account": "acct", "thanks": "thx",
    "because": "bc", "are": "r", "with": "w/", "tomorrow": "tmrw", "message": "msg",
    "people": "ppl", "really": "rly", "why": "y", "know": "kno",
}
CHAT_TAILS = ["!!", " asap!!", " pls help", " lol", " wtf", " ???", " :(", " smh", " fr"]

# How an ambiguous ticket mentions the other class's issue (shared wording).
INTRUDER_FRAMES = [
    "Last time {} but that got sorted.", "Before that, {}.", "Also, {}.",
    "Earlier {} too.", "On top of that, {}.", "And {}.",
]

# Rephrasing swaps used for near-duplicates (both directions).
_REPHRASE = [
    ("can't", "cannot"), ("won't", "will not"), ("doesn't", "does not"),
    ("hasn't", "has not"), ("I'm", "I am"), ("don't", "do not"), ("did not", "didn't"),
    ("Please", "Could you please"), ("my", "our"),
]

_SLOT_RE = re.compile(r"\{(\w+)\}")
_KEYBOARD_NEIGHBOURS = {
    "a": "sq", "e": "wr", "i": "uo", "o": "ip", "n": "bm", "r": "et", "s": "ad",
    "t": "ry", "l": "k", "c": "xv", "d": "sf", "h": "gj", "m": "n", "u": "yi",
}


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


_ZIPF_CACHE: dict[tuple[int, float], np.ndarray] = {}


def _pick_zipf(rng: np.random.Generator, options: Sequence[str], exponent: float | None = None) -> str:
    """Pick with Zipf-like weights (1/rank^ZIPF_EXPONENT).

    Why: real ticket wording has a few very common phrasings and a long tail.
    The head is learnable from a few dozen labels; the tail is what later
    rounds (and active learning) have to find.
    """
    a = ZIPF_EXPONENT if exponent is None else exponent
    k = len(options)
    cdf = _ZIPF_CACHE.get((k, a))
    if cdf is None:
        w = 1.0 / np.arange(1, k + 1) ** a
        cdf = _ZIPF_CACHE[(k, a)] = np.cumsum(w / w.sum())
    return options[min(int(np.searchsorted(cdf, rng.random(), side="right")), k - 1)]


def _fill(template: str, rng: np.random.Generator, tables: Sequence[Mapping[str, list[str]]]) -> str:
    """Fill ``{slot}`` placeholders, first table that knows the slot wins.

    Recursion (a slot value containing another slot) is resolved by looping;
    four passes cover every nesting used in the vocabularies.
    """

    def repl(m: re.Match[str]) -> str:
        name = m.group(1)
        if name == "num":
            return str(int(rng.integers(10_000, 999_999)))
        if name == "code":
            return str(int(rng.integers(100, 9_999)))
        if name == "ver":
            return f"{int(rng.integers(1, 6))}.{int(rng.integers(0, 20))}.{int(rng.integers(0, 9))}"
        if name == "years":
            return str(int(rng.integers(2, 15)))
        for table in tables:
            if name in table:
                return _pick_zipf(rng, table[name])
        raise KeyError(f"unknown slot {{{name}}} in template {template!r}")

    out = template
    for _ in range(4):
        new = _SLOT_RE.sub(repl, out)
        if new == out:
            break
        out = new
    return re.sub(r"\s+", " ", out).replace(" .", ".").strip()


def _typo(word: str, rng: np.random.Generator) -> str:
    """One keyboard-style typo: swap, drop, double or hit a neighbouring key."""
    i = int(rng.integers(1, len(word) - 1))
    kind = int(rng.integers(4))
    if kind == 0:
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if kind == 1:
        return word[:i] + word[i + 1 :]
    if kind == 2:
        return word[:i] + word[i] + word[i:]
    near = _KEYBOARD_NEIGHBOURS.get(word[i].lower())
    return word[:i] + (_pick(rng, near) if near else word[i]) + word[i + 1 :]


def _add_typos(text: str, rng: np.random.Generator, rate: float) -> str:
    words = text.split(" ")
    hits = rng.random(len(words)) < rate
    return " ".join(
        _typo(w, rng) if hit and len(w) >= 4 and w.isalpha() else w for w, hit in zip(words, hits)
    )


def _chatify(text: str, rng: np.random.Generator) -> str:
    """Rewrite a ticket as a chat-widget message (drifted phrasing style)."""
    words = []
    for w in text.lower().split(" "):
        core = w.rstrip(".,!?")
        tail = w[len(core) :]
        words.append(CHAT_ABBREV.get(core, core) + ("" if tail in (".", ",") else tail))
    return " ".join(words).strip() + _pick(rng, CHAT_TAILS)


def _rephrase(sentences: list[str], rng: np.random.Generator) -> list[str]:
    """Light rephrasing for near-duplicates: swap contractions/phrases."""
    out = []
    for s in sentences:
        for a, b in _REPHRASE:
            if rng.random() < 0.6:
                src, dst = (a, b) if rng.random() < 0.5 else (b, a)
                s = re.sub(rf"\b{re.escape(src)}\b", dst, s, count=1)
        out.append(s)
    return out


def _class_tables(cls: str, drift: bool) -> list[Mapping[str, list[str]]]:
    tables: list[Mapping[str, list[str]]] = [CLASS_SLOTS[cls]]
    if drift:
        tables = [DRIFT_SHARED_SLOTS, DRIFT_SLOTS, *tables]
    return [*tables, SHARED_SLOTS]


def _core_sentence(cls: str, rng: np.random.Generator, drift: bool) -> str:
    tables = _class_tables(cls, drift)
    if drift and rng.random() < 0.6:
        return _fill(_pick(rng, DRIFT_CORE[cls]), rng, tables)
    return _fill(_pick_zipf(rng, CORE[cls], TEMPLATE_ZIPF_EXPONENT), rng, tables)


def _assemble(
    greeting: str, body: list[str], closing: str, rng: np.random.Generator, drift: bool
) -> str:
    text = " ".join(p for p in [greeting, *body, closing] if p)
    text = _add_typos(text, rng, TYPO_RATE)
    if drift and rng.random() < 0.75:
        return _chatify(text, rng)
    if rng.random() < 0.12:
        text = text.lower()
    return text


def generate_demo_corpus(
    n: int = 3000,
    seed: int = 0,
    drift: bool = False,
    *,
    id_prefix: str | None = None,
    with_meta: bool = False,
) -> pd.DataFrame:
    """Generate ``n`` synthetic support tickets (see the module docstring).

    Args:
        n: number of rows.
        seed: seeds a ``numpy.random.Generator``; the same ``(n, seed, drift)``
            always yields the same frame, a different seed is a fresh sample of
            the same distribution.
        drift: sample from the drifted distribution instead of the reference.
        id_prefix: prefix of the ``id`` column (default ``"demo"``, or
            ``"drift"`` when ``drift=True``). Ids are ``f"{prefix}-{i:06d}"``
            and therefore collide across seeds with the same prefix — give
            arrivals that join an existing pool their own prefix.
        with_meta: also return ``true_label`` (label before noise),
            ``ambiguous``, ``noisy`` and ``near_dup_of`` (id of the ticket a
            row rephrases, or ``None``).

    Returns:
        DataFrame with columns ``id`` (str, unique), ``text``, ``label``
        (+ the meta columns when asked).
    """
    if n < 0:
        raise ValueError("n must be >= 0")
    prefix = id_prefix if id_prefix is not None else ("drift" if drift else "demo")
    # Different streams for reference and drifted data with the same seed.
    rng = np.random.default_rng([int(seed), 1 if drift else 0, 0x1AB])
    shares = DRIFT_CLASS_SHARES if drift else CLASS_SHARES
    probs = np.array([shares[c] for c in CLASSES], dtype=float)
    class_idx = rng.choice(len(CLASSES), size=n, p=probs / probs.sum())

    greetings = ["", "", "hey", "hi", "yo", "hello"] if drift else GREETINGS
    texts: list[str] = []
    true_labels: list[str] = []
    ambiguous = np.zeros(n, dtype=bool)
    near_dup_of: list[str | None] = []
    drafts: list[tuple[str, list[str], str]] = []  # pre-noise parts, reused by near-dups

    shared = [DRIFT_SHARED_SLOTS, SHARED_SLOTS] if drift else [SHARED_SLOTS]
    for i in range(n):
        if i >= 20 and rng.random() < NEAR_DUP_RATE:
            # Rephrase an earlier ticket: same sentences with contractions and
            # phrasing swapped, greeting / sign-off re-drawn half of the time,
            # fresh typos (TF-IDF cosine to the source ≈ 0.8).
            j = int(rng.integers(i))
            cls = true_labels[j]
            src_greeting, src_parts, src_closing = drafts[j]
            greeting = src_greeting if rng.random() < 0.5 else _pick(rng, greetings)
            parts = _rephrase(src_parts, rng)
            closing = src_closing if rng.random() < 0.5 else _pick(rng, CLOSINGS)
            ambiguous[i] = ambiguous[j]
            near_dup_of.append(f"{prefix}-{j:06d}")
        else:
            cls = CLASSES[int(class_idx[i])]
            tables = _class_tables(cls, drift)
            parts = [_core_sentence(cls, rng, drift)]
            if rng.random() < AMBIGUOUS_RATE:
                # The ticket is about ``cls`` but also carries a full core
                # sentence of another class, framed as background. Word
                # counts are roughly tied, so bag-of-words models get these
                # wrong often — they stay uncertain however many labels come.
                other = _pick(rng, [c for c in CLASSES if c != cls])
                intruder = _core_sentence(other, rng, drift).rstrip(".?!")
                frame = _pick(rng, INTRUDER_FRAMES)
                parts.insert(int(rng.integers(2)), frame.format(intruder[0].lower() + intruder[1:]))
                ambiguous[i] = True
            elif rng.random() < DETAIL_RATE:
                parts.append(_fill(_pick(rng, DETAIL[cls]), rng, tables))
            if rng.random() < CONTEXT_RATE:
                context = _fill(_pick(rng, CONTEXT), rng, shared)
                parts.insert(int(rng.integers(len(parts) + 1)), context)
            greeting, closing = _pick(rng, greetings), _pick(rng, CLOSINGS)
            near_dup_of.append(None)
        drafts.append((greeting, parts, closing))
        texts.append(_assemble(greeting, parts, closing, rng, drift))
        true_labels.append(cls)

    labels = list(true_labels)
    noisy = rng.random(n) < LABEL_NOISE_RATE
    for i in np.flatnonzero(noisy):
        labels[i] = _pick(rng, [c for c in CLASSES if c != true_labels[i]])

    df = pd.DataFrame(
        {"id": [f"{prefix}-{i:06d}" for i in range(n)], "text": texts, "label": labels}
    )
    if with_meta:
        df["true_label"] = true_labels
        df["ambiguous"] = ambiguous
        df["noisy"] = noisy
        df["near_dup_of"] = pd.Series(near_dup_of, dtype=object)
    return df


def write_demo_files(
    folder: str | Path,
    n: int = 3000,
    seed: int = 0,
    *,
    n_arrivals: int = 300,
) -> dict[str, Path]:
    """Write the demo's input files into ``folder`` (created if missing).

    * ``pool.csv`` — ``n`` reference tickets with labels. The pipeline treats
      them as unlabelled; the simulated annotators answer from ``label``.
    * ``arrivals_drift.csv`` — ``n_arrivals`` drifted tickets (ids
      ``drift-…``): the drift watch should fire and reopen the campaign.
    * ``arrivals_fresh.csv`` — ``n_arrivals`` new tickets from the reference
      distribution (ids ``fresh-…``, a different seed): the drift watch should
      stay silent.

    Arrival ids never collide with pool ids, so appending them to the pool is
    safe. Returns ``{"pool": path, "arrivals_drift": path, "arrivals_fresh": path}``.
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    frames: dict[str, Callable[[], pd.DataFrame]] = {
        "pool": lambda: generate_demo_corpus(n, seed=seed),
        "arrivals_drift": lambda: generate_demo_corpus(n_arrivals, seed=seed + 1, drift=True),
        "arrivals_fresh": lambda: generate_demo_corpus(
            n_arrivals, seed=seed + 2, id_prefix="fresh"
        ),
    }
    paths: dict[str, Path] = {}
    for name, make in frames.items():
        path = out / f"{name}.csv"
        make().to_csv(path, index=False)
        paths[name] = path
    return paths
