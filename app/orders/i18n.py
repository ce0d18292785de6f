"""Every text the service sends to users, in English, Portuguese and Spanish."""

from __future__ import annotations

import re
import unicodedata
from typing import Any

LANGUAGES = ("en", "pt", "es")
DEFAULT_LANGUAGE = "en"

TEXTS: dict[str, dict[str, str]] = {
    "question.platform": {
        "en": "Which platform would you like content for?",
        "pt": "Para qual plataforma você quer o conteúdo?",
        "es": "¿Para qué plataforma quieres el contenido?",
    },
    "question.topic": {
        "en": "Which category fits this post best?",
        "pt": "Qual categoria combina melhor com este post?",
        "es": "¿Qué categoría encaja mejor con este post?",
    },
    "question.length": {
        "en": "How long should it be?",
        "pt": "Qual deve ser o tamanho?",
        "es": "¿Qué extensión debe tener?",
    },
    "question.tone": {
        "en": "Which tone should it have?",
        "pt": "Qual tom devemos usar?",
        "es": "¿Qué tono debe tener?",
    },
    "question.footer": {
        "en": "Reply with a number or tap an option.",
        "pt": "Responda com um número ou toque em uma opção.",
        "es": "Responde con un número o toca una opción.",
    },
    "question.again": {
        "en": "Sorry, I didn't get that.",
        "pt": "Desculpe, não entendi.",
        "es": "Perdona, no lo entendí.",
    },
    "order.cancelled_unclear": {
        "en": "I couldn't match your answer, so I cancelled order #{order_id}. "
        "Send your request again whenever you like.",
        "pt": "Não consegui entender sua resposta, então cancelei o pedido #{order_id}. "
        "Envie seu pedido de novo quando quiser.",
        "es": "No pude entender tu respuesta, así que cancelé el pedido #{order_id}. "
        "Envía tu solicitud de nuevo cuando quieras.",
    },
    "order.ready": {
        "en": "Your {what} is ready — open the app to review it. Order #{order_id}",
        "pt": "Seu {what} está pronto — abra o app para revisá-lo. Pedido #{order_id}",
        "es": "Tu {what} está listo — abre la app para revisarlo. Pedido #{order_id}",
    },
    "order.failed": {
        "en": "Sorry, we couldn't prepare your {what} (order #{order_id}). "
        "Please send your request again in a few minutes.",
        "pt": "Desculpe, não conseguimos preparar seu {what} (pedido #{order_id}). "
        "Envie seu pedido de novo em alguns minutos.",
        "es": "Lo sentimos, no pudimos preparar tu {what} (pedido #{order_id}). "
        "Envía tu solicitud de nuevo en unos minutos.",
    },
    "request.failed": {
        "en": "Sorry, we couldn't take your request just now. Please send it again in a few minutes.",
        "pt": "Desculpe, não conseguimos registrar seu pedido agora. Envie de novo em alguns minutos.",
        "es": "Lo sentimos, no pudimos registrar tu solicitud ahora. Envíala de nuevo en unos minutos.",
    },
    "confirm.question": {
        "en": "Want me to turn this into a post?",
        "pt": "Quer que eu transforme isso em um post?",
        "es": "¿Quieres que convierta esto en un post?",
    },
    "confirm.footer": {
        "en": "Reply yes or no.",
        "pt": "Responda sim ou não.",
        "es": "Responde sí o no.",
    },
    "what.platform": {"en": "{platform} post", "pt": "post para {platform}", "es": "post para {platform}"},
    "what.generic": {"en": "post", "pt": "post", "es": "post"},
    "help": {
        "en": "Commands:\n"
        "/status: your order in progress and recent notes\n"
        "/cancel: cancel the order in progress\n"
        "/search <words>: your five most recent notes with those words\n"
        "/notify on: a message when your content is ready\n"
        "/notify off: no more of those messages\n"
        "LINK <code>: link your account with the code from the app\n"
        "/help: this list\n"
        "Everything else you send is kept as a note.",
        "pt": "Comandos:\n"
        "/status: seu pedido em andamento e notas recentes\n"
        "/cancel: cancela o pedido em andamento\n"
        "/search <palavras>: suas cinco notas mais recentes com essas palavras\n"
        "/notify on: uma mensagem quando seu conteúdo estiver pronto\n"
        "/notify off: sem essas mensagens\n"
        "LINK <código>: vincula sua conta com o código do app\n"
        "/help: esta lista\n"
        "Todo o resto que você enviar fica guardado como nota.",
        "es": "Comandos:\n"
        "/status: tu pedido en curso y notas recientes\n"
        "/cancel: cancela el pedido en curso\n"
        "/search <palabras>: tus cinco notas más recientes con esas palabras\n"
        "/notify on: un mensaje cuando tu contenido esté listo\n"
        "/notify off: sin esos mensajes\n"
        "LINK <código>: vincula tu cuenta con el código de la app\n"
        "/help: esta lista\n"
        "Todo lo demás que envíes se guarda como nota.",
    },
    "notify.on": {
        "en": "Done: I'll let you know when your content is ready.",
        "pt": "Pronto: vou avisar quando seu conteúdo estiver pronto.",
        "es": "Listo: te avisaré cuando tu contenido esté listo.",
    },
    "notify.off": {
        "en": "Done: no more messages when content is ready.",
        "pt": "Pronto: sem mais avisos quando o conteúdo estiver pronto.",
        "es": "Listo: no más avisos cuando el contenido esté listo.",
    },
    "notify.unlinked": {
        "en": "To get these messages, link your account first: send LINK followed by the "
        "6-digit code from the app (for example LINK 123456).",
        "pt": "Para receber esses avisos, vincule sua conta primeiro: envie LINK seguido do "
        "código de 6 dígitos do app (por exemplo LINK 123456).",
        "es": "Para recibir estos avisos, vincula tu cuenta primero: envía LINK seguido del "
        "código de 6 dígitos de la app (por ejemplo LINK 123456).",
    },
    "status.order": {
        "en": "Order #{order_id} ({what}): {state}.",
        "pt": "Pedido #{order_id} ({what}): {state}.",
        "es": "Pedido #{order_id} ({what}): {state}.",
    },
    "status.clarifying": {
        "en": "waiting for your answer",
        "pt": "aguardando sua resposta",
        "es": "esperando tu respuesta",
    },
    "status.waiting_for_contact": {
        "en": "on hold: our question did not reach you; it comes again now",
        "pt": "em espera: nossa pergunta não chegou até você; ela vem de novo agora",
        "es": "en espera: nuestra pregunta no te llegó; llega de nuevo ahora",
    },
    "status.queued": {"en": "in the queue", "pt": "na fila", "es": "en la cola"},
    "status.generating": {"en": "being written", "pt": "sendo escrito", "es": "en redacción"},
    "status.no_order": {
        "en": "No order in progress.",
        "pt": "Nenhum pedido em andamento.",
        "es": "Ningún pedido en curso.",
    },
    "status.notes": {
        "en": "Notes kept in the last 7 days: {count}.",
        "pt": "Notas guardadas nos últimos 7 dias: {count}.",
        "es": "Notas guardadas en los últimos 7 días: {count}.",
    },
    "cancel.done": {
        "en": "Order #{order_id} cancelled.",
        "pt": "Pedido #{order_id} cancelado.",
        "es": "Pedido #{order_id} cancelado.",
    },
    "cancel.nothing": {
        "en": "There is no order to cancel.",
        "pt": "Não há pedido para cancelar.",
        "es": "No hay ningún pedido para cancelar.",
    },
    "link.ok": {
        "en": "Your account is linked. Send /notify on to hear when your content is ready.",
        "pt": "Sua conta está vinculada. Envie /notify on para saber quando seu conteúdo estiver pronto.",
        "es": "Tu cuenta está vinculada. Envía /notify on para saber cuándo tu contenido esté listo.",
    },
    "link.failed": {
        "en": "That code didn't work: it may be mistyped, used or expired. "
        "Get a new code in the app and send LINK followed by it.",
        "pt": "Esse código não funcionou: pode estar errado, já usado ou expirado. "
        "Gere um novo código no app e envie LINK seguido dele.",
        "es": "Ese código no funcionó: puede estar mal escrito, usado o vencido. "
        "Genera un código nuevo en la app y envía LINK seguido de él.",
    },
    "link.too_many": {
        "en": "Too many attempts with wrong codes. Please wait a while, then send LINK with a new code from the app.",
        "pt": "Muitas tentativas com códigos errados. Espere um pouco e envie LINK com um novo código do app.",
        "es": "Demasiados intentos con códigos incorrectos. Espera un rato y envía LINK con un código nuevo de la app.",
    },
    "link.other_user": {
        "en": "This number is already linked to another account. Please contact support to change it.",
        "pt": "Este número já está vinculado a outra conta. Fale com o suporte para mudar isso.",
        "es": "Este número ya está vinculado a otra cuenta. Contacta con soporte para cambiarlo.",
    },
    "link.unavailable": {
        "en": "Linking isn't available right now. Please try again later.",
        "pt": "A vinculação não está disponível agora. Tente de novo mais tarde.",
        "es": "La vinculación no está disponible ahora. Inténtalo de nuevo más tarde.",
    },
    "search.found": {
        "en": "Your {count} most recent notes with “{words}”:",
        "pt": "Suas {count} notas mais recentes com “{words}”:",
        "es": "Tus {count} notas más recientes con “{words}”:",
    },
    "search.line": {"en": "{date}: {excerpt}", "pt": "{date}: {excerpt}", "es": "{date}: {excerpt}"},
    "search.none": {
        "en": "No note of yours has “{words}”.",
        "pt": "Nenhuma nota sua tem “{words}”.",
        "es": "Ninguna nota tuya tiene “{words}”.",
    },
    "search.usage": {
        "en": "Send /search followed by the words to look for, e.g. /search invoice march",
        "pt": "Envie /search seguido das palavras que procura, por exemplo /search fatura março",
        "es": "Envía /search seguido de las palabras que buscas, por ejemplo /search factura marzo",
    },
    "search.too_long": {
        "en": "That search is too long: use at most {limit} characters.",
        "pt": "Essa busca é longa demais: use no máximo {limit} caracteres.",
        "es": "Esa búsqueda es demasiado larga: usa como máximo {limit} caracteres.",
    },
    "search.unlinked": {
        "en": "Search works once your number is linked to your account: send LINK and the code from the app.",
        "pt": "A busca funciona quando seu número está vinculado à sua conta: envie LINK e o código do app.",
        "es": "La búsqueda funciona cuando tu número está vinculado a tu cuenta: envía LINK y el código de la app.",
    },
}

CHOICE_TITLES: dict[str, dict[str, dict[str, str]]] = {
    # field -> canonical value -> language -> title (at most 20 characters)
    "platform": {
        "LinkedIn": {"en": "LinkedIn", "pt": "LinkedIn", "es": "LinkedIn"},
        "Instagram": {"en": "Instagram", "pt": "Instagram", "es": "Instagram"},
        "Twitter": {"en": "Twitter", "pt": "Twitter", "es": "Twitter"},
        "Blog": {"en": "Blog", "pt": "Blog", "es": "Blog"},
    },
    "length": {
        "Short": {"en": "Short", "pt": "Curto", "es": "Corto"},
        "Medium": {"en": "Medium", "pt": "Médio", "es": "Medio"},
        "Long": {"en": "Long", "pt": "Longo", "es": "Largo"},
    },
    "tone": {
        "Professional": {"en": "Professional", "pt": "Profissional", "es": "Profesional"},
        "Casual": {"en": "Casual", "pt": "Descontraído", "es": "Informal"},
        "Friendly": {"en": "Friendly", "pt": "Amigável", "es": "Amistoso"},
        "Authoritative": {"en": "Authoritative", "pt": "Autoritativo", "es": "Autoritativo"},
    },
    "topic": {
        "Trends": {"en": "Trends", "pt": "Tendências", "es": "Tendencias"},
        "News": {"en": "News", "pt": "Notícias", "es": "Noticias"},
        "Tips": {"en": "Tips", "pt": "Dicas", "es": "Consejos"},
        "Product": {"en": "Product", "pt": "Produto", "es": "Producto"},
    },
}


CONFIRM_TITLES: dict[str, dict[str, str]] = {
    "yes": {"en": "Yes", "pt": "Sim", "es": "Sí"},
    "no": {"en": "No", "pt": "Não", "es": "No"},
}
"""The two answers to "Want me to turn this into a post?" (quick-reply titles)."""


def language_or_default(language: str | None) -> str:
    return language if language in LANGUAGES else DEFAULT_LANGUAGE


def t(key: str, language: str | None = None, **values: Any) -> str:
    """The text `key` in `language` (English when unknown), with `{placeholders}` filled."""
    texts = TEXTS[key]
    template = texts.get(language_or_default(language)) or texts[DEFAULT_LANGUAGE]
    return template.format(**values) if values else template


def choice_title(field: str, value: str, language: str | None = None) -> str:
    return CHOICE_TITLES[field][value][language_or_default(language)]


def what(platform: str | None, language: str | None = None) -> str:
    """'LinkedIn post' / 'post para LinkedIn' / 'post'."""
    if platform:
        return t("what.platform", language, platform=platform)
    return t("what.generic", language)


def normalize(text: str) -> str:
    """Lower case, no accents, no punctuation or emoji, single spaces: for matching answers."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    plain = re.sub(r"[^\w\s]", " ", plain)
    return " ".join(plain.split())


# Words frequent in one language and rare in the other two (accents removed).
_MARKERS: dict[str, frozenset[str]] = {
    "en": frozenset(
        [
            "the",
            "and",
            "you",
            "your",
            "write",
            "about",
            "with",
            "please",
            "thanks",
            "thank",
            "hello",
            "want",
            "need",
            "is",
            "my",
            "our",
            "can",
            "it",
            "keep",
            "of",
            "this",
            "that",
            "what",
            "how",
            "would",
            "could",
            "should",
            "we",
            "they",
            "be",
            "have",
            "just",
        ]
    ),
    "pt": frozenset(
        [
            "voce",
            "nao",
            "um",
            "uma",
            "escreva",
            "escreve",
            "escrever",
            "obrigado",
            "obrigada",
            "ola",
            "quero",
            "preciso",
            "esta",
            "sao",
            "isso",
            "meu",
            "minha",
            "tambem",
            "faca",
            "pode",
            "nosso",
            "nossa",
            "voces",
            "muito",
            "entao",
            "agora",
            "ainda",
            "seu",
            "sua",
            "dos",
            "das",
            "no",
            "na",
            "ao",
            "aos",
            "pra",
            "do",
            "da",
            "bom",
            "dia",
        ]
    ),
    "es": frozenset(
        [
            "usted",
            "tu",
            "escribe",
            "escribir",
            "gracias",
            "hola",
            "quiero",
            "necesito",
            "esta",
            "es",
            "el",
            "los",
            "las",
            "mi",
            "tambien",
            "haz",
            "puedes",
            "nuestro",
            "nuestra",
            "muy",
            "entonces",
            "ahora",
            "todavia",
            "su",
            "del",
            "al",
            "por",
            "favor",
            "buenos",
            "dias",
            "y",
            "pero",
            "lo",
            "le",
        ]
    ),
}


def detect_language(text: str | None) -> str | None:
    """English, Portuguese or Spanish when the text says so clearly enough; else None."""
    if not text:
        return None
    raw = text.casefold()
    words = normalize(text).split()
    if len(words) < 3:
        return None
    scores = {lang: sum(1 for w in words if w in markers) for lang, markers in _MARKERS.items()}
    if "¿" in raw or "¡" in raw or "ñ" in raw:
        scores["es"] += 2
    if "ã" in raw or "õ" in raw or "ç" in raw:
        scores["pt"] += 2
    best = max(scores, key=lambda lang: scores[lang])
    ranked = sorted(scores.values(), reverse=True)
    if ranked[0] >= 2 and ranked[0] > ranked[1]:
        return best
    return None
