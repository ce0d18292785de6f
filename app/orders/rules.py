"""Telling an order from a note, and reading the four order fields and the subject from a message.

`classify_text(text)` is the entry point: rules in English, Portuguese and Spanish, helped by a
chat model when one is configured.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from app import context
from app.config import Settings
from app.orders import i18n

log = logging.getLogger(__name__)

CHOICES: dict[str, tuple[str, ...]] = {
    "platform": ("LinkedIn", "Instagram", "Twitter", "Blog"),
    "length": ("Short", "Medium", "Long"),
    "tone": ("Professional", "Casual", "Friendly", "Authoritative"),
    "topic": ("Trends", "News", "Tips", "Product"),
}


def _alternation(words: str) -> str:
    return "|".join(re.escape(w).replace(r"\ ", r"\s+") for w in words.split(","))


# Matched against i18n.normalize(text): lower case, no accents, no punctuation.
_FIELD_WORDS: dict[str, dict[str, str]] = {
    "platform": {
        "LinkedIn": "linkedin,linked in",
        "Instagram": "instagram,insta,ig,reel,reels",
        "Twitter": "twitter,tweet,tweets,tuit,tuite,tuitar,x thread",
        "Blog": "blog,blogpost,blog post,article,artigo,articulo",
    },
    "length": {
        "Short": "short,shorter,brief,quick,curto,curta,breve,corto,corta",
        "Medium": "medium,medium length,medio,mediano,mediana",
        "Long": "long,longer,lengthy,detailed,in depth,longo,longa,largo,larga,extenso,extensa",
    },
    "tone": {
        "Professional": "professional,formal,profissional,profesional",
        "Casual": "casual,informal,relaxed,laid back,descontraido,descontraida,relajado",
        "Friendly": "friendly,warm,amigavel,amistoso,amistosa,amigable,cercano",
        "Authoritative": "authoritative,assertive,autoritativo,autoritario,autoritaria",
    },
    "topic": {
        "Trends": "trend,trends,trending,tendencia,tendencias",
        "News": "news,announcement,noticia,noticias,novidade,novidades,novedad,novedades,anuncio",
        "Tips": "tip,tips,advice,how to guide,dica,dicas,consejo,consejos,truques,trucos",
        "Product": "product,produto,producto,feature,launch,lancamento,lanzamiento",
    },
}
_FIELD_PATTERNS = {
    name: {value: re.compile(rf"\b(?:{_alternation(words)})\b") for value, words in values.items()}
    for name, values in _FIELD_WORDS.items()
}
# "how long", "as long as", "long-term": not a length.
_NOT_LENGTH = re.compile(
    r"\b(?:how long|as long as|so long|no longer|long time|long ago|long term|short term|in short|"
    r"long run|quanto tempo|longo prazo|curto prazo|largo plazo|corto plazo)\b"
)

_CONTENT_NOUNS = _alternation(
    "post,posts,postagem,publicacao,publicacion,article,artigo,articulo,blog post,tweet,thread,"
    "caption,legenda,newsletter,carousel,carrossel,carrusel,copy,texto para,conteudo,contenido,content piece"
)
_VERBS = _alternation(
    "write,draft,create,compose,craft,prepare,put together,make,"
    "escreva,escreve,escrever,escrevam,redija,redigir,crie,criar,cria,faca,fazer,faz,prepare,preparar,"
    "prepara,monte,montar,escribe,escribir,escribeme,escribenos,redacta,redactar,crea,crear,haz,hacer,"
    "preparame,arma,armar"
)
_REQUESTS = _alternation(
    "i need,i want,i would like,i d like,id like,can you,could you,would you,please,pls,"
    "preciso de,quero,gostaria de,pode,podes,poderia,por favor,necesito,quiero,me gustaria,puedes,podrias"
)
_PLATFORMS = _alternation("linkedin,instagram,insta,twitter,blog")
_ARTICLES = _alternation("a,an,one,new,um,uma,novo,nova,un,una,nuevo,nueva")
_ORDER_PATTERNS = (
    # "write a post", "escreva um post", "escribe un post", "draft me a short LinkedIn article"
    re.compile(rf"\b(?:{_VERBS})\b(?!\s+sure)(?:\s+\w+){{0,5}}?\s+(?:{_CONTENT_NOUNS})\b"),
    # "can you ... a post", "preciso de um post", "necesito un post"
    re.compile(rf"\b(?:{_REQUESTS})\b(?:\s+\w+){{0,6}}?\s+(?:{_CONTENT_NOUNS})\b"),
    # A message that starts by naming what to write: "LinkedIn post about ...", "post para o
    # instagram sobre ..." (a platform named later, "saw a LinkedIn post...", is only a note).
    re.compile(rf"^(?:{_ARTICLES}\s+)?(?:{_PLATFORMS})\s+(?:{_CONTENT_NOUNS})\b"),
    re.compile(
        rf"^(?:{_ARTICLES}\s+)?(?:{_CONTENT_NOUNS})\s+(?:for|on|no|na|para|en|pro|pra)\s+"
        rf"(?:o\s+|el\s+|the\s+)?(?:{_PLATFORMS})\b"
    ),
    # "tweet about ..."
    re.compile(r"^(?:please\s+)?tweet\s+about\b"),
)
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


def extract_fields(text: str) -> dict[str, str]:
    """The order fields the text names explicitly (first match per field)."""
    plain = i18n.normalize(text)
    found: dict[str, str] = {}
    for name, patterns in _FIELD_PATTERNS.items():
        haystack = _NOT_LENGTH.sub(" ", plain) if name == "length" else plain
        hits = [(m.start(), value) for value, pattern in patterns.items() if (m := pattern.search(haystack))]
        if hits:
            found[name] = min(hits)[1]
    return found


def extract_subject(text: str) -> str | None:
    """The free-text subject ("our onboarding results"), when the text says what it is about."""
    match = _SUBJECT_RE.search(text)
    if not match:
        return None
    subject = _SUBJECT_TRAILERS.sub("", match.group("subject")).strip(" ,:-\"'")
    return subject[:300] or None


def looks_like_order(text: str) -> bool:
    """True when the text asks for content to be written (English, Portuguese, Spanish)."""
    plain = i18n.normalize(text)
    return any(p.search(plain) for p in _ORDER_PATTERNS)


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
    """Order or note: the rules, helped by the chat model when one is configured."""
    s = settings or context.settings()
    rules_order = looks_like_order(text)
    rule_fields = extract_fields(text)
    subject = extract_subject(text)
    model = classify_with_model(text, s) if (s.openai_api_key and s.classifier_model) else None
    if model is not None:
        kind = "order" if (rules_order or model.kind == "order") else "note"
        if kind == "order":
            # Words the message says literally win over the model's reading.
            merged = {**model.fields, **rule_fields}
            return Classification("order", merged, subject or model.subject, via="model")
        return Classification("note", via="model")
    if rules_order:
        return Classification("order", rule_fields, subject)
    return Classification("note")


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
        from app.orders.openai_client import chat_client

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
