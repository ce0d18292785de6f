"""Telling an order from a note, and reading the four order fields and the subject from a message.

`classify_text(text)` is the entry point: rules in English, Portuguese and Spanish, helped by a
chat model when one is configured. The rules read a message the way a person would: who is asked to
do what. An order asks us to write a piece of content (an imperative, a request phrased as a
question, "I need a post…", "turn this into a post", a bare "LinkedIn post about the offsite?");
a note is everything else, including what the writer means to write ("I should write a post
someday"), posts already written, and posts seen. A message that looks like a request for content
without a clear signal is a note marked `unsure`: the service may ask about it.

tests/corpus/classifier holds the labelled messages they are measured on (`make eval-classify`).
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from rapidfuzz import process
from rapidfuzz.distance import OSA

from app import context
from app.config import Settings
from app.orders.openai_client import chat_client

log = logging.getLogger(__name__)

CHOICES: dict[str, tuple[str, ...]] = {
    "platform": ("LinkedIn", "Instagram", "Twitter", "Blog"),
    "length": ("Short", "Medium", "Long"),
    "tone": ("Professional", "Casual", "Friendly", "Authoritative"),
    "topic": ("Trends", "News", "Tips", "Product"),
}


# ------------------------------------------------------------------------------------------
# Words (accents removed, lower case)


def _set(words: str) -> frozenset[str]:
    return frozenset(words.split())


def _alt(words: str | frozenset[str]) -> str:
    """A regex alternation of space-separated words (longest first); `_` joins a multi-word item."""
    items = words.split() if isinstance(words, str) else list(words)
    return "|".join(sorted((re.escape(w.replace("_", " ")) for w in items), key=len, reverse=True))


PLATFORM_WORDS: dict[str, str] = {
    **dict.fromkeys(("linkedin", "lnkd"), "LinkedIn"),
    **dict.fromkeys(("instagram", "insta", "ig", "reel", "reels"), "Instagram"),
    **dict.fromkeys(("twitter", "tweet", "tweets", "tuit", "tuits", "tuite", "tuites", "tuitar"), "Twitter"),
    **dict.fromkeys(("tuita", "tuitea", "tuitear", "tweeta", "tweetar"), "Twitter"),
    **dict.fromkeys(("blog", "blogpost", "blogue", "article", "artigo", "articulo"), "Blog"),
}

# Pieces of content. Strong ones make a request on their own ("a post about…"); weak ones only
# after a verb of writing or a request ("write a piece on…", "me escreve um texto").
STRONG_NOUNS = _set(
    "post posts postagem postagens publicacao publicacion article artigo articulo blogpost tweet tuit "
    "tuite thread hilo fio caption legenda carousel carrossel carrusel reel newsletter content "
    "conteudo contenido pie_de_foto postinho postzinho tweets tuits articles artigos articulos captions "
    "legendas threads hilos carousels carrosseis carruseles reels publicacoes publicaciones articulito "
    "postecito a_blog um_blog un_blog linkedin_note linkedin_message nota_no_linkedin nota_en_linkedin"
)
HEADLINE_NOUNS = STRONG_NOUNS - _set("posts postagens content conteudo contenido newsletter")
"""A message that starts with one of these asks for it ("LinkedIn post about…", not "posts on LinkedIn get…")."""
WEAK_NOUNS = _set(
    "explainer tutorial piece update atualizacao actualizacion texto textinho text copy one something algo coisa lineas linhas "
    "lines palabrinhas chamada anuncio flyer folheto panfleto slogan"
)
NOUNS = STRONG_NOUNS | WEAK_NOUNS

# Verbs of writing, as a request uses them. Strong ones take "something about…" or "about…".
_EN_STRONG = "write draft compose craft create prepare produce generate rewrite tweet come_up_with"
_EN_WEAK = "make do put give whip turn convert transform use help"
_PT_STRONG = (
    "escreve escreva escrevam redige redija cria crie prepara prepare rascunha rascunhe gera gere "
    "elabora elabore reescreve tuita tuite"
)
_PT_WEAK = (
    "faz faca fas fazei monta monte manda solta bota transforma transforme converte converta vira usa bola bole "
    "adapta adapte"
)
_ES_STRONG = "escribe escriba redacta redacte crea cree prepara genera elabora reescribe tuitea"
_ES_WEAK = "haz haga hagamos arma monta saca convierte transforma pasa usa manda adapta currate curratelo"
_ES_CLITIC_BASES = (
    "escribe redacta crea prepara genera elabora haz arma monta saca convierte transforma pasa tuitea manda "
    "publica postea"
)
ES_CLITICS = frozenset(
    base + suffix for base in _ES_CLITIC_BASES.split() for suffix in ("me", "nos", "lo", "la", "melo", "te")
)
"""`hazme`, `escribeme`, `conviertelo`: imperatives whatever their place in the sentence."""

IMPERATIVES = _set(" ".join((_EN_STRONG, _EN_WEAK, _PT_STRONG, _PT_WEAK, _ES_STRONG, _ES_WEAK))) | ES_CLITICS
STRONG_VERBS = (
    _set(" ".join((_EN_STRONG, _PT_STRONG, _ES_STRONG)))
    | _set(
        "writing drafting creating preparing composing escrever redigir criar preparar rascunhar gerar "
        "elaborar tuitar escreveria criaria prepararia escribir redactar crear preparar generar tuitear "
        "escribes redactas creas preparas escribirias redactarias prepararias crearias tweeting"
    )
    | frozenset(w for w in ES_CLITICS if w.startswith(("escribe", "redacta", "crea", "prepara", "genera")))
)
VERBS = (
    IMPERATIVES
    | STRONG_VERBS
    | _set(
        "making doing putting turning converting transforming whipping fazer montar transformar converter "
        "faria montaria hacer armar montar sacar convertir transformar pasar haces armas montas sacas "
        "escrevas redijas elabores "
        "conviertes pasas harias fizesse escrevesse criasse preparasse montasse escribieras hicieras "
        "prepararas crearas redactaras escribiera hiciera curra currate currarte help escribas hagas crees prepares "
        "redactes armes monte redija ajudar ajuda ajude ayudar ayudas ayudame mandar enviar adaptar bolar "
        "fizessem escrevessem criassem preparassem montassem fazerem escreverem criarem prepararem montarem fazem escrevem criam preparam montam escribierais "
        "escribieran escribiesen hicierais hicieran prepararais redactarais crearais come_up_with think_up "
        "put_together send adapt"
    )
)
VERBS |= frozenset(
    f"{verb}{clitic}"
    for verb in [
        "escribir",
        "redactar",
        "hacer",
        "crear",
        "preparar",
        "armar",
        "montar",
        "sacar",
        "generar",
        "convertir",
        "pasar",
    ]
    for clitic in ("me", "nos", "lo", "la", "melo")
)
"""`sacarme`, `hacernos`: an infinitive with its pronoun, after "¿podrías…?"."""
POST_VERBS = _set("post postar posta poste publish publicar publica postea postear")
"""To publish: asked of us, it asks for the piece too ("can you post about the webinar?")."""
ES_SECOND_PERSON = _set(
    "escribes haces creas preparas armas montas sacas redactas faz escreve cria prepara monta fazes escreves "
    "escribis haceis creais preparais redactais fazem escrevem criam preparam montam"
)
"""In a question, "¿haces un post…?", "cê faz um post…?" ask for one."""
TWEET_VERBS = _set("tweet tuit tuita tuite tuitea tuitar tuitear tweeta tweetar")
CONVERT_VERBS = _set(
    "turn convert transform change transforma transforme transformar converte converta converter vira "
    "virar convierte conviertelo convertir transformalo pasa pasalo pasar adapt adapta adapte adaptar adaptalo "
    "rewrite reescreve reescribe"
)
INTO = _set("into in to em no num numa en a pra para as como")

OPENERS = _set(
    "hey hi hello hiya um ok okay okey so yeah yes yep also and then now please pls plz basically just oh "
    "alright well right again quick quickly kindly let_s lets let_us oi ola entao e bom beleza ah ta "
    "agora ai tambem ei opa bora vamos so por_favor pfv pf hola bueno pues vale venga oye mira y "
    "entonces porfa tambien va go_ahead_and go_ahead feel_free_to actually maybe talvez quizas quiza"
)
FILLERS = _set(
    "umm uh uhh uhm hmm hm hum er erm eh ehh mmm mm ahn tipo o_sea you_know i_mean sabe sabes ne like_i_said"
)
PAUSES = _set("ha ah ahh oh e eh ai hein ne like")
"""Sounds that are a pause when they make a clause of their own ("eu queria, hã, um post")."""
PLEASE = _set("please pls plz pfv pf porfa por_favor porfis pliz plis")
ABOUT = _set("about on regarding re sobre acerca respeito")
CONNECT = (
    ABOUT
    | PLEASE
    | _set(
        "for pro pra para no na nos nas en with com con de do da del to celebrating announcing "
        "congratulating explaining presenting welcoming anunciando parabenizando felicitando comemorando "
        "celebrando explicando presentando apresentando"
    )
)
ARTICLES = _set(
    "a an one some another um uma un una outro outra otro otra mais two three four five dois duas tres "
    "quatro cinco dos cuatro 2 3 4 5 6 7 8 9 10 uns umas unos unas alguns algumas algunos algunas few "
    "couple a_couple_of a_couple a_few um_par_de un_par_de several varios varias"
)
REQUESTS = (
    "can_you could_you would_you will_you can_u could_u would_u cna_you can_ya would_you_mind "
    "do_you_mind any_chance_you any_chance is_it_possible mind pode podes poderia podia consegue "
    "conseguiria consegues da_pra da_para tem_como sera_que puedes podrias podria me_puedes "
    "te_importa te_importaria me_echas_una_mano_con me_ayudas_con a_ver_si aver_si me like_you_to "
    "want_you_to need_you_to quero_que queria_que preciso_que gostaria_que quiero_que queria_que "
    "necesito_que me_gustaria_que quisiera_que se_puede se_podria is_it_possible can_we could_we "
    "can_you_guys you_could you_can te_animas_a podemos podriamos podiamos podemos_fazer pedirte_que "
    "pedir_que te_pedir_que podem poderiam podiam conseguem conseguiriam podeis podiais podriais pueden "
    "podrian could_you_possibly would_you_be_able_to could_you_guys can_y_all is_there_any_way any_way "
    "ver_se_voces ver_se_voce ver_se_da ver_si_podeis ver_si_puedes ver_si_podrias se_puder se_puderem "
    "se_voce_puder se_voces_puderem si_puedes si_pudieras si_podeis si_pudierais if_you_could if_you_can"
)
GETS = (
    "can_i_get could_i_get can_i_have could_i_have may_i_have can_we_get could_we_get can_we_have "
    "got_time_for have_time_for tens_tempo_pra tem_tempo_pra tienes_tiempo_para let_me_get let_me_have lemme_get gimme give_me give_us get_me how_about what_about que_tal e_que_tal "
    "e_um e_uma y_un y_una and_a"
)
"""Requests by the one who receives ("can I get a post about…") and suggestions ("how about a post…")."""
WANTS = (
    "need needs want would_like d_like would_love d_love d_appreciate quero queria preciso_de "
    "precisamos_de precisa_de precisava_de gostaria_de adoraria necesito necesitamos necesitaria quiero "
    "quisiera me_gustaria me_encantaria d_really_like d_really_love would_really_like would_really_love "
    "precisaria_de d_need would_need preciso_muito_de precisava_muito_de querendo to_querendo queriendo "
    "hace_falta faz_falta me_vendria_bien me_vendria_genial viria_bem viria_a_calhar would_be_great_to_have "
    "would_be_nice_to_have would_be_good_to_have pedir pido ask_for asking_for request pedirte pedirle te_pedir lhe_pedir ask_you_for precisando_de "
    "needing want_to_see d_like_to_see would_like_to_see quero_ver queria_ver gostaria_de_ver quiero_ver "
    "queria_ver me_gustaria_ver necesitariamos necesitariamos_de me_haria_falta nos_haria_falta haria_falta "
    "queriamos queriamos_pedir what_i_need_is what_i_actually_need_is what_we_need_is what_i_d_like_is "
    "what_i_want_is lo_que_te_queria_pedir_es lo_que_queria_pedirte_es lo_que_necesito_es "
    "lo_que_necesitamos_es o_que_eu_queria_era o_que_eu_preciso_e o_que_a_gente_precisa_e"
)
POSSIBLE = (
    "would_it_be_possible is_it_possible will_it_be_possible would_it_be_ok is_it_ok would_it_be_okay "
    "is_there_any_way any_way_to seria_possivel sera_possivel e_possivel seria_posible sera_posible "
    "es_posible habria_forma_de hay_forma_de teria_como tem_como daria_pra daria_para rola_de rola"
)
"""Asking whether a piece can be had: "would it be possible to get a post…", "¿sería posible un artículo…?"."""
GET_VERBS = _set("get have receive see ter receber ver tener recibir conseguir")
INTENSIFIERS = _set("really so muito mucho realmente")
FIELD_WORDS = _set(
    "short shorter brief quick medium long longer lengthy detailed professional formal casual informal "
    "relaxed friendly warm authoritative curto curta curtinho curtinha rapidinho medio media longo longa "
    "profissional descontraido descontraida amigavel simpatico simpatica autoritativo corto corta cortito cortita breve rapido rapida "
    "mediano largo larga extenso extensa profesional relajado relajada cercano cercana amistoso "
    "amistosa amigable new nice little small quick cool novo nova nuevo nueva"
)
REPORTS = _set(
    "is are was were got gets get had has did went blew performed looks seems worked loved liked saw "
    "foi era teve tem ficou deu bombou saiu fue tuvo tiene quedo peto salio funciono tinha estava tenia "
    "estaba fez fiz fizemos hice hicimos wrote escrevi escribi hizo viralizou had did made perde ganha rende pierde gana rinde loses"
)
"""Finite verbs of a report ("a post about burnout got 2k likes"): a headline with one is a note."""
WISHES = (
    "someday some_day one_day one_of_these_days eventually at_some_point sometime when_things "
    "note_to_self um_dia algum_dia qualquer_dia um_dia_desses quando_der nota_pra_mim "
    "nota_para_mim nota_mental algun_dia un_dia un_dia_de_estos cuando_se mas_adelante "
    "maybe perhaps talvez quizas quiza tal_vez would_be_cool would_be_nice seria_legal seria_bom "
    "estaria_guay estaria_bien not_now agora_nao ahora_no "
    "not_this_week not_today nah no_need reminder lembrete recordatorio"
)
SELF = (
    "i_should i_ll i_will i_must i_have_to i_need_to i_want_to i_d_like_to i_would_like_to i_m_going_to "
    "i_am_going_to i_gotta we_should we_need_to we_have_to we_must need_to have_to gotta should "
    "devia deveria deveriamos devo tenho_que tenho_de temos_que vou quero queria preciso precisamos "
    "gostaria_de tengo_que tenemos_que debo deberia deberiamos voy_a necesito_hacer quiero_escribir "
    "me_gustaria_escribir"
)
GREETINGS = _set(
    "hi hey hello good morning afternoon evening how are you tudo bem bom dia boa tarde noite como vai "
    "buenos dias buenas tardes noches que tal bien estas"
)
QUESTION_WORDS = _set(
    "did do does have has is are was were what whats when where who why how which qual quais quando "
    "onde quem porque como quanto quantos quantas ja cual cuales cuando donde quien cuanto cuantos "
    "cuantas viste vc_viu voce_viu"
)

# Common misspellings of the words above that edit distance alone must not guess (short words,
# or words one letter away from another verb: "escrevi" is "I wrote", not "escreve").
ALIASES: dict[str, str] = {
    "writ": "write",
    "wrtie": "write",
    "wirte": "write",
    "wrte": "write",
    "rwite": "write",
    "cna": "can",
    "abt": "about",
    "smth": "something",
    "sth": "something",
    "smthg": "something",
    "u": "you",
    "ya": "you",
    "vc": "voce",
    "ce": "voce",
    "pro": "para",
    "pra": "para",
    "pa": "para",
    "escrevee": "escreve",
    "faiz": "faz",
    "fais": "faz",
    "aces": "haces",
    "acer": "hacer",
    "azme": "hazme",
    "aslo": "hazlo",
    "escrive": "escribe",
    "escrebe": "escribe",
    "sovre": "sobre",
    "tb": "tambem",
    "tbm": "tambem",
    "linkdin": "linkedin",
    "linkedn": "linkedin",
    "linkedim": "linkedin",
    "pd": "pode",
    "asme": "hazme",
    "kiero": "quiero",
    "kero": "quiero",
    "pal": "para",
    "draf": "draft",
    "blgo": "blog",
    "pots": "post",
    "presiso": "preciso",
    "precizo": "preciso",
    "nesesito": "necesito",
    "nececito": "necesito",
    "artical": "article",
    "articel": "article",
    "artcle": "article",
}
_FUZZY_TARGETS = sorted(
    _set(
        "linkedin instagram twitter article artigo articulo caption legenda carousel carrossel carrusel "
        "newsletter publicacao publicacion conteudo contenido postagem"
    )
)
"""Nouns and platforms found within one typo (words of 6 letters or more)."""
KNOWN = frozenset(
    w
    for group in (IMPERATIVES, VERBS, NOUNS, OPENERS, ABOUT, CONNECT, FIELD_WORDS, REPORTS, QUESTION_WORDS)
    for w in group
) | frozenset(PLATFORM_WORDS)


_TYPO_TARGETS = frozenset(
    w for group in (IMPERATIVES, STRONG_VERBS, NOUNS, ABOUT) for w in group if "_" not in w
) | frozenset(PLATFORM_WORDS)
"""Words a slip of the fingers is read back to: a doubled consonant ("writte"), two letters swapped
("abuot"). A doubled vowel may be a word of its own ("tuiteé" is "I tweeted")."""


_DROPPED = {
    target[:i] + target[i + 1 :]: target
    for target in sorted(_TYPO_TARGETS)
    if len(target) >= 6
    for i in range(1, len(target) - 1)
}
"""Words with an inner letter left out ("escrve", "escrbeme"), read back to the word (6 letters or
more); not the last letter: "escribi" is "I wrote", not "escribir"."""


def _typo(token: str) -> str | None:
    if token in _DROPPED:
        return _DROPPED[token]
    if len(token) >= 4:
        single = re.sub(r"([^aeiou])\1+", r"\1", token)
        if single != token and single in _TYPO_TARGETS:
            return single
    if len(token) >= 5:
        for i in range(len(token) - 1):
            swapped = token[:i] + token[i + 1] + token[i] + token[i + 2 :]
            if swapped in _TYPO_TARGETS:
                return swapped
    return None


_HELD_KEY = re.compile(r"([^\W\d_])\1{2,}")
"""A letter three times or more: a key held down ("neeed", "tweeet", "pleeease")."""
_HELD_KEY_TARGETS = KNOWN | PLEASE | frozenset(f"{WANTS} {REQUESTS} {GETS}".split()) | frozenset(ALIASES)


@lru_cache(maxsize=4096)
def _spell(token: str) -> str:
    if _HELD_KEY.search(token):
        twice, once = _HELD_KEY.sub(r"\1\1", token), _HELD_KEY.sub(r"\1", token)
        return _spell(once if once in _HELD_KEY_TARGETS and twice not in _HELD_KEY_TARGETS else twice)
    if token in ALIASES:
        return ALIASES[token]
    if token in KNOWN or token.isdigit():
        return token
    typo = _typo(token)
    if typo is not None:
        return typo
    if len(token) < 6:
        return token
    found = process.extractOne(token, _FUZZY_TARGETS, scorer=OSA.distance, score_cutoff=1)
    if found:
        return str(found[0])
    # Two letters off a long platform name ("linkdn", "instgrm"), same first two letters.
    platform = process.extractOne(token, ("linkedin", "instagram"), scorer=OSA.distance, score_cutoff=2)
    return str(platform[0]) if platform and token[:2] == str(platform[0])[:2] else token


# ------------------------------------------------------------------------------------------
# The message as the rules read it: "| clause , clause | sentence |"

_SENTENCE_BREAKS = re.compile(
    '->|=>|[.!?;:\n()\\[\\]"\u201c\u201d\u00ab\u00bb\u2026\u2014\u2013\u2022]+|\\s-+\\s'
)
_CLAUSE_BREAKS = re.compile(r"[,+&/]")
_ELLIPSIS = re.compile(r"(?:\.{2,}|\u2026)(?=\s*[^\W\d_])(?!\s*[A-Z])")
"""An ellipsis before a word in lower case: a pause in the sentence ("what I need is, uh... a post")."""
_MULTI_WORD_FILLERS = re.compile(
    rf"(?<!\bdo )(?<!\bdid )(?<!\bdoes )\b(?:{'|'.join(w.replace('_', ' ') for w in FILLERS if '_' in w)})\b"
)
"""Fillers of more than one word; "do you know if…" is a question, not "you know"."""


_HAZ_MISSPELLED = re.compile(r"([|,] )(?:as|has|ase) (?=un |una |me )")
""""as un post": "haz", as it sounds, at the start of a clause."""


def _plain(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


_CONTINUATIONS = _set("que to de para")
"""Words that continue the clause before a pause ("eu queria, tipo, que você fizesse…")."""


@dataclass(frozen=True)
class Reading:
    """The normalized message: words with `,` between clauses and `|` between sentences."""

    flat: str
    question: bool

    @classmethod
    def of(cls, text: str) -> Reading:
        plain = _ELLIPSIS.sub(" , ", _plain(text).replace("\u2019", "'").replace("'", " "))
        sentences = []
        for sentence in _SENTENCE_BREAKS.split(plain):
            clauses: list[str] = []
            paused = False
            for clause in _CLAUSE_BREAKS.split(sentence):
                words = [_spell(w) for w in re.findall(r"[^\W_]+", clause)]
                joined = _MULTI_WORD_FILLERS.sub(" ", " ".join(words))
                kept = [w for w in joined.split() if w not in FILLERS]
                if kept and not set(kept) <= PAUSES:
                    if paused and clauses and (kept[0] in ARTICLES or kept[0] in _CONTINUATIONS):
                        # "eu queria, tipo, que você fizesse…": a pause joins what it split.
                        clauses[-1] += " " + " ".join(kept)
                    else:
                        clauses.append(" ".join(kept))
                    paused = False
                elif words:
                    paused = True
            if clauses:
                sentences.append(" , ".join(clauses))
        flat = "| " + " | ".join(sentences) + " |" if sentences else "|"
        flat = _HAZ_MISSPELLED.sub(r"\1haz ", flat)
        return cls(flat, "?" in text or "¿" in text)


def _g(n: int) -> str:
    """Up to n words, crossing commas but not sentences."""
    return rf"(?:[^\s|]+ ){{0,{n}}}"


def _p(words: str | frozenset[str]) -> str:
    return rf"(?:{_alt(words)})"


_W = r"[^\s|,]+"
_START = rf"(?:[|,] |\b(?:and|e|y) )(?:{_p(OPENERS)} )*"
"""The start of a clause, past greetings, fillers and please."""
_NOUN = _p(NOUNS)
_STRONG_NOUN = _p(STRONG_NOUNS)
FAVOURS = (
    "do_me_a_favor do_me_a_favour me_faz_um_favor faz_favor faz_um_favor hazme_un_favor haz_me_un_favor "
    "please por_favor"
)
_MOD = _p(
    FIELD_WORDS | frozenset(PLATFORM_WORDS) | _set("x the this that my our nosso nossa nuestro nuestra")
)
_HEAD_MOD = _p(
    FIELD_WORDS - _set("new novo nova nuevo nueva")
    | frozenset(PLATFORM_WORDS)
    | _set("x length lenght sized size tamanho extension")
)
_LEAD = (
    rf"(?:(?:{_p(OPENERS | GREETINGS)} )+[|,] )*(?:{_W} (?:{_W} )?\| )?(?:{_p(IMPERATIVES | _set('request pedido order'))} \| )?"
    rf"(?:(?:{_p(_set('for on pro para no na en'))} )?{_p(frozenset(PLATFORM_WORDS))} \| )?"
    rf"(?:{_p(FAVOURS)} [|,] )?(?:{_p(OPENERS)} )*"
)
"""What may come before a headline: a greeting, "Draft:", "for LinkedIn:", "do me a favour:"."""
_SOMETHING = (
    r"(?:something|anything|algo|alguma coisa|qualquer coisa|um conteudo|un contenido|um negocio|uma coisa|"
    r"um lance|una cosa|un texto|um texto)"
)
_WISH = _p(WISHES)
CHANNELS = frozenset(PLATFORM_WORDS) | _set(
    "facebook fb face tiktok whatsapp threads x youtube pinterest newsletter"
)
_SELF = _p(SELF)
_GERUND = (
    r"(?!(?:getting|going|doing|performing|trending|blowing|sitting|bombando|viralizando|indo|yendo|"
    r"rodando|circulando|fazendo|haciendo|dando)\b)[a-z]{3,}(?:ing|ando|endo|indo)\b"
)
"""What the piece does ("reminding parents…", "lembrando os pacientes…"), not how a post fares."""

ORDER_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    # "write a LinkedIn post", "escreve um post", "hazme un artículo", "make this a post"
    (
        "imperative",
        re.compile(
            rf"{_START}{_p(IMPERATIVES)} (?!sure |down |you |u |we |i |they ){_g(6)}{_NOUN}\b(?! ideas?\b)"
        ),
    ),
    # "write something about…", "escreve sobre…", "draft something for LinkedIn"
    (
        "imperative",
        re.compile(
            rf"{_START}{_p(STRONG_VERBS & IMPERATIVES)} (?:up |me |us )?"
            rf"(?:{_SOMETHING} (?:{_g(3)}{_p(ABOUT | _set('for para to pra'))} |{_GERUND})|{_p(ABOUT)} )"
        ),
    ),
    # "let's do a post", "bora fazer um post", "hagamos un post"
    (
        "imperative",
        re.compile(rf"\b(?:let s|lets|let us|bora|vamos|vamo|hagamos) (?:{_p(VERBS)} )?{_g(3)}{_NOUN}\b"),
    ),
    # "help me with a post", "me ajuda com um post", "¿me ayudas con un post?"
    (
        "request",
        re.compile(
            rf"\b(?:help me with|help with|give me a hand with|me ajuda com|me ajudar com|ajuda com|me da uma mao com|me ayudas con|ayudame con|da uma forca com|da uma forca ai com|me echas una mano con|nos echas una mano con|echanos una mano con|echame una mano con|dame una mano con|me echas un cable con|echame un cable con) {_g(3)}{_NOUN}\b"
        ),
    ),
    # "help me write a post", "me ajuda a criar um post", "ayúdame a crear un post"
    (
        "request",
        re.compile(
            rf"(?:{_START}(?:help|ajuda|ajude|ajudem|ayuda|ayudad)(?: me| us| nos| a gente)?|\b(?:ayudame|ayudanos))"
            rf" (?:to |a |com |con |with )?{_p(VERBS)} {_g(4)}{_NOUN}\b"
        ),
    ),
    # "can you post about the webinar?", "publica algo sobre el webinar"
    (
        "request",
        re.compile(
            rf"(?:\b{_p(REQUESTS)} {_g(2)}{_p(POST_VERBS)} (?:{_SOMETHING} )?|{_START}{_p(POST_VERBS)} {_SOMETHING} "
            rf"{_g(3)})"
            rf"{_p(ABOUT)} "
        ),
    ),
    # "that's a good post, write it for me", "esto da para un buen post, escríbelo"
    (
        "imperative",
        re.compile(
            rf"\b{_STRONG_NOUN}\b[^|]* [|,] (?:{_p(OPENERS)} )*(?:write|draft|escreve|escreva|escribe|redacta|"
            rf"escribelo|redactalo|hazlo)(?: it| one| isso| ele| tu| you| voce| for me| para mim| para mi| please| pls)* [|,]"
        ),
    ),
    (
        "imperative",
        re.compile(
            rf"{_START}{_p(STRONG_VERBS & IMPERATIVES)} (?:it |one |isso )?(?:for me|para mim|para mi) "
        ),
    ),
    # "post this on LinkedIn: we're hiring", "posta no linkedin sobre a vaga"
    (
        "imperative",
        re.compile(
            rf"{_START}(?:{_p(POST_VERBS - _set('post posts'))} {_g(3)}{_p(ABOUT)} |"
            rf"{_p(POST_VERBS)} (?:this|that|it|isso|isto|esto|eso) (?!week|month|year|morning|time|semana|mes|ano))"
        ),
    ),
    # "write it up for LinkedIn", "escreve isso pro linkedin", "escríbelo para linkedin"
    (
        "imperative",
        re.compile(
            rf"{_START}{_p(STRONG_VERBS & IMPERATIVES)} (?:it |this |that |isso |isto |esto |eso )?(?:up )?"
            rf"{_p(_set('for on para en no na'))} (?:the |o |el )?{_p(frozenset(PLATFORM_WORDS))}\b"
        ),
    ),
    # "new hire starts monday, linkedin welcome post pls"
    (
        "headline",
        re.compile(
            rf"[|,] (?:{_p(ARTICLES)} )?(?:{_W} ){{0,3}}{_p(HEADLINE_NOUNS)} (?:{_HEAD_MOD} ){{0,3}}{_p(PLEASE)} "
        ),
    ),
    # "fair recap post for LinkedIn please", "um post sobre a loja nova, por favor"
    (
        "headline",
        re.compile(
            rf"[|,] (?:{_p(ARTICLES)} )?(?:{_W} ){{0,2}}{_p(HEADLINE_NOUNS)} (?:{_HEAD_MOD} ){{0,3}}"
            rf"{_p(CONNECT - PLEASE)} [^|]*\b{_p(PLEASE | _set('thanks thank obrigado obrigada gracias valeu'))}\b"
        ),
    ),
    # "post idea: why we pay interns. can you write it?", "¿me lo escribes?"
    (
        "request",
        re.compile(
            rf"\b{_STRONG_NOUN}\b.* (?:{_p(REQUESTS)} {_g(2)}{_p(VERBS)} (?:it|one|isso|ele|esse|este)\b|"
            rf"(?:me )?(?:lo|la) (?:{_p(ES_SECOND_PERSON)}|puedes escribir|puedes hacer)\b)"
        ),
    ),
    # "hazme un post", "con mis notas sácame un post": a Spanish imperative with a pronoun
    ("imperative", re.compile(rf"\b{_p(ES_CLITICS)} {_g(6)}{_NOUN}\b")),
    # "tweet about the webinar", "tuíta a novidade", "tweet pls"
    ("tweet", re.compile(rf"{_START}{_p(TWEET_VERBS)} (?!from |by |de |del |do |da )")),
    # "can you write…", "você pode fazer um post…", "¿me haces un post…?", "would you mind writing…"
    (
        "request",
        re.compile(
            rf"\b{_p(REQUESTS)} {_g(3)}{_p(VERBS)} {_g(6)}(?:{_NOUN}\b|{_SOMETHING} (?:{_g(4)}{_p(ABOUT | _set('for para'))} |{_GERUND}))"
        ),
    ),
    ("request", re.compile(rf"\b{_p(REQUESTS)} {_g(3)}{_p(TWEET_VERBS)} ")),
    # "¿haces un post para Instagram…?" (only in a question)
    (
        "question",
        re.compile(rf"{_START}(?:voce |tu )?(?:me |nos |te )?(?:{_p(ES_SECOND_PERSON)}) {_g(6)}{_NOUN}\b"),
    ),
    (
        "request",
        re.compile(
            rf"\b(?:voce |tu )?(?:escreveria|faria|criaria|prepararia|montaria|escribirias|harias|prepararias|"
            rf"redactarias|crearias) {_g(6)}{_NOUN}\b"
        ),
    ),
    # "would it be possible to get a blog post…", "¿sería posible un artículo para el blog…?"
    (
        "request",
        re.compile(
            rf"\b{_p(POSSIBLE)} (?:(?:for you|for us|to|de|que|para|pra|a|me|us|nos|you|guys|voces|ustedes) ){{0,4}}"
            rf"(?:{_p(VERBS | GET_VERBS)} (?:me |us |nos |you )?)?(?:{_p(ARTICLES)} )?(?:{_MOD} ){{0,3}}{_NOUN}\b"
        ),
    ),
    # "I need a LinkedIn post", "quero um artigo", "me encantaría un post", "we need content"
    ("request", re.compile(rf"\b{_p(GETS)} (?:{_p(ARTICLES)} )?(?:{_MOD} ){{0,3}}{_NOUN}\b")),
    # (a transcript may pause between the want and its object: "eu queria, hã, um post curtinho")
    (
        "want",
        re.compile(
            rf"\b{_p(WANTS)} (?:, )?(?:{_p(INTENSIFIERS)} )?(?:(?:{_p(ARTICLES)} )(?:{_W} ){{0,2}}|(?:{_MOD} ){{0,3}})"
            rf"{_NOUN}\b"
        ),
    ),
    # "turn this into a post", "transforma isso num post", "convierte esto en un tuit"
    (
        "convert",
        re.compile(
            rf"\b{_p(CONVERT_VERBS)} {_g(12)}{_p(INTO)} (?:(?:{_p(ARTICLES)} )?(?:{_W} ){{0,2}}{_NOUN}\b|"
            rf"{_SOMETHING} (?:for|para|pro|pra|en) )"
        ),
    ),
    ("convert", re.compile(rf"\b(?:vira|hazlo|haz) {_STRONG_NOUN}\b")),
    # "use my last notes to write a post"
    ("convert", re.compile(rf"{_START}(?:use|usa|utiliza|using|usando) {_g(8)}{_p(VERBS)} {_g(4)}{_NOUN}\b")),
    # "LinkedIn post about the offsite?", "post com dicas…", "un hilo en twitter explicando…",
    # "um post simpático lembrando os pacientes…" (what the piece does, in a gerund)
    (
        "headline",
        re.compile(
            rf"^\| {_LEAD}(?:{_p(ARTICLES)} )?(?:{_HEAD_MOD} ){{0,4}}{_p(HEADLINE_NOUNS)} (?:{_HEAD_MOD} (?:(?:and|e|y) )?){{0,3}}"
            rf"(?:{_p(CONNECT)}|,|\||{_GERUND})"
        ),
    ),
    (
        "headline",
        re.compile(
            rf"^\| {_LEAD}(?:{_p(ARTICLES)} )?(?:{_HEAD_MOD} ){{1,3}}{_p(WEAK_NOUNS)} (?:{_MOD} ){{0,3}}{_p(ABOUT)} "
        ),
    ),
    # "um texto longo sobre a história da pizzaria pfv"
    (
        "headline",
        re.compile(
            rf"^\| {_LEAD}(?:{_p(ARTICLES)} )?{_p(WEAK_NOUNS)} (?:{_HEAD_MOD} ){{1,3}}(?:{_p(ABOUT)} |{_GERUND})"
        ),
    ),
    # "another one for facebook pls", "mais um pro insta", "otro igual pero para LinkedIn"
    (
        "follow-up",
        re.compile(
            rf"^\| {_LEAD}(?:(?:and|e|y) )?(?:{_p(IMPERATIVES)} (?:me |us |nos )?)?"
            rf"(?:another|one more|mais um|mais uma|outro|outra|otro|otra|one|um|uma|un|una)"
            rf"(?: one| igual| parecido| parecida| assim| asi| like that| like it| version| versao)* "
            rf"(?:but |pero |mas |only |so |)(?:for|on|para|en|no|na) (?:the |o |el |la |a )?{_p(CHANNELS)}\b"
        ),
    ),
    # "this is for linkedin, can you write up the survey results"
    (
        "request",
        re.compile(
            rf"^(?=.*\b(?:{_p(frozenset(PLATFORM_WORDS))}|{_STRONG_NOUN})\b).*"
            rf"\b{_p(REQUESTS)} {_g(2)}{_p(STRONG_VERBS)} (?:up |out )?(?:the |our |my |a |o |os |as |el |la |los |las )"
        ),
    ),
    # "Insta: short and friendly, about the new flavour", "instagram, casual, 5 tips for…"
    (
        "headline",
        re.compile(
            rf"^\| {_LEAD}{_p(frozenset(PLATFORM_WORDS))} , (?:{_p(FIELD_WORDS - _set('new nice little small cool novo nova nuevo nueva'))} (?:(?:and|e|y) )?)+[,|] "
        ),
    ),
    (
        "headline",
        re.compile(
            rf"^\| {_LEAD}{_p(frozenset(PLATFORM_WORDS))} \| .*\b(?:{_p(FIELD_WORDS - _set('new nice little small cool novo nova nuevo nueva'))}|{_p(ABOUT)})\b"
        ),
    ),
    # "something friendly about our team lunch, please"
    (
        "headline",
        re.compile(
            rf"^\| {_LEAD}{_SOMETHING} (?:(?:{_MOD}|and|e|y|,) ){{0,5}}(?:{_p(ABOUT | _set('for para'))}) "
        ),
    ),
)
"""Each rule with the name it reports."""

_REPORT = re.compile(rf"\b{_p(REPORTS)}\b")
_WISH_RE = re.compile(rf"\b{_WISH}\b")
_MAYBE = (
    "maybe",
    "perhaps",
    "talvez",
    "quizas",
    "quiza",
    "tal vez",
    "would be cool",
    "would be nice",
    "seria legal",
    "seria bom",
    "estaria guay",
    "estaria bien",
)
_FIRM_WISH_RE = re.compile(rf"\b{_p(frozenset(WISHES.split()) - {w.replace(' ', '_') for w in _MAYBE})}\b")
_PLEASE_RE = re.compile(rf"\b{_p(PLEASE)}\b")
_MUSING = re.compile(r"\b(?:thinking about|thinking of|pensando em|pensando en)\b")
"""A thought ("I'm thinking about a post on…"), in the clause of the request itself: an earlier
"I was thinking about the hiring thing, … go ahead and write it up" is context."""
_SELF_BEFORE = re.compile(rf"\b{_SELF} [^|]*$")
_DEADLINE = (
    r"(?:before (?:monday|tuesday|wednesday|thursday|friday|saturday|sunday|the weekend|bed|eod)|tonight(?! s\b)|"
    r"antes d[aeo]s? (?:segunda|terca|quarta|quinta|sexta|sabado|domingo|fim de semana)|hoje a noite|"
    r"antes del? (?:lunes|martes|miercoles|jueves|viernes|sabado|domingo|finde|fin de semana)|esta noche)"
)
_LISTED_TASK = re.compile(rf"{_START}{_p(IMPERATIVES)} (?:the|el|la|los|las|o|os) [^|]*\b{_DEADLINE}\b")
"""A piece the writer may have on their own list, with its deadline: "write the newsletter before
friday" (unless asked with a please)."""
LISTED_TASK_BLOCK = "perhaps the writer's own to-do"
ASKED_BLOCKS = frozenset({"maybe", LISTED_TASK_BLOCK})
"""Reasons that stop a request only to ask about it ("Want me to turn this into a post?")."""
_OWN_PLAN = re.compile(
    rf"(?:^|, )(?:{_p(OPENERS)} )*{_SELF} (?!que |q |you |u |voce |vc |tu |usted )(?:{_W} ){{0,2}}"
    rf"{_p(VERBS | TWEET_VERBS | POST_VERBS)}\b"
)
"""A clause in which the writer says they will make something ("I'll write the post myself",
"preciso fazer 4 posts", "we should tweet…"), not what they ask for ("quero que faças…")."""
_PIECE_WORDS = re.compile(
    rf"\b(?:{_NOUN}|{_p(frozenset(PLATFORM_WORDS))}|{_p(STRONG_VERBS | TWEET_VERBS | POST_VERBS)})\b"
)
"""A piece, a platform, or writing one: what a sentence that may ask for content names."""
_CONTENT_START = re.compile(rf"\b(?:que|that|which|{_GERUND})")
"""Where what a headline's piece will say begins ("…avisando que não tem aula")."""
_ASK_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    # "New post: 5 lessons from freelancing" (a piece to write, or one just published)
    (
        "new post",
        re.compile(
            rf"^\| {_LEAD}(?:new|novo|nova|nuevo|nueva) {_p(HEADLINE_NOUNS)} \| (?!.*\b{_p(REPORTS)}\b)"
        ),
    ),
    # "escrever um post sobre…" (an infinitive: a to-do of the writer's, or a request)
    (
        "infinitive",
        re.compile(
            rf"^\| (?:{_p(OPENERS)} )*(?:escrever|fazer|criar|preparar|escribir|hacer|crear|preparar|redactar) {_g(4)}{_STRONG_NOUN}\b"
        ),
    ),
)


_NOTE_HEADER = re.compile(
    r"^\| (?:todo|to do|tarefa|tarefas|pendiente|pendientes|pendente|pendentes|note|nota|notes|notas|"
    r"idea|ideas|ideia|ideias|topics|temas|assuntos) \|"
)
"""A message headed "todo:" or "note:" is the writer's own list."""


_QUOTED = re.compile(r"[\"\u201c\u00ab][^\"\u201d\u00bb]*[\"\u201d\u00bb]")
_REPORTED = re.compile(
    r"\b(?:asked|asks|said|says|told|wants|pediu|pede|perguntou|disse|falou|quer(?! dizer)|pidio|pide|pregunto|dijo|quiere)\b"
)


NO_REQUEST = "no request"
"""The reason of a note in which no rule found a request, nor a reason to stop one."""


def read(text: str) -> tuple[str, str]:
    """('order' | 'unsure' | 'note', the rule that decided)."""
    kind, reason = _read(text)
    if kind == "order":
        whose = someone_elses_request(text, lambda part: _read(part)[0] == "order")
        if whose:
            return "unsure", f"{reason}, but {whose}"
    return kind, reason


def someone_elses_request(text: str, asks: Callable[[str], bool]) -> str | None:
    """'quoted' or 'reported' when the request `asks` finds in the text is someone else's words
    ("the client asked: can you write a post?", 'Ana: "a post about the fair?"'), not a request to
    us: it is gone without the quotation, or it comes after "asked", "wants"… and not before."""
    unquoted = _QUOTED.sub(" . ", text)
    if unquoted != text and not asks(unquoted):
        return "quoted"
    head = _someone_else_speaks(text)
    plain = _plain(text)
    if head and asks(plain[head.end() :]) and not asks(plain[: head.start()]):
        return "reported"
    return None


def _someone_else_speaks(text: str) -> re.Match[str] | None:
    """Where someone else's words begin ("the client asked…", "Ana quer…"); not "what I said"."""
    head = _REPORTED.search(_plain(text))
    if head and re.search(r"\b(?:i|we|eu|nos|yo)\s+$", _plain(text)[: head.start()]):
        return None
    return head


def _read(text: str) -> tuple[str, str]:
    reading = Reading.of(text)
    flat = reading.flat
    if _NOTE_HEADER.search(flat):
        return "note", "a note's heading"
    for name, pattern in ORDER_RULES:
        match = pattern.search(flat)
        if match is None or (name == "question" and not reading.question):
            continue
        blocked = _blocked(flat, match, name)
        if blocked:
            return ("unsure" if blocked in ASKED_BLOCKS else "note"), f"{name}, but {blocked}"
        return "order", name
    if ":" in text:
        # "give me a hand here: a post about the new store" (a headline after a colon)
        kind, reason = _read(text.split(":", 1)[1])
        if kind == "order" and reason == "headline":
            return kind, "headline after a colon"
    if _addressed(flat):
        return "order", "addressed"
    for name, pattern in _ASK_RULES:
        if pattern.search(flat) and not _FIRM_WISH_RE.search(flat):
            return "unsure", name
    if reading.question and re.search(rf"(?:^|[|,] |{_p(ARTICLES)} |{_HEAD_MOD} ){_STRONG_NOUN}\b", flat):
        first = flat[2:].split(" ", 1)[0]
        if first not in QUESTION_WORDS and not _REPORT.search(flat) and not _FIRM_WISH_RE.search(flat):
            return "unsure", "question about a post"
    return "note", _wish_or_plan(flat) or NO_REQUEST


def _wish_or_plan(flat: str) -> str | None:
    """'a wish' or "the writer's own plan" when every sentence that names a piece is one ("one day
    a post about the shop", "we should tweet about the closure"): nothing for another reading.
    None when some sentence names a piece and is neither ("I'll send the photos. write 3 tips…")."""
    found = None
    for sentence in (s.strip() for s in flat.split("|")):
        if not _PIECE_WORDS.search(sentence):
            continue
        if _FIRM_WISH_RE.search(sentence):
            found = found or "a wish"
        elif _OWN_PLAN.search(sentence):
            found = found or "the writer's own plan"
        else:
            return None
    return found


YOU = _set("you voce voces vcs tu usted ustedes vosotros vosotras vos you_guys y_all")
"""Whom a request is addressed to."""
MAKE_VERBS = STRONG_VERBS | _set(
    "make making fazer faz fazem fazerem faria fariam fizesse fizessem hacer haces hagas harias "
    "hicieras hicierais hicieran montar monta montas monte armar arma armas sacar saca sacas bolar bola "
    "come_up_with put_together whip_up think_up mandar manda send enviar envia adaptar adapta adapt"
)
"""Verbs that make the piece, in any person ("você fizesse um post", "send me a caption")."""
_PIECE = rf"(?:{_STRONG_NOUN}|texto|text|legenda|caption|lineas|linhas)\b"
_ADDRESSED = re.compile(
    rf"\b(?:{_p(YOU)}|{_p(REQUESTS)}|{_p(PLEASE)})\b.*\b(?:{_p(MAKE_VERBS)}\b.*\b{_PIECE}|"
    rf"{_p(ARTICLES)} (?:{_MOD} ){{0,3}}{_PIECE})|\b{_p(ARTICLES)} (?:{_MOD} ){{0,3}}{_PIECE}.*\b{_p(PLEASE)}\b"
)


def _addressed(flat: str) -> bool:
    """A sentence that asks us (you, please, can you…) for a piece ("a post", "uma legenda"), or to
    make (write, send, come up with…) one, in words no rule above knows: "any chance you could come
    up with 3 tweets…". Not a question that asks for information ("how…", "do you know…"), a wish,
    or, from the request on, a report or the writer's own plan (what a transcript says before the
    request is its context: "this week was mad, so I'd like you to do a post…")."""
    for sentence in flat.split("|"):
        words = sentence.split()
        found = _ADDRESSED.search(sentence)
        if not words or words[0] in QUESTION_WORDS or found is None or _WISH_RE.search(sentence):
            continue
        rest = sentence[found.start() :]
        if _REPORT.search(rest) or _SELF_BEFORE.search(rest):
            continue
        return True
    return False


def _wish_aside(flat: str, start: int, end: int) -> re.Match[str] | None:
    """A sentence beside the request that is only a wish: "reminder: write a post…", "write a
    post? nah, not this week" (not "um dia vamos a lisboa. escreve um post…")."""
    before = flat[:start].rstrip(" |").rsplit("|", 1)[-1]
    after = flat[end + 1 :].lstrip(" |").split("|", 1)[0] if end > 0 else ""
    for side in (before, after):
        wish = _WISH_RE.search(side)
        if wish and len(_WISH_RE.sub(" ", side).replace(",", " ").split()) <= 2:
            return wish
    return None


def _blocked(flat: str, match: re.Match[str], rule: str) -> str | None:
    """Why a match is not a request after all: a wish, the writer's own plan, a report (a note); or
    a "maybe", a piece with a deadline and no please (asked about: ASKED_BLOCKS)."""
    sentence_start = flat.rfind("|", 0, match.start() + 1)
    sentence_end = flat.find("|", match.start() + 1)
    sentence = flat[sentence_start : sentence_end + 1 if sentence_end > 0 else len(flat)]
    before = flat[sentence_start : match.start() + 2]
    wish = (
        _FIRM_WISH_RE.search(sentence)
        or _WISH_RE.search(sentence)
        or _wish_aside(flat, sentence_start, sentence_end)
    )
    if wish is not None:
        if wish.group(0) in _MAYBE:
            # "maybe a post about hiring?": a request, or a thought: worth asking.
            return None if rule in ("request", "want", "convert") else "maybe"
        return "a wish"
    if _MUSING.search(before.rsplit(",", 1)[-1]):
        return "a wish"
    if rule in ("imperative", "tweet", "headline") and _SELF_BEFORE.search(before.rsplit(",", 1)[-1]):
        return "the writer's own plan"  # in the request's own clause: not "I have to run, write a post…"
    if rule == "imperative" and _LISTED_TASK.match(flat, match.start()) and not _PLEASE_RE.search(sentence):
        return LISTED_TASK_BLOCK
    if rule == "headline":
        end = flat.find("|", match.end() - 1)
        window = flat[match.start() : end if end > 0 else len(flat)]
        content = _CONTENT_START.search(window[len(match.group(0)) - 1 :])
        if content:  # what the piece will say ("avisando que não tem aula") is not a report
            window = window[: len(match.group(0)) - 1 + content.start()]
        if _REPORT.search(window):
            return "a report"
    return None


def looks_like_order(text: str) -> bool:
    """True when the text asks for content to be written (English, Portuguese, Spanish)."""
    return read(text)[0] == "order"


# ------------------------------------------------------------------------------------------
# Fields

_FIELD_VALUES: dict[str, dict[str, str]] = {
    "length": {
        **dict.fromkeys(
            _set(
                "short shorter brief quick curto curta curtinho curtinha rapidinho rapido rapida corto corta "
                "cortito cortita breve"
            ),
            "Short",
        ),
        **dict.fromkeys(
            _set("medium medio media mediano mediana medium_length extension_media tamanho_medio"), "Medium"
        ),
        **dict.fromkeys(
            _set("long longer lengthy longo longa longao largo larga extenso extensa in_depth"), "Long"
        ),
    },
    "tone": {
        **dict.fromkeys(_set("professional formal profissional profesional"), "Professional"),
        **dict.fromkeys(
            _set("casual informal relaxed laid_back descontraido descontraida relajado relajada chill"),
            "Casual",
        ),
        **dict.fromkeys(
            _set("friendly warm amigavel simpatico simpatica amistoso amistosa amigable cercano cercana"),
            "Friendly",
        ),
        **dict.fromkeys(
            _set(
                "authoritative assertive autoritativo autoritativa autoritario autoritaria with_authority "
                "com_autoridade con_autoridad"
            ),
            "Authoritative",
        ),
    },
    "topic": {
        **dict.fromkeys(_set("trend trends trending tendencia tendencias"), "Trends"),
        **dict.fromkeys(
            _set(
                "news announcement announcing noticia noticias novidade novidades novedad novedades anuncio "
                "anunciando"
            ),
            "News",
        ),
        **dict.fromkeys(_set("tip tips advice dica dicas consejo consejos truques trucos"), "Tips"),
        **dict.fromkeys(_set("product produto producto"), "Product"),
    },
}
_LENGTH_CONTEXT = (
    NOUNS
    | FIELD_WORDS
    | frozenset(PLATFORM_WORDS)
    | _set(
        "it one version bem muito mas more keep tone tom tono way jeito manera style estilo and e y please pls sea seja"
    )
)
"""Words next to which "short", "long", "friendly"… describe the piece, not something else."""
_NOT_LENGTH = re.compile(
    r"\b(?:how long|as long as|so long|no longer|long time|long ago|long term|short term|in short|"
    r"long run|quanto tempo|longo prazo|curto prazo|largo plazo|corto plazo|a lo largo|que largo|"
    r"long emails?|long story|product hunt|product manager|product owner|product team|product designer)\b"
)
_FIELD_PHRASES = (
    "medium length",
    "extension media",
    "tamanho medio",
    "in depth",
    "laid back",
    "with authority",
    "com autoridade",
    "con autoridad",
)
_PLATFORM_CONTEXT = _set(
    "for on to in at via no na nos pro pra para en de do da del el o the my our a an um uma un una"
)


def extract_fields(text: str) -> dict[str, str]:
    """The order fields the text names explicitly (the first mention of each)."""
    plain = _CLAUSE_BREAKS.sub(" , ", _SENTENCE_BREAKS.sub(" , ", _plain(text).replace("'", " ")))
    words = [_spell(w) if w != "," else w for w in re.findall(r"[^\W_]+|,", plain)]
    joined = _NOT_LENGTH.sub(" ", " ".join(words))
    for phrase in _FIELD_PHRASES:
        joined = joined.replace(phrase, phrase.replace(" ", "_"))
    words = joined.split()
    found: dict[str, str] = {}
    for i, word in enumerate(words):
        prev = words[i - 1] if i else ""
        nxt = words[i + 1] if i + 1 < len(words) else ""
        if "platform" not in found and word in PLATFORM_WORDS and _platform_named(words, i):
            found["platform"] = PLATFORM_WORDS[word]
        if word == "x" and prev in ("on", "for", "no", "en", "in", "na") and "platform" not in found:
            found["platform"] = "Twitter"
        for name in ("length", "tone"):
            value = _FIELD_VALUES[name].get(word)
            alone = (prev in ("", ",") or prev in ARTICLES) and nxt in ("", ",")
            if (
                name not in found
                and value
                and ("_" in word or alone or prev in _LENGTH_CONTEXT or nxt in _LENGTH_CONTEXT)
            ):
                found[name] = value
        value = _FIELD_VALUES["topic"].get(word)
        if "topic" not in found and value:
            found["topic"] = value
    return found


def _platform_named(words: list[str], i: int) -> bool:
    """A platform named as the place to publish, not as a subject ("about the LinkedIn algorithm")."""
    word = words[i]
    if PLATFORM_WORDS[word] in ("Twitter", "Blog") and word not in ("twitter", "blog", "blogue"):
        return True  # a tweet, an article: the kind of piece itself
    prev = words[i - 1] if i else ""
    before = words[i - 2] if i > 1 else ""
    if not prev or prev in NOUNS or prev in FIELD_WORDS or prev in VERBS:
        return True
    if prev in _PLATFORM_CONTEXT and prev not in ("the", "my", "our", "a", "an", "el", "o"):
        return True
    if prev in ("the", "my", "our", "el", "o", "a") and before in _PLATFORM_CONTEXT - _set("the my our a an"):
        return True
    nxt = words[i + 1] if i + 1 < len(words) else ""
    return nxt in NOUNS or nxt == ""


_SUBJECT_RE = re.compile(
    r"\b(?:about|regarding|on the topic of|sobre|acerca de|a respeito de|falando de|hablando de)\s+"
    r"(?P<subject>[^.?!\n;]{3,200})",
    re.IGNORECASE,
)
_SUBJECT_TRAILERS = re.compile(
    r"\s*(?:,|\bfor\b|\bon\b|\bpara\b|\bno\b|\bna\b|\ben\b|\bin\b)\s+(?:my\s+|our\s+|the\s+|o\s+|a\s+|el\s+|la\s+)?"
    r"(?:linkedin|instagram|twitter|blog)\b.*$",
    re.IGNORECASE,
)


def extract_subject(text: str) -> str | None:
    """The free-text subject ("our onboarding results"), when the text says what it is about."""
    match = _SUBJECT_RE.search(text)
    if not match:
        return None
    subject = _SUBJECT_TRAILERS.sub("", match.group("subject")).strip(" ,:-\"'")
    return subject[:300] or None


# ------------------------------------------------------------------------------------------
# Classification


@dataclass(frozen=True)
class Classification:
    kind: str
    """'order' or 'note'."""
    fields: dict[str, str] = field(default_factory=dict)
    subject: str | None = None
    via: str = "rules"
    unsure: bool = False
    """A note that looks like a request for content without a clear signal: worth one yes/no question."""
    reason: str = ""
    """Which rule decided (for the evaluation's list of misses and the logs)."""


def classify_text(text: str, settings: Settings | None = None) -> Classification:
    """Order or note: the rules, helped by the chat model when one is configured, or else by the
    learned reading (LEARNED_CLASSIFIER) where they find no request."""
    from app.orders import learned  # noqa: PLC0415 (learned.py reads this module's words: an import cycle)

    s = settings or context.settings()
    kind, reason = read(text)
    rule_fields = extract_fields(text)
    subject = extract_subject(text)
    model = classify_with_model(text, s) if (s.openai_api_key and s.classifier_model) else None
    if model is not None:
        # The model reads what the rules are unsure of; a clear request stays an order either way.
        if kind == "order" or model.kind == "order":
            # Words the message says literally win over the model's reading.
            merged = {**model.fields, **rule_fields}
            return Classification("order", merged, subject or model.subject, via="model", reason=reason)
        return Classification("note", via="model", reason=reason)
    via = "rules"
    if s.learned_classifier:
        kind, via, reason = learned.second_reading(text, kind, reason)
    if kind == "order":
        return Classification("order", rule_fields, subject, via=via, reason=reason)
    if kind == "unsure":
        # Kept for the order a "yes" would create.
        return Classification("note", rule_fields, subject, via=via, unsure=True, reason=reason)
    return Classification("note", reason=reason)


CLASSIFIER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["kind", "platform", "length", "tone", "topic", "subject"],
    "properties": {
        "kind": {"type": "string", "enum": ["note", "order"]},
        **{name: {"type": ["string", "null"], "enum": [*values, None]} for name, values in CHOICES.items()},
        "subject": {"type": ["string", "null"]},
    },
}

_CLASSIFIER_INSTRUCTIONS = (
    "Messages come from a professional writing to a content service over WhatsApp. Most are notes "
    "(ideas, observations, reminders) to be kept. Some are orders: an explicit request to write a "
    "piece of content (a post, an article, a tweet). Answer with the message kind and, for an order, "
    "the fields the message states explicitly: platform (LinkedIn, Instagram, Twitter, Blog), length "
    "(Short, Medium, Long), tone (Professional, Casual, Friendly, Authoritative), topic category "
    "(Trends, News, Tips, Product) and the subject in the writer's own words. Use null for anything "
    "the message does not state. Messages may be in English, Portuguese or Spanish."
)


def classify_with_model(text: str, settings: Settings) -> Classification | None:
    """The chat model's reading of the message, or None when it cannot be had (rules decide)."""
    try:
        client = chat_client(settings, timeout=15.0, max_retries=1)
        response = client.chat.completions.create(
            model=settings.classifier_model,
            temperature=0,
            messages=[
                {"role": "system", "content": _CLASSIFIER_INSTRUCTIONS},
                {"role": "user", "content": text[:4000]},
            ],
            response_format={
                "type": "json_schema",
                "json_schema": {
                    "name": "message_classification",
                    "strict": True,
                    "schema": CLASSIFIER_SCHEMA,
                },
            },
        )
        data = json.loads(response.choices[0].message.content or "")
    except Exception as exc:  # any failure of the optional model leaves the decision to the rules
        log.warning("classifier model unavailable; rules decide", extra={"error_type": type(exc).__name__})
        return None
    if not isinstance(data, dict) or data.get("kind") not in ("note", "order"):
        log.warning("classifier model answered out of schema; rules decide")
        return None
    fields = {name: data[name] for name in CHOICES if data.get(name) in CHOICES[name]}
    subject = data.get("subject") if isinstance(data.get("subject"), str) else None
    return Classification(str(data["kind"]), fields, (subject or "").strip()[:300] or None, via="model")
