"""Danish name and text material for the reference world.

The three name lists are pairwise disjoint and no word in them contains another
(case-insensitively), so a customer's three-part name ``first middle last`` never
occurs inside any other generated name: it is a safe canary to search for.
"""

from __future__ import annotations

FIRST_NAMES: tuple[str, ...] = tuple(
    """
    Mette Lars Søren Kirsten Hanne Holger Pia Karen Bent Lone Inger Birgitte Freja Signe Astrid
    Anton Magnus Clara Oskar Laura Viktor Sofie Emil Nanna Kasper Cecilie Troels Maja Jonas Lisbeth
    Torben Vibeke Ulrik Dorte Jesper Tove Palle Bodil Esben Helle Kaj Susanne Bjarne Agnete Vagn
    Rikke Tobias Karoline Sune Margrethe Asger Ingrid Malthe Thyra Aksel Gudrun Valdemar Benedikte
    Halfdan Ragnhild
    """.split()
)

MIDDLE_NAMES: tuple[str, ...] = tuple(
    """
    Kjær Lund Bach Dahl Skov Krogh Juhl Kirk Bech Munk Damgaard Vestergaard Nørgaard Holst Brink
    Lykke Winther Friis Schou Mølgaard Stampe Fogh Rye Toft Bundgaard Hjort Mørch Ravn Bendix
    Overgaard Storm Frost Stendal Løvstrup Engstrøm Ahlefeldt Bruun Duus Kamp Ulv
    """.split()
)

LAST_NAMES: tuple[str, ...] = tuple(
    """
    Jensen Nielsen Hansen Pedersen Andersen Christensen Rasmussen Jørgensen Petersen Madsen
    Kristensen Olsen Thomsen Poulsen Lassen Knudsen Mortensen Møller Jakobsen Jacobsen Mikkelsen
    Frederiksen Laursen Henriksen Østergaard Clausen Iversen Simonsen Svendsen Ebbesen Ibsen
    Mathiesen Kjeldsen Dalsgaard Abildgaard Søndergaard Nygaard Bertelsen Schmidt Thorsen Vinther
    Koch Bisgaard Lauritzen Gregersen Carstensen Bonde Sandberg Hedegaard Ottosen Villadsen Kofoed
    Brandt Buch Gade Bang Borup Egebjerg Fabricius Hvidberg
    """.split()
)

STREETS: tuple[str, ...] = (
    "Nørregade",
    "Vestergade",
    "Østergade",
    "Algade",
    "Strandvejen",
    "Jernbanegade",
    "Kongensgade",
    "Skolevej",
    "Birkevej",
    "Møllevej",
    "Engvej",
    "Kirkevej",
    "Havnegade",
    "Bredgade",
    "Søndergade",
    "Ryesgade",
    "Sankt Hans Gade",
    "Frederiksberg Allé",
    "Amagerbrogade",
    "Vesterbrogade",
)

CITIES: tuple[tuple[str, str], ...] = (
    ("1050", "København K"),
    ("2100", "København Ø"),
    ("2200", "København N"),
    ("2300", "København S"),
    ("2450", "København SV"),
    ("2000", "Frederiksberg"),
    ("8000", "Aarhus C"),
    ("5000", "Odense C"),
    ("9000", "Aalborg"),
    ("6700", "Esbjerg"),
    ("7100", "Vejle"),
    ("4000", "Roskilde"),
    ("8900", "Randers"),
    ("7400", "Herning"),
    ("3000", "Helsingør"),
    ("6000", "Kolding"),
    ("8700", "Horsens"),
    ("4700", "Næstved"),
)

E_MAIL_DOMAINS: tuple[str, ...] = ("example.dk", "example.com", "example.net", "example.org")

LANGUAGES: tuple[str, ...] = ("da", "en", "de", "sv", "nb", "fr", "es", "pl", "uk", "ar", "tr")

DOCUMENT_KINDS: tuple[str, ...] = (
    "lejekontrakt",
    "ansættelseskontrakt",
    "dåbsattest",
    "vielsesattest",
    "eksamensbevis",
    "lægeerklæring",
    "skilsmissebevilling",
    "årsrapport",
    "fuldmagt",
    "købsaftale",
    "testamente",
    "brugsanvisning",
    "hjemmeside",
    "retsbog",
    "forsikringspolice",
)

ROLES: tuple[str, ...] = ("indkøber", "projektleder", "direktør", "bogholder", "jurist", "HR-partner")

INTERPRETER_VENUES: tuple[str, ...] = (
    "Københavns Byret",
    "Retten i Aarhus",
    "Rigshospitalet",
    "Odense Universitetshospital",
    "Udlændingestyrelsen",
    "Jobcenter Vejle",
    "Aalborg Kommune, Borgerservice",
    "Advokatfirmaet Nordhavn",
    "Politigården",
    "Hotel d'Angleterre, mødelokale 3",
)

INTERPRETER_TOPICS: tuple[str, ...] = (
    "forundersøgelse i straffesag",
    "samtale om behandlingsforløb",
    "asylsamtale",
    "forældremyndighedssag",
    "ansættelsessamtale",
    "bestyrelsesmøde",
    "skilsmissemøde",
    "samtale om sygedagpenge",
    "forhandling om lejeforhold",
    "afhøring af vidne",
)

THIRD_PARTY_SOURCES: tuple[str, ...] = (
    "CVR-registret",
    "kreditoplysningsbureau",
    "samarbejdspartner (tolkeformidling)",
    "kommunal henvisning",
    "advokat for modparten",
    "forsikringsselskab",
)

THIRD_PARTY_FACTS: tuple[str, ...] = (
    "kreditvurdering og betalingshistorik",
    "henvisning med oplysninger om helbred",
    "kontaktoplysninger videregivet af samarbejdspartner",
    "oplysninger om verserende retssag",
    "adresseændring fra folkeregistret",
    "oplysninger om forsikringsskade",
)

CONSENT_CHANNELS: tuple[str, ...] = ("email", "sms", "post", "telefon")

PRIVACY_REQUEST_KINDS: tuple[str, ...] = (
    "indsigt",
    "sletning",
    "berigtigelse",
    "indsigelse",
    "dataportabilitet",
)

CORRESPONDENCE_SUBJECTS: tuple[str, ...] = (
    "Tilbud på oversættelse",
    "Spørgsmål til leveringstid",
    "Rettelser til oversættelsen",
    "Bekræftelse af ordre",
    "Faktura og betalingsbetingelser",
    "Tolkebestilling",
    "Ændring af kontaktoplysninger",
    "Reklamation",
    "Tak for samarbejdet",
    "Hastesag",
)

CORRESPONDENCE_BODIES: tuple[str, ...] = (
    "Kære {name}\n\nTak for din henvendelse om {kind}. Vi vender tilbage med et tilbud inden for "
    "to hverdage. Du kan altid ringe til os, eller vi ringer til dig på {phone}.\n\n"
    "Venlig hilsen\nAlles-klar Oversættelser",
    "Hej Alles-klar\n\nJeg har brug for en autoriseret oversættelse af min {kind} til {lang}. "
    "Kan I nå det inden fredag? Svar gerne til {email}.\n\nMed venlig hilsen\n{name}",
    "Kære {name}\n\nVedhæftet finder du den færdige oversættelse af {kind}. Skriv endelig, hvis "
    "der er rettelser, så retter vi dem uden beregning.\n\nMange hilsner\nAlles-klar Oversættelser",
    "Til Alles-klar\n\nDer er desværre en fejl i navnet på side 2 i oversættelsen af min {kind}. "
    "Det skal stå som {name}. Jeg kan træffes på {phone}.\n\nHilsen\n{name}",
    "Kære {name}\n\nVi bekræfter hermed bestillingen af en tolk til {topic}. Tolken møder op ti "
    "minutter før aftalt tid.\n\nVenlig hilsen\nAlles-klar Tolkeservice",
)

DOCUMENT_SENTENCES: tuple[str, ...] = (
    "Undertegnede erklærer hermed, at oplysningerne i dette dokument er korrekte og fuldstændige.",
    "Parterne er enige om, at aftalen er gældende fra underskriftsdatoen.",
    "Lejemålet kan af begge parter opsiges med tre måneders varsel til den første i en måned.",
    "Eksamen er bestået med et samlet gennemsnit på 10,4 efter 7-trins-skalaen.",
    "Patienten er undersøgt og fundet egnet til at genoptage arbejdet på nedsat tid.",
    "Ægteskabet er indgået ved en borgerlig vielse på rådhuset.",
    "Fuldmagten omfatter alle dispositioner vedrørende den nævnte ejendom.",
    "Købesummen berigtiges kontant på overtagelsesdagen ved deponering hos købers advokat.",
    "Selskabets resultat efter skat udgør et overskud, som overføres til næste år.",
    "Ved tvister afgøres sagen efter dansk ret ved de almindelige domstole.",
    "Oversættelsen er foretaget efter bedste evne og stemmer overens med originalen.",
    "Dokumentet er forsynet med stempel og underskrift fra den udstedende myndighed.",
)

REVISION_NOTES: tuple[str, ...] = (
    "Første udkast til gennemlæsning hos kunden.",
    "Rettet efter kundens kommentarer: stavemåde af navne og datoer.",
    "Endelig version, godkendt og forsynet med translatørpåtegning.",
)

SECRET_ADJECTIVES: tuple[str, ...] = (
    "fortrolige",
    "hemmelige",
    "personlige",
    "private",
    "lukkede",
    "interne",
)

SECRET_NOUNS: tuple[str, ...] = (
    "opskrift på æblekage",
    "dagbog fra Bornholm",
    "aftale om sommerhuset",
    "brev til morfar",
    "notat om arvesagen",
    "liste over ønsker",
    "plan for haven",
    "regnskab for foreningen",
)

TEMPLATES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "templates/tilbud.txt",
        (
            "Tilbud på oversættelse\n\nPris pr. normalside: 495 kr. ekskl. moms.\n",
            "Tilbud på oversættelse\n\nPris pr. normalside: 495 kr. ekskl. moms. Hastetillæg 50 %.\n",
        ),
    ),
    (
        "templates/ordrebekraeftelse.txt",
        ("Ordrebekræftelse\n\nTak for din bestilling. Vi leverer som aftalt.\n",),
    ),
    (
        "templates/faktura.txt",
        ("Faktura\n\nBetalingsbetingelser: netto 14 dage. Bank: reg. 1234 konto 0001234567.\n",),
    ),
    (
        "public/prisliste.txt",
        ("Prisliste 2026\n\nOversættelse: fra 495 kr. pr. normalside.\nTolkning: fra 650 kr. pr. time.\n",),
    ),
)
