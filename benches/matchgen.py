"""Seeded generator of labelled contacts with realistic duplicates, for the matching benches.

Each person (entity) appears one to four times; copies are corrupted the way
practice exports are (typos, nicknames, swapped names, case, phone formats,
missing fields, people who moved house, changed e-mails). Households share a
surname, an address and a landline but are different people: the hard
negatives. Every row carries its entity label in `cluster`. Pure Python,
deterministic for a given (n, seed); writes nothing unless asked.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import string
import tempfile
from collections.abc import Iterator
from pathlib import Path

COLUMNS = [
    "id",
    "cluster",
    "given_name",
    "family_name",
    "display_name",
    "organisation",
    "email",
    "phone",
    "mobile",
    "street",
    "city",
    "region",
    "postcode",
    "country",
    "date_of_birth",
]

GIVEN = [
    "james",
    "john",
    "robert",
    "michael",
    "william",
    "david",
    "richard",
    "joseph",
    "thomas",
    "charles",
    "christopher",
    "daniel",
    "matthew",
    "anthony",
    "mark",
    "donald",
    "steven",
    "paul",
    "andrew",
    "joshua",
    "kenneth",
    "kevin",
    "brian",
    "george",
    "timothy",
    "ronald",
    "edward",
    "jason",
    "jeffrey",
    "ryan",
    "jacob",
    "gary",
    "nicholas",
    "eric",
    "jonathan",
    "stephen",
    "larry",
    "justin",
    "scott",
    "brandon",
    "benjamin",
    "samuel",
    "gregory",
    "alexander",
    "frank",
    "patrick",
    "raymond",
    "jack",
    "dennis",
    "jerry",
    "tyler",
    "aaron",
    "jose",
    "adam",
    "nathan",
    "henry",
    "douglas",
    "zachary",
    "peter",
    "kyle",
    "noah",
    "ethan",
    "jeremy",
    "walter",
    "christian",
    "keith",
    "roger",
    "terry",
    "austin",
    "sean",
    "gerald",
    "carl",
    "harold",
    "dylan",
    "arthur",
    "lawrence",
    "jordan",
    "jesse",
    "bryan",
    "billy",
    "bruce",
    "gabriel",
    "joe",
    "logan",
    "albert",
    "willie",
    "alan",
    "eugene",
    "russell",
    "vincent",
    "philip",
    "bobby",
    "johnny",
    "bradley",
    "liam",
    "oliver",
    "lachlan",
    "cooper",
    "harrison",
    "mitchell",
    "hamish",
    "angus",
    "mary",
    "patricia",
    "jennifer",
    "linda",
    "elizabeth",
    "barbara",
    "susan",
    "jessica",
    "sarah",
    "karen",
    "lisa",
    "nancy",
    "betty",
    "margaret",
    "sandra",
    "ashley",
    "kimberly",
    "emily",
    "donna",
    "michelle",
    "carol",
    "amanda",
    "dorothy",
    "melissa",
    "deborah",
    "stephanie",
    "rebecca",
    "sharon",
    "laura",
    "cynthia",
    "kathleen",
    "amy",
    "angela",
    "shirley",
    "anna",
    "brenda",
    "pamela",
    "emma",
    "nicole",
    "helen",
    "samantha",
    "katherine",
    "christine",
    "debra",
    "rachel",
    "carolyn",
    "janet",
    "catherine",
    "maria",
    "heather",
    "diane",
    "ruth",
    "julie",
    "olivia",
    "joyce",
    "virginia",
    "victoria",
    "kelly",
    "lauren",
    "christina",
    "joan",
    "evelyn",
    "judith",
    "megan",
    "andrea",
    "cheryl",
    "hannah",
    "jacqueline",
    "martha",
    "gloria",
    "teresa",
    "ann",
    "sara",
    "madison",
    "frances",
    "kathryn",
    "janice",
    "jean",
    "abigail",
    "alice",
    "judy",
    "sophia",
    "grace",
    "denise",
    "amber",
    "doris",
    "marilyn",
    "danielle",
    "beverley",
    "isabella",
    "theresa",
    "diana",
    "natalie",
    "brittany",
    "charlotte",
    "marie",
    "kayla",
    "alexis",
    "lori",
    "chloe",
    "matilda",
    "isla",
    "ruby",
    "zoe",
    "mia",
    "harper",
    "sienna",
    "willow",
]

FAMILY = [
    "smith",
    "jones",
    "williams",
    "brown",
    "wilson",
    "taylor",
    "johnson",
    "white",
    "martin",
    "anderson",
    "thompson",
    "nguyen",
    "thomas",
    "walker",
    "harris",
    "lee",
    "ryan",
    "robinson",
    "kelly",
    "king",
    "davis",
    "wright",
    "evans",
    "roberts",
    "green",
    "hall",
    "wood",
    "jackson",
    "clarke",
    "patel",
    "khan",
    "lewis",
    "james",
    "phillips",
    "mitchell",
    "campbell",
    "turner",
    "cooper",
    "murphy",
    "young",
    "scott",
    "morris",
    "edwards",
    "baker",
    "allen",
    "hughes",
    "stewart",
    "hill",
    "carter",
    "ward",
    "moore",
    "collins",
    "bell",
    "cook",
    "miller",
    "shaw",
    "clark",
    "watson",
    "morgan",
    "parker",
    "davies",
    "fraser",
    "richardson",
    "tran",
    "graham",
    "murray",
    "ross",
    "wang",
    "chen",
    "le",
    "li",
    "zhang",
    "kennedy",
    "russell",
    "jenkins",
    "wallace",
    "gray",
    "mcdonald",
    "johnston",
    "marshall",
    "reid",
    "hunt",
    "simpson",
    "bennett",
    "watts",
    "mason",
    "price",
    "dixon",
    "lawrence",
    "ellis",
    "wilkinson",
    "holmes",
    "webb",
    "walsh",
    "byrne",
    "sullivan",
    "brennan",
    "obrien",
    "doherty",
    "singh",
    "sharma",
    "kaur",
    "pham",
    "huynh",
    "vo",
    "ho",
    "ngo",
    "dang",
    "bui",
    "do",
    "duong",
    "lim",
    "tan",
    "wong",
    "chan",
    "lam",
    "cheung",
    "ho",
    "yang",
    "wu",
    "liu",
    "huang",
    "zhou",
    "xu",
    "sun",
    "ma",
    "zhu",
    "hu",
    "guo",
    "lin",
    "he",
    "gao",
    "luo",
    "zheng",
    "liang",
    "xie",
    "song",
    "tang",
    "han",
    "feng",
    "papadopoulos",
    "nikolaidis",
    "rossi",
    "russo",
    "ferrari",
    "esposito",
    "bianchi",
    "romano",
    "colombo",
    "ricci",
    "marino",
    "greco",
    "bruno",
    "gallo",
    "conti",
    "deluca",
    "costa",
    "giordano",
    "mancini",
    "rizzo",
    "lombardi",
    "moretti",
    "schmidt",
    "schneider",
    "fischer",
    "weber",
    "meyer",
    "wagner",
    "becker",
    "schulz",
    "hoffmann",
    "koch",
    "richter",
]

SYLL = [
    "ab",
    "ac",
    "ad",
    "al",
    "an",
    "ar",
    "as",
    "at",
    "ba",
    "be",
    "bi",
    "bo",
    "bu",
    "ca",
    "ce",
    "ci",
    "co",
    "cu",
    "da",
    "de",
    "di",
    "do",
    "du",
    "el",
    "em",
    "en",
    "er",
    "es",
    "fa",
    "fe",
    "fi",
    "fo",
    "ga",
    "ge",
    "gi",
    "go",
    "ha",
    "he",
    "hi",
    "ho",
    "il",
    "in",
    "ir",
    "is",
    "ka",
    "ke",
    "ki",
    "ko",
    "la",
    "le",
    "li",
    "lo",
    "lu",
    "ma",
    "me",
    "mi",
    "mo",
    "mu",
    "na",
    "ne",
    "ni",
    "no",
    "nu",
    "ol",
    "on",
    "or",
    "os",
    "pa",
    "pe",
    "pi",
    "po",
    "ra",
    "re",
    "ri",
    "ro",
    "ru",
    "sa",
    "se",
    "si",
    "so",
    "ta",
    "te",
    "ti",
    "to",
    "tu",
    "va",
    "ve",
    "vi",
    "vo",
    "wa",
    "we",
    "wi",
    "ya",
    "yo",
    "za",
    "ze",
    "zi",
]
ENDINGS = ["son", "ton", "ley", "man", "er", "ski", "ova", "ini", "os", "ez", "ard", "well", ""]

NICKS = {
    "james": ["jim", "jimmy", "jamie"],
    "john": ["jack", "johnny", "jon"],
    "robert": ["bob", "rob", "bobby", "robbie"],
    "michael": ["mike", "mick", "mikey"],
    "william": ["bill", "will", "billy", "liam"],
    "david": ["dave", "davy"],
    "richard": ["rick", "dick", "rich"],
    "joseph": ["joe", "joey"],
    "thomas": ["tom", "tommy"],
    "charles": ["charlie", "chuck"],
    "christopher": ["chris", "kit"],
    "daniel": ["dan", "danny"],
    "matthew": ["matt", "matty"],
    "anthony": ["tony"],
    "andrew": ["andy", "drew"],
    "joshua": ["josh"],
    "kenneth": ["ken", "kenny"],
    "timothy": ["tim", "timmy"],
    "ronald": ["ron", "ronnie"],
    "edward": ["ed", "eddie", "ted"],
    "jeffrey": ["jeff"],
    "jacob": ["jake"],
    "nicholas": ["nick", "nicky"],
    "jonathan": ["jon", "jonny"],
    "stephen": ["steve"],
    "lawrence": ["larry"],
    "benjamin": ["ben", "benny"],
    "samuel": ["sam", "sammy"],
    "gregory": ["greg"],
    "alexander": ["alex", "alec"],
    "patrick": ["pat", "paddy"],
    "raymond": ["ray"],
    "nathan": ["nate"],
    "douglas": ["doug"],
    "zachary": ["zach"],
    "peter": ["pete"],
    "gerald": ["gerry"],
    "harold": ["harry"],
    "philip": ["phil"],
    "elizabeth": ["liz", "beth", "betty", "lizzie"],
    "patricia": ["pat", "trish"],
    "jennifer": ["jen", "jenny"],
    "margaret": ["maggie", "peggy", "meg"],
    "susan": ["sue", "susie"],
    "jessica": ["jess"],
    "kimberly": ["kim"],
    "deborah": ["deb", "debbie"],
    "rebecca": ["becky", "bec"],
    "katherine": ["kate", "katie", "kath"],
    "catherine": ["cathy", "kate", "cath"],
    "samantha": ["sam"],
    "christine": ["chris"],
    "victoria": ["vicky", "tori"],
    "kathleen": ["kathy"],
    "abigail": ["abby"],
    "alexis": ["alex"],
    "pamela": ["pam"],
    "cynthia": ["cindy"],
    "amanda": ["mandy"],
    "dorothy": ["dot"],
    "melissa": ["mel"],
    "stephanie": ["steph"],
    "isabella": ["bella", "izzy"],
    "matilda": ["tilly"],
}

STREETS = [
    "george",
    "king",
    "queen",
    "elizabeth",
    "victoria",
    "church",
    "high",
    "station",
    "park",
    "railway",
    "bridge",
    "mill",
    "william",
    "john",
    "albert",
    "edward",
    "charles",
    "river",
    "beach",
    "ocean",
    "hill",
    "forest",
    "bay",
    "harbour",
    "market",
    "smith",
    "collins",
    "bourke",
    "flinders",
    "swanston",
    "elizabeth",
    "pitt",
    "macquarie",
    "oxford",
    "crown",
    "sussex",
    "hunter",
    "york",
    "clarence",
    "kent",
    "liverpool",
    "bathurst",
    "goulburn",
    "campbell",
    "parramatta",
    "anzac",
    "wattle",
    "acacia",
    "banksia",
    "grevillea",
    "waratah",
    "jacaranda",
    "eucalyptus",
    "bottlebrush",
    "boronia",
]
STREET_TYPES = [
    ("Street", "St"),
    ("Road", "Rd"),
    ("Avenue", "Ave"),
    ("Drive", "Dr"),
    ("Court", "Ct"),
    ("Place", "Pl"),
    ("Crescent", "Cres"),
    ("Parade", "Pde"),
]
SUBURBS = (
    (
        "Richmond Carlton Fitzroy Brunswick Northcote Preston Coburg Footscray Yarraville "
        "Williamstown Newtown Glebe Paddington Bondi Manly Mosman Chatswood Parramatta Penrith "
        "Liverpool Blacktown Hornsby Ryde Epping Strathfield Ashfield Marrickville Randwick "
        "Coogee Maroubra Cronulla Sutherland Hurstville Kogarah Bankstown Toowong Indooroopilly "
        "Paddington Ashgrove Chermside Nundah Sandgate Redcliffe Subiaco Fremantle Cottesloe "
        "Scarborough Joondalup Glenelg Norwood Unley Prospect Salisbury Sandy_Bay Battery_Point "
        "Kingston Belconnen Woden Tuggeranong Gungahlin Braddon Dickson Fyshwick Phillip"
    )
    .replace("_", " ")
    .split()
)
STATES = [
    ("NSW", 2000),
    ("VIC", 3000),
    ("QLD", 4000),
    ("WA", 6000),
    ("SA", 5000),
    ("TAS", 7000),
    ("ACT", 2600),
]
DOMAINS = (
    ["gmail.com"] * 8
    + ["hotmail.com"] * 3
    + ["outlook.com"] * 2
    + [
        "bigpond.com",
        "yahoo.com.au",
        "optusnet.com.au",
        "icloud.com",
        "live.com.au",
        "internode.on.net",
        "tpg.com.au",
    ]
)
ORGS = [
    "Acme Holdings",
    "Southern Cross Accounting",
    "Harbour Legal",
    "Blue Gum Builders",
    "Outback Logistics",
    "Coastal Dental",
    "Red Earth Mining",
    "Sunrise Bakery",
    "Koala Software",
    "Eastside Plumbing",
]


def _weighted(items: list[str], rng: random.Random, s: float = 0.9) -> list[float]:
    return [1.0 / (k + 1) ** s for k in range(len(items))]


class _Gen:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        r = self.rng
        self.given = GIVEN[:]
        r.shuffle(self.given)
        self.given_w = _weighted(self.given, r, 0.5)
        self.family = FAMILY[:]
        self.family_w = _weighted(self.family, r, 0.6)
        self.phones: set[str] = set()
        self.emails: set[str] = set()

    def surname(self) -> str:
        r = self.rng
        if r.random() < 0.35:
            return r.choices(self.family, self.family_w)[0]
        n = r.choice((2, 2, 3))
        return "".join(r.choice(SYLL) for _ in range(n)) + r.choice(ENDINGS)

    def unique_phone(self, mobile: bool) -> str:
        r = self.rng
        while True:
            if mobile:
                p = "04" + "".join(r.choices(string.digits, k=8))
            else:
                p = r.choice("23578") + "".join(r.choices(string.digits, k=8))
                p = "0" + p
            if p not in self.phones:
                self.phones.add(p)
                return p

    def email(self, given: str, family: str, year: int) -> str:
        r = self.rng
        shapes = [
            f"{given}.{family}",
            f"{given[0]}{family}",
            f"{given}{family}",
            f"{given}_{family}",
            f"{family}.{given}",
            f"{given}{year % 100:02d}",
            f"{given}.{family}{r.randint(1, 99)}",
        ]
        for _ in range(20):
            local = r.choice(shapes)
            e = f"{local}@{r.choice(DOMAINS)}"
            if e not in self.emails:
                self.emails.add(e)
                return e
            shapes.append(f"{given}{family}{r.randint(100, 9999)}")
        e = f"{given}.{family}.{r.randint(10000, 99999999)}@{r.choice(DOMAINS)}"
        self.emails.add(e)
        return e

    def address(self) -> dict[str, str]:
        r = self.rng
        state, base = r.choice(STATES)
        st = r.choices(STREETS, _weighted(STREETS, r, 0.5))[0].title()
        typ = r.choice(STREET_TYPES)
        num = str(r.randint(1, 250))
        if r.random() < 0.2:
            num = f"{r.randint(1, 30)}/{num}"
        return {
            "street": f"{num} {st} {typ[0]}",
            "street_abbr": f"{num} {st} {typ[1]}",
            "city": r.choice(SUBURBS),
            "region": state,
            "postcode": str(base + r.randint(0, 199)),
        }

    def given_name(self) -> str:
        return self.rng.choices(self.given, self.given_w)[0]

    def person(self, household: dict[str, str] | None = None) -> dict[str, str]:
        r = self.rng
        given = self.given_name()
        while household is not None and given == household["given"]:
            given = self.given_name()  # siblings are not namesakes
        if household is not None and r.random() < 0.85:
            family = household["family"]
        else:
            family = self.surname()
        year = r.randint(1935, 2006)
        p = {
            "given": given,
            "middle": r.choice(self.given) if r.random() < 0.3 else "",
            "family": family,
            "dob": f"{year:04d}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}",
            "mobile": self.unique_phone(True),
            "email": self.email(given, family, year) if r.random() < 0.9 else "",
            "organisation": r.choice(ORGS) if r.random() < 0.15 else "",
        }
        if household is not None:
            p.update(
                {
                    k: household[k]
                    for k in ("street", "street_abbr", "city", "region", "postcode", "phone")
                }
            )
            if household.get("email") and r.random() < 0.05:
                p["email"] = household["email"]  # a shared family address
        else:
            p.update(self.address())
            p["phone"] = self.unique_phone(False) if r.random() < 0.45 else ""
        return p


class _RealisticGen(_Gen):
    """A population with the shape of a national register, for the scale bench:
    given and family names drawn from long-headed (Zipf) frequencies over the
    lists above plus a synthetic tail, so common given + family pairs repeat
    thousands of times at 1M; five cities with a hundred postcodes each and
    the same few dozen street names, so many households share a street and a
    postcode; twins (same family, date of birth, address and landline,
    another given name) among the household members."""

    CITIES = (("Sydney", "NSW", 2000), ("Melbourne", "VIC", 3000), ("Brisbane", "QLD", 4000),
              ("Perth", "WA", 6000), ("Adelaide", "SA", 5000))

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.given_w = [1.0 / (k + 1) ** 0.75 for k in range(len(self.given))]
        self.family_w = [1.0 / (k + 1) ** 0.65 for k in range(len(self.family))]
        self.city_w = [0.35, 0.3, 0.15, 0.1, 0.1]
        self.street_w = _weighted(STREETS, self.rng, 0.8)

    def given_name(self) -> str:
        r = self.rng
        if r.random() < 0.1:  # a tail of rarer (often non-Anglo) given names
            return "".join(r.choice(SYLL) for _ in range(2)) + r.choice(("a", "o", "i", ""))
        return r.choices(self.given, self.given_w)[0]

    def surname(self) -> str:
        r = self.rng
        if r.random() < 0.7:
            return r.choices(self.family, self.family_w)[0]
        n = r.choice((2, 2, 3))
        return "".join(r.choice(SYLL) for _ in range(n)) + r.choice(ENDINGS)

    def address(self) -> dict[str, str]:
        r = self.rng
        city, state, base = r.choices(self.CITIES, self.city_w)[0]
        # postcodes: a few busy inner ones, a long tail of suburbs
        pc = base + min(int(r.expovariate(1 / 25)), 99)
        st = r.choices(STREETS, self.street_w)[0].title()
        typ = r.choice(STREET_TYPES)
        num = str(r.randint(1, 120))
        if r.random() < 0.25:
            num = f"{r.randint(1, 40)}/{num}"
        return {
            "street": f"{num} {st} {typ[0]}",
            "street_abbr": f"{num} {st} {typ[1]}",
            "city": city,
            "region": state,
            "postcode": str(pc),
        }


def _typo(s: str, r: random.Random) -> str:
    if len(s) < 3:
        return s
    k = r.randrange(1, len(s) - 1)
    op = r.random()
    if op < 0.3:  # transposition
        return s[:k] + s[k + 1] + s[k] + s[k + 2 :]
    if op < 0.55:  # substitution
        return s[:k] + r.choice(string.ascii_lowercase) + s[k + 1 :]
    if op < 0.8:  # deletion
        return s[:k] + s[k + 1 :]
    return s[:k] + r.choice(string.ascii_lowercase) + s[k:]  # insertion


def _phone_format(p: str, r: random.Random) -> str:
    if not p:
        return p
    rest = p[1:]
    x = r.random()
    if x < 0.3:
        return p
    if x < 0.5:
        return "+61" + rest
    if p.startswith("04"):
        if x < 0.75:
            return f"{p[:4]} {p[4:7]} {p[7:]}"
        if x < 0.9:
            return f"+61 {rest[:3]} {rest[3:6]} {rest[6:]}"
        return f"({p[:2]}) {p[2:6]} {p[6:]}"
    if x < 0.8:
        return f"({p[:2]}) {p[2:6]} {p[6:]}"
    return f"{p[:2]} {p[2:6]} {p[6:]}"


def _case(s: str, mode: int) -> str:
    if mode == 1:
        return s.upper()
    if mode == 2:
        return s.lower()
    return " ".join(w.capitalize() for w in s.split(" "))


def _render(p: dict[str, str], r: random.Random, corrupt: bool, g: _Gen) -> dict[str, str]:
    given, middle, family = p["given"], p["middle"], p["family"]
    email, mobile, phone, dob = p["email"], p["mobile"], p["phone"], p["dob"]
    street, city, postcode, region = p["street"], p["city"], p["postcode"], p["region"]
    if r.random() < 0.4:
        street = p["street_abbr"]
    show_middle = bool(middle) and r.random() < 0.5
    swapped = False
    if corrupt:
        if given in NICKS and r.random() < 0.15:
            given = r.choice(NICKS[given])
        elif r.random() < 0.07:
            given = _typo(given, r)
        elif r.random() < 0.02:
            given = given[0]
        if r.random() < 0.07:
            family = _typo(family, r)
        swapped = r.random() < 0.04
        if r.random() < 0.15:
            email = ""
        elif email and r.random() < 0.08:
            local = email.split("@")[0]
            moved_to = f"{local}@{r.choice(DOMAINS)}"  # new provider, same local part
            if moved_to not in g.emails:  # addresses are unique to their owner
                g.emails.add(moved_to)
                email = moved_to
        elif email and r.random() < 0.04:
            email = g.email(given, family, int(dob[:4]))  # a new address altogether
        elif email and r.random() < 0.03:
            local, dom = email.split("@")
            email = f"{_typo(local, r)}@{dom}"
        if r.random() < 0.12:
            mobile = ""
        elif r.random() < 0.03:
            mobile = g.unique_phone(True)  # new number
        elif r.random() < 0.02:
            k = r.randrange(2, len(mobile))
            mobile = mobile[:k] + r.choice(string.digits) + mobile[k + 1 :]
        if r.random() < 0.1:
            # moved house: new address, the landline goes with the old one
            a = g.address()
            street = a["street"]
            city, postcode, region = a["city"], a["postcode"], a["region"]
            phone = g.unique_phone(False) if r.random() < 0.3 else ""
        elif r.random() < 0.08:
            street = city = postcode = ""
        if r.random() < 0.2:
            dob = ""
        elif r.random() < 0.03:
            y, m, d = dob.split("-")
            if int(d) <= 12:
                dob = f"{y}-{d}-{m}"
        elif r.random() < 0.03:
            k = r.choice((2, 3, 5, 6, 8, 9))
            dob = dob[:k] + r.choice("012") + dob[k + 1 :]
            if not ("01" <= dob[5:7] <= "12" and "01" <= dob[8:] <= "31"):
                dob = p["dob"]
        if r.random() < 0.1:
            phone = ""
    case_mode = r.choices((0, 1, 2), (0.8, 0.13, 0.07))[0] if corrupt else 0
    g_out = _case(given + (" " + middle if show_middle else ""), case_mode)
    f_out = _case(family, case_mode)
    if swapped:
        g_out, f_out = f_out, g_out
    display = f"{g_out} {f_out}" if r.random() < 0.7 else f"{f_out.upper()}, {g_out}"
    if corrupt and r.random() < 0.08:
        g_out = f_out = ""  # only the display name was exported
    dob_out = dob
    if dob and r.random() < 0.3:
        y, m, d = dob.split("-")
        dob_out = f"{d}/{m}/{y}"
    return {
        "given_name": g_out,
        "family_name": f_out,
        "display_name": display,
        "organisation": p["organisation"],
        "email": email.upper() if email and case_mode == 1 else email,
        "phone": _phone_format(phone, r),
        "mobile": _phone_format(mobile, r),
        "street": street,
        "city": city,
        "region": region,
        "postcode": postcode,
        "country": "AU" if r.random() < 0.5 else "Australia",
        "date_of_birth": dob_out,
    }


POPULATIONS = ("classic", "realistic")


def generate(n: int, seed: int = 1, population: str = "classic") -> Iterator[dict[str, str]]:
    """Yields n labelled contacts (`id`, `cluster` + the contact fields), shuffled.

    `population`: "classic" (the issue-3 set: most surnames rare) or
    "realistic" (`_RealisticGen`: long-headed name frequencies, five cities,
    shared streets, twins)."""
    if population not in POPULATIONS:
        raise ValueError(f"population must be one of {POPULATIONS}")
    realistic = population == "realistic"
    g = _RealisticGen(seed) if realistic else _Gen(seed)
    r = g.rng
    rows: list[dict[str, str]] = []
    entity = 0
    households: list[dict[str, str]] = []
    while len(rows) < n:
        household = None
        if households and r.random() < 0.15:
            household = r.choice(households)
        p = g.person(household)
        if realistic and household is not None and r.random() < 0.04:
            # a twin of the household's first member: same birthday, family
            # name, address and landline; another given name
            p["family"] = household["family"]
            p["dob"] = household["dob"]
        if household is None:
            h = {
                k: p[k]
                for k in (
                    "given",
                    "family",
                    "street",
                    "street_abbr",
                    "city",
                    "region",
                    "postcode",
                    "phone",
                    "email",
                    "dob",
                )
            }
            households.append(h)
            if len(households) > 5000:
                households.pop(r.randrange(len(households)))
        copies = r.choices((1, 2, 3, 4), (0.6, 0.25, 0.1, 0.05))[0]
        for c in range(copies):
            if len(rows) >= n:
                break
            rec = _render(p, r, corrupt=c > 0, g=g)
            rec["cluster"] = f"e{entity}"
            rows.append(rec)
        entity += 1
    r.shuffle(rows)
    for k, rec in enumerate(rows):
        rec["id"] = f"r{k}"
        yield rec


def write_csv(path: str | os.PathLike[str], n: int, seed: int = 1,
              population: str = "classic") -> Path:
    path = Path(path)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        for rec in generate(n, seed, population):
            w.writerow(rec)
    return path


def cached_csv(n: int, seed: int = 1, population: str = "classic") -> Path:
    """The generated set as a CSV in the temp dir, made once per (n, seed, population)."""
    d = Path(tempfile.gettempdir()) / "contactsync-matchgen"
    d.mkdir(exist_ok=True)
    tag = "" if population == "classic" else f"-{population}"
    path = d / f"contacts-{n}-{seed}{tag}.csv"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        write_csv(tmp, n, seed, population)
        tmp.replace(path)
    return path


def true_pairs(labels: list[str], ids: list[str]) -> set[tuple[str, str]]:
    """Every unordered pair of ids with the same label, as (smaller, larger)."""
    by: dict[str, list[str]] = {}
    for lab, i in zip(labels, ids, strict=True):
        by.setdefault(lab, []).append(i)
    out: set[tuple[str, str]] = set()
    for members in by.values():
        for a in range(len(members)):
            for b in range(a + 1, len(members)):
                x, y = members[a], members[b]
                out.add((x, y) if x < y else (y, x))
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--population", choices=POPULATIONS, default="classic")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    write_csv(a.out, a.n, a.seed, a.population)
