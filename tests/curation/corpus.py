"""The planted web corpus for the curation tests: documents whose fate (kept, or which filter drops them) is known.

Clean prose, exact and near duplicates at measured Jaccard similarities, foreign, PII, short, repetitive and
toxic documents, and the JSONL/parquet writers; nothing is downloaded.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from tests.curation.prose import (
    MIN_ALPHA_DOC,
    MIN_PARAGRAPH_WORDS,
    ParagraphSource,
    corpus_paragraphs,
    word_count,
)
from tests.curation.shingles import minhash_match, shingle_jaccard

KINDS = (
    "clean",
    "exact_dup",
    "near_dup_high",
    "near_dup_low",
    "foreign",
    "pii",
    "short",
    "repetitive",
    "toxic",
    "code",
)
EXPECTS = ("keep", "length", "language", "gopher_repetition", "toxicity", "exact_dedup", "minhash", "code")


@dataclass(frozen=True)
class PlantedDoc:
    id: str
    text: str
    kind: str
    """One of KINDS."""
    expect: str
    """"keep" or the name of the stage expected to drop it (one of EXPECTS)."""
    group: str | None = None
    """For duplicates: the id of the original it copies or near-copies."""
    jaccard: float | None = None
    """For near-duplicates: the measured 5-gram shingle Jaccard similarity to the original."""


# --------------------------------------------------------------------------------------------------------------------
# Near-duplicates

# Substitutions that keep a sentence grammatical; applied one word at a time to lower the Jaccard in small steps.
_SUBSTITUTES = {
    "also": "additionally",
    "always": "invariably",
    "argument": "parameter",
    "arguments": "parameters",
    "called": "invoked",
    "can": "may",
    "certain": "particular",
    "example": "instance",
    "however": "still",
    "if": "when",
    "method": "function",
    "methods": "functions",
    "must": "should",
    "name": "identifier",
    "new": "fresh",
    "normally": "usually",
    "object": "item",
    "objects": "items",
    "often": "frequently",
    "only": "just",
    "possible": "feasible",
    "raised": "thrown",
    "result": "outcome",
    "returned": "produced",
    "returns": "gives",
    "should": "ought to",
    "specified": "given",
    "used": "employed",
    "usually": "typically",
    "value": "result",
    "values": "results",
    "when": "whenever",
    "which": "that",
}
_WORD = re.compile(r"[A-Za-z]+")


def _substitute(text: str, count: int, phase: float) -> str:
    """Replace `count` substitutable words at evenly spread positions (shifted by phase in [0, 1))."""
    spots = [m for m in _WORD.finditer(text) if m.group().lower() in _SUBSTITUTES]
    if count > len(spots):
        raise RuntimeError("not enough substitutable words")
    chosen = sorted({int((i + phase) * len(spots) / count) for i in range(count)})
    pieces, last = [], 0
    for m in (spots[i] for i in chosen):
        word = m.group()
        new = _SUBSTITUTES[word.lower()]
        pieces += [text[last : m.start()], new.capitalize() if word[0].isupper() else new]
        last = m.end()
    return "".join(pieces) + text[last:]


_HIGH_BAND = (0.85, 0.95)
# Stop editing once the Jaccard is this low: one more edit moves it by about 0.02, so we land inside the band.
_HIGH_STOP = 0.92


def _near_duplicate_high(original: str, phase: float) -> tuple[str, float]:
    """Edit words of the original until its shingle Jaccard falls to about 0.9 and MinHash pairs the two.

    At a Jaccard of 0.9, 14 buckets of 8 hashes pair the documents with probability 0.9996; the rare miss is
    retried with the edits shifted.
    """
    for shift in range(10):
        for count in range(1, 200):
            text = _substitute(original, count, (phase + shift / 10) % 1)
            jaccard = shingle_jaccard(original, text)
            if jaccard <= _HIGH_STOP:
                break
        if _HIGH_BAND[0] <= jaccard <= _HIGH_BAND[1] and minhash_match(original, text):
            return text, jaccard
    raise RuntimeError(f"no near-duplicate in the Jaccard band {_HIGH_BAND} that MinHash catches")


_LOW_BAND = (0.25, 0.45)


def _near_duplicate_low(original: str, source: ParagraphSource) -> tuple[str, float]:
    """Keep about the first half of the original and add fresh prose: shingle Jaccard near 1/3.

    Sharing k of the original's t words and adding f new ones gives a Jaccard of about k / (t + f), so f = 3k - t
    aims at 1/3: similar to the original, but far below MinHash's 0.72 threshold. MinHash still pairs such
    documents about once in 500; then a neighbouring cut is used, so the document is certainly kept.
    """
    total = word_count(original)
    # cut after a sentence or a clause (some pydoc paragraphs are one long sentence of clauses)
    ends = [m.end() for m in re.finditer(r"[.?!;](?=\s)", original)]
    cuts = sorted(ends, key=lambda c: (abs(word_count(original[:c]) - total / 2), c))
    fresh = source.take_words(max(MIN_PARAGRAPH_WORDS, 3 * word_count(original[: cuts[0]]) - total))
    for cut in cuts[:5]:
        kept = original[:cut].rstrip(";") + "." if original[cut - 1] == ";" else original[:cut]
        text = "\n".join([kept] + fresh)
        jaccard = shingle_jaccard(original, text)
        if _LOW_BAND[0] <= jaccard <= _LOW_BAND[1] and not minhash_match(original, text):
            return text, jaccard
    raise RuntimeError(f"no partial copy in the Jaccard band {_LOW_BAND} that MinHash leaves alone")


# --------------------------------------------------------------------------------------------------------------------
# PII

PLANTED_EMAILS = ("maria.lopez@example.com", "docs-team@example.org")
PLANTED_IPS = ("203.0.113.42", "2001:db8::8a2e:370:7334")
PLANTED_PHONES = ("(555) 123-4567", "+44 20 7946 0958")
PLANTED_CARDS = ("4539 1488 0343 6467",)
# Same grouping as the card with the last digit changed, so only a Luhn check tells them apart.
PLANTED_NOT_A_CARD = "4539 1488 0343 6468"

_PII_SENTENCES = (
    f"If you find a mistake in this section, please write to {PLANTED_EMAILS[0]} or to the documentation team at "
    f"{PLANTED_EMAILS[1]} so that it can be corrected in the next release.",
    f"The examples above were checked on the build server at {PLANTED_IPS[0]}, and the same results were seen on "
    f"the newer test machine at {PLANTED_IPS[1]} during the last week.",
    f"Readers in North America can call the training office at {PLANTED_PHONES[0]}, while readers in Europe should "
    f"call the London office on {PLANTED_PHONES[1]} instead.",
    f"The workshop fee was paid with the card {PLANTED_CARDS[0]}, and the receipt lists the order reference "
    f"{PLANTED_NOT_A_CARD} for any later questions.",
)


def luhn_valid(number: str) -> bool:
    """The Luhn checksum of the digits of number (spaces and dashes ignored)."""
    digits = [int(c) for c in number if c.isdigit()]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return bool(digits) and total % 10 == 0


def _insert_line(text: str, line: str) -> str:
    lines = text.split("\n")
    middle = max(1, len(lines) // 2)
    return "\n".join(lines[:middle] + [line] + lines[middle:])


# --------------------------------------------------------------------------------------------------------------------
# Hand-written documents

FOREIGN_TEXTS = {
    "de": (
        "Am Samstagmorgen gehen wir oft auf den Wochenmarkt in der Altstadt. Schon früh bauen die Händler ihre "
        "Stände auf, und der Platz füllt sich langsam mit Menschen. Es riecht nach frischem Brot, nach Kaffee und "
        "nach den ersten Erdbeeren des Jahres.\n"
        "Meine Tochter läuft sofort zum Stand mit dem Honig, weil die Imkerin ihr immer ein kleines Stück Wabe zum "
        "Probieren gibt. Ich kaufe Kartoffeln, Zwiebeln und einen großen Kopf Salat bei einem Bauern, der seit über "
        "dreißig Jahren jede Woche hierher kommt. Er erzählt gern vom Wetter und davon, wie schwierig der letzte "
        "Sommer für seine Felder war.\n"
        "Danach trinken wir einen Kaffee in der kleinen Bäckerei an der Ecke und beobachten das Treiben auf dem "
        "Platz. Viele Leute kennen sich, sie bleiben stehen, unterhalten sich und lachen. Für mich ist der Markt "
        "mehr als nur ein Ort zum Einkaufen. Er ist ein Treffpunkt für die ganze Nachbarschaft und ein schöner "
        "Anfang für das Wochenende. Wenn wir gegen Mittag nach Hause kommen, sind die Taschen schwer und alle haben "
        "gute Laune."
    ),
    "fr": (
        "Quand l'automne arrive, j'aime préparer une grande soupe de légumes pour toute la famille. Je commence "
        "par aller au marché le dimanche matin, où je choisis des carottes, des poireaux, quelques pommes de terre "
        "et un beau potiron.\n"
        "De retour à la maison, je lave soigneusement les légumes et je les coupe en petits morceaux. Pendant ce "
        "temps, je fais revenir un oignon dans un peu de beurre, au fond d'une grande casserole. Ensuite, j'ajoute "
        "les légumes, je les couvre d'eau et je laisse cuire doucement pendant presque une heure.\n"
        "La cuisine se remplit alors d'une odeur délicieuse qui attire tout le monde. Les enfants viennent demander "
        "si le repas est bientôt prêt, et mon mari prépare la table avec du pain frais et un morceau de fromage. "
        "Avant de servir, je mixe la soupe pour qu'elle soit bien onctueuse, puis j'ajoute un peu de crème et de "
        "poivre. Nous mangeons ensemble en parlant de la semaine qui vient de passer. Pour moi, ce simple repas "
        "représente tout le plaisir de la saison froide."
    ),
    "es": (
        "El verano pasado decidimos pasar una semana en un pequeño pueblo de los Pirineos. Alquilamos una casa de "
        "piedra con vistas al valle, rodeada de prados verdes y de bosques muy tranquilos.\n"
        "Cada mañana nos levantábamos temprano para aprovechar el fresco y salíamos a caminar por los senderos de "
        "la montaña. Algunos días subíamos hasta un lago de agua helada, donde comíamos unos bocadillos sentados "
        "sobre las rocas. Otros días preferíamos quedarnos en el pueblo, visitar la iglesia antigua y charlar con "
        "los vecinos en la plaza. La gente era muy amable y siempre tenía una recomendación sobre el mejor camino o "
        "el mejor restaurante de la zona.\n"
        "Por la noche cenábamos platos sencillos pero deliciosos, como sopa de verduras, queso de oveja y pan "
        "recién hecho. Después nos sentábamos fuera para mirar las estrellas, que allí se ven con una claridad "
        "increíble. Volvimos a casa cansados pero muy contentos, con ganas de regresar el próximo año y descubrir "
        "nuevas rutas."
    ),
    "it": (
        "Nel centro del nostro paese c'è un piccolo forno che esiste da più di cinquant'anni. Ogni mattina, prima "
        "dell'alba, il fornaio accende il forno a legna e comincia a preparare il pane, le focacce e i biscotti.\n"
        "Quando passo davanti alla sua vetrina per andare al lavoro, il profumo è così buono che è quasi "
        "impossibile non entrare. La signora che sta alla cassa conosce tutti i clienti per nome e chiede sempre "
        "notizie della famiglia. Il sabato la fila arriva fino alla strada, perché molte persone vengono anche dai "
        "paesi vicini per comprare la famosa torta di mele.\n"
        "Il fornaio racconta volentieri che la ricetta era di sua nonna e che non l'ha mai cambiata. Durante le "
        "feste di Natale prepara anche dolci tradizionali, decorati a mano con grande pazienza. Per noi questo "
        "negozio non è soltanto un posto dove fare la spesa, ma una parte importante della vita del paese. Speriamo "
        "davvero che i suoi figli continuino questo lavoro ancora per molti anni."
    ),
    "pt": (
        "Lisboa é uma cidade construída sobre colinas, e por isso andar a pé pode ser cansativo, mas também muito "
        "bonito. Nas manhãs de domingo gosto de apanhar o velho elétrico amarelo que sobe lentamente pelas ruas "
        "estreitas do bairro antigo.\n"
        "Pela janela vejo as casas cobertas de azulejos coloridos, a roupa pendurada nas varandas e os turistas "
        "que tiram fotografias em cada esquina. Quando chego ao miradouro, paro para olhar o rio, que brilha com a "
        "luz do sol. Muitas vezes encontro ali pessoas do bairro a conversar, a ler o jornal ou a tomar um café na "
        "esplanada.\n"
        "Depois desço a pé até à praça, onde compro pastéis de nata ainda quentes numa pastelaria muito conhecida. "
        "À tarde, a cidade fica mais calma e as famílias passeiam junto ao rio. Para mim, estes pequenos momentos "
        "mostram bem o encanto de Lisboa e a simpatia de quem vive aqui. Sempre que um amigo me visita, faço "
        "questão de repetir este passeio com ele."
    ),
    # Clauses are separated by a space, as in much extracted Chinese web text, so that a whitespace word count
    # also sees 50+ words and the document reaches the language stage instead of dying at the length stage.
    "zh": (
        "每到春天， 我家附近的小公园就变得特别热闹。 早上六点多， 很多老人已经来到这里打太极拳， "
        "还有一些人一边散步一边听广播。 湖边的柳树长出了新的叶子， 风一吹， 细细的枝条就轻轻地摇动。\n"
        "孩子们放学以后最喜欢在草地上放风筝， 五颜六色的风筝飞得很高， 大家都抬着头看。 周末的时候， "
        "许多家庭会带着饭菜来野餐， 父母坐在树下聊天， 孩子们在旁边追来追去。 公园门口有一位卖糖葫芦的老爷爷， "
        "他每天都笑着跟路过的人打招呼。 我小时候常常拿着零花钱去买他的糖葫芦， 现在我的女儿也喜欢找他。\n"
        "去年秋天， 市里决定给公园修一条新的小路， 很多居民都来提意见。 有人希望多种一些果树， 有人希望增加几张长椅， "
        "还有人建议在湖边建一个小小的图书角。 最后， 工人们按照大家的想法完成了工程， 新路两边种满了桂花。 到了八月， "
        "桂花开了， 整个公园都飘着甜甜的香味。 附近学校的老师还带着学生来这里上自然课， 让他们认识不同的植物和小鸟。 "
        "孩子们听得很认真， 还把看到的东西画在了本子上。\n"
        "傍晚时分， 广场上会响起音乐， 阿姨们整齐地跳起舞来， 看的人也越来越多。 天黑以后， 公园里的路灯亮了， "
        "湖水映着灯光， 显得非常安静。 我觉得这个小公园虽然不大， 却给附近的居民带来了很多快乐。 "
        "每次心情不好的时候， 我都会去那里走一走， 看看花草， 听听鸟叫， 心里就会轻松很多。 "
        "希望这个公园能一直保持现在的样子， 让更多的人在这里度过美好的时光。"
    ),
}

TOXIC_TEXTS = (
    "My landlord is a lying piece of shit and I am sick of his crap.\n"
    "The fucking heater has been broken for three weeks and that lazy bastard still has not sent anyone to fix it.\n"
    "Every time I call him, the asshole hangs up on me or tells me to stop whining like a little bitch.\n"
    "He is the dumbest, greediest son of a bitch I have ever met, and his shitty apartment is a damn joke.\n"
    "The hallway smells like piss, the sink leaks all over the fucking floor, and the windows are covered in crap.\n"
    "I swear this stupid jackass thinks his tenants are idiots who will pay for any garbage he throws at us.\n"
    "Screw him and screw his pathetic excuses, because I am done with this bullshit.\n"
    "Next month I am moving out, and that cheap fucker can shove the deposit up his ass.",
    "That referee was a blind fucking idiot and the whole game was a pile of shit.\n"
    "He missed every damn foul in the first half, and then the dumbass gave a penalty for a dive that a child "
    "could have spotted.\n"
    "Our coach is no better, the stupid bastard kept the same useless assholes on the field for ninety fucking "
    "minutes.\n"
    "The striker ran around like a brainless moron and missed three open goals, what a pathetic piece of crap.\n"
    "Half the crowd was screaming at the players to get their shit together, and honestly I do not blame them.\n"
    "I paid sixty bucks for a ticket to watch these overpaid jerks fuck around on the grass.\n"
    "Next season I am staying home, because I am tired of this bullshit and these worthless clowns.\n"
    "Seriously, fuck this team and fuck that shitty ref.",
)

SHORT_TEXTS = (
    "Thanks for reading! See you next week.",
    "Page not found. The link you followed may be broken, or the page may have been removed.",
    "Weather today: sunny, with a light breeze in the afternoon.",
    "Sold out. Please check back later for new stock.",
)


def _repetitive_texts() -> tuple[str, ...]:
    """Four spam-like pages, each tripping a different GopherRepetitionFilter rule."""
    flights = "Book cheap flights to Paris today and save up to half on your next trip with our friendly team."
    duplicated_lines = "\n".join(
        ["Cheap Flights to Paris and Beyond, Booked in Minutes."] + [flights] * 10 + ["Call us now for the best deals."]
    )
    tips = (
        "Our garden shop sells fresh flowers, young trees and healthy vegetable plants every single day. "
        "Visit our store on the main street and ask our staff for free advice about your garden."
    )
    duplicated_paragraphs = "\n\n".join(["Welcome to the Green Garden Shop."] + [tips] * 4)
    chant = "I love my little dog and my little dog loves me, "
    repeated_ngrams = (chant * 14).strip().rstrip(",") + "."
    boilerplate = "Click the link below to subscribe to our newsletter and never miss another update from us."
    news = (
        "The city council met on Monday to discuss the new bus lines.",
        "A local bakery won a national prize for its sourdough bread.",
        "The summer festival will return to the old harbour in July.",
        "Volunteers cleaned the river banks over the long weekend.",
        "The public library is extending its opening hours this winter.",
        "A new bicycle lane now connects the station with the university.",
    )
    boilerplate_everywhere = "\n".join(f"{item} {boilerplate}" for item in news)
    return duplicated_lines, duplicated_paragraphs, repeated_ngrams, boilerplate_everywhere


# --------------------------------------------------------------------------------------------------------------------
# The web corpus

N_CLEAN = 40
N_EXACT = 4
N_NEAR_HIGH = 4
N_NEAR_LOW = 4
N_PII = 4
_CLEAN_WORDS = (250, 420)
# Originals of exact and near duplicates sit at list positions divisible by 4 and every copy comes after all
# originals: round-robin into 1, 2 or 4 shards then puts each original in shard 0, before its copy in file order,
# which is the copy datatrove's exact and MinHash dedup keep (the lowest (file, line)).
ORIGINAL_STRIDE = 4
# The planted PII sentence is full of digits and symbols; start from prose with a margin.
_MIN_ALPHA_PII = 0.87


def _clean_docs(
    source: ParagraphSource, rng: random.Random, count: int, min_alpha: float = MIN_ALPHA_DOC
) -> list[str]:
    return ["\n".join(source.take_words(rng.randint(*_CLEAN_WORDS), min_alpha)) for _ in range(count)]


def build_web_corpus(seed: int = 0) -> list[PlantedDoc]:
    """72 web-like documents: 40 clean English prose documents and 32 planted cases; deterministic given seed.

    Order: clean, pii, foreign, short, repetitive, toxic, near_dup_low, then the dropped copies (near_dup_high,
    exact_dup) last so every original precedes its copies.
    """
    rng = random.Random(seed)
    source = ParagraphSource(corpus_paragraphs(seed))
    clean = [
        PlantedDoc(f"clean-{i:03d}", text, "clean", "keep")
        for i, text in enumerate(_clean_docs(source, rng, N_CLEAN))
    ]
    pii = [
        PlantedDoc(f"pii-{i:03d}", _insert_line(text, sentence), "pii", "keep")
        for i, (text, sentence) in enumerate(zip(_clean_docs(source, rng, N_PII, _MIN_ALPHA_PII), _PII_SENTENCES))
    ]
    foreign = [
        PlantedDoc(f"foreign-{lang}", text, "foreign", "language") for lang, text in sorted(FOREIGN_TEXTS.items())
    ]
    short = [PlantedDoc(f"short-{i:03d}", t, "short", "length") for i, t in enumerate(SHORT_TEXTS)]
    repetitive = [
        PlantedDoc(f"repetitive-{i:03d}", t, "repetitive", "gopher_repetition")
        for i, t in enumerate(_repetitive_texts())
    ]
    toxic = [PlantedDoc(f"toxic-{i:03d}", t, "toxic", "toxicity") for i, t in enumerate(TOXIC_TEXTS)]

    # Longest eligible originals for the near-duplicates: more shingles, so each edit moves the Jaccard less.
    eligible = list(range(0, N_CLEAN, ORIGINAL_STRIDE))
    eligible.sort(key=lambda i: (-word_count(clean[i].text), i))
    high_originals = sorted(eligible[:N_NEAR_HIGH])
    exact_originals = sorted(rng.sample(sorted(eligible[N_NEAR_HIGH:]), N_EXACT))
    others = [i for i in range(N_CLEAN) if i % ORIGINAL_STRIDE]
    low_originals = sorted(rng.sample(others, N_NEAR_LOW))

    near_low = []
    for i, o in enumerate(low_originals):
        text, jaccard = _near_duplicate_low(clean[o].text, source)
        near_low.append(PlantedDoc(f"near_dup_low-{i:03d}", text, "near_dup_low", "keep", clean[o].id, jaccard))
    near_high = []
    for i, o in enumerate(high_originals):
        text, jaccard = _near_duplicate_high(clean[o].text, rng.random())
        near_high.append(PlantedDoc(f"near_dup_high-{i:03d}", text, "near_dup_high", "minhash", clean[o].id, jaccard))
    exact = [
        PlantedDoc(f"exact_dup-{i:03d}", clean[o].text, "exact_dup", "exact_dedup", clean[o].id)
        for i, o in enumerate(exact_originals)
    ]
    return clean + pii + foreign + short + repetitive + toxic + near_low + near_high + exact


# --------------------------------------------------------------------------------------------------------------------
# Writers


def _jsonl_line(doc: PlantedDoc) -> str:
    return json.dumps({"id": doc.id, "text": doc.text, "kind": doc.kind}, ensure_ascii=False) + "\n"


def write_gzip(path: Path, data: bytes) -> None:
    # mtime=0 and no file name in the header keep the bytes identical from run to run
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0) as gz:
        gz.write(data)
    path.write_bytes(buffer.getvalue())


def write_jsonl_shards(
    docs: Sequence[PlantedDoc], directory: str | os.PathLike, shards: int = 2, gzip_shards: bool = True
) -> list[Path]:
    """Deal docs round-robin into `shards` files: shard 0 plain .jsonl, the others .jsonl.gz when gzip_shards.

    File names sort in shard order (shard-00000.jsonl, shard-00001.jsonl.gz, ...); lines are {"id", "text", "kind"}.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for shard in range(shards):
        data = "".join(_jsonl_line(d) for d in docs[shard::shards]).encode("utf-8")
        if shard and gzip_shards:
            path = directory / f"shard-{shard:05d}.jsonl.gz"
            write_gzip(path, data)
        else:
            path = directory / f"shard-{shard:05d}.jsonl"
            path.write_bytes(data)
        paths.append(path)
    return paths


def write_parquet(docs: Sequence[PlantedDoc], path: str | os.PathLike) -> Path:
    """One parquet file with string columns id, text and kind, in docs order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({field: [getattr(d, field) for d in docs] for field in ("id", "text", "kind")})
    pq.write_table(table, path)
    return path
