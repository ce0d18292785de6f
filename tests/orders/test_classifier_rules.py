"""The rules that tell an order from a note, on messages as users write them (no servers).

The labelled corpus and its figures are in test_classifier_corpus.py; these are the cases that
decide the product's reputation, one by one, with the rule expected to decide.
"""

from __future__ import annotations

import pytest

from app.config import Settings
from app.orders import rules

RULES_ONLY = Settings(learned_classifier=False)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        # Observed: four orders read as notes, one note read as an order.
        ("Could you turn my notes from today into a LinkedIn post?", "order"),
        ("Turn this voice note into a post: we closed the deal with Acme…", "order"),
        ("Draft something for LinkedIn about what I learned at the workshop", "order"),
        ("Hazme un artículo de blog sobre tendencias de marketing", "order"),
        ("Note to self: I should write a post about burnout someday", "note"),
    ],
)
def test_the_observed_misreadings(text: str, kind: str) -> None:
    assert rules.classify_text(text, RULES_ONLY).kind == kind


ORDERS = [
    "Write me a LinkedIn post about the hackathon",
    "Could you please write something for LinkedIn about our new hire?",
    "I'd appreciate a short post about our volunteering",
    "can you help me with a post about the conference?",
    "help me write a linkedin post about my promotion",
    "need 3 tweets about the launch",
    "give me a caption for this photo",
    "We'd love a blog post about sustainability",
    "Post for Instagram: our new store opens Friday",
    "Draft: LinkedIn post on leadership lessons",
    "write abt our new product launch for linkedin",
    "Can I get a post about the team retreat?",
    "I would like you to write a post about our partnership",
    "hey!! linkedin post pls, about the award 🏆",
    "yo can u make smth for insta about the new menu",
    "post idea: why we pay interns. can you write it?",
    "Can you post about the webinar on LinkedIn?",
    "Write a blog about our trip",
    "ok so um yeah so we had the summit today and uh, yeah, I'd really like a post about it for linkedin",
    "Quero que você escreva um artigo sobre IA",
    "faz um textinho pro insta sobre a promoção",
    "Preciso que escreva um post sobre o nosso novo produto",
    "oi tudo bem? queria pedir um post sobre o lançamento",
    "Você podia me ajudar com um post sobre o nosso aniversário?",
    "é, então, cê faz um post sobre o evento pra mim?",
    "isso dá um bom post, escreve pra mim",
    "pode postar sobre o webinar no linkedin?",
    "Post rápido sobre o fechamento por causa da chuva pfv",
    "Quiero que me escribas un post sobre la feria",
    "necesito que me hagas un post para instagram",
    "¿Me ayudas con un post para LinkedIn sobre la feria?",
    "¿Se puede hacer un post sobre la feria?",
    "porfa un tuit sobre el sorteo",
    "un articulito para el blog sobre recetas?",
    "esto da para un buen post, escríbelo",
    "publica algo sobre el webinar en linkedin",
    "idea de post: por qué pagamos a los becarios. ¿me lo escribes?",
    "something for insta about the launch?",
    "for linkedin: a post about our new ESG report",
    "can we do a linkedin post on the rebrand",
    "How about a post on our new pricing?",
    "gimme a short post about the new app",
    "Think you could write a quick one about the fair?",
    "post this on linkedin pls: we're hiring 2 engineers",
    "hey so, new hire starts monday — linkedin welcome post pls",
    "write it up for linkedin",
    "Tô precisando de um post pro LinkedIn sobre a feira",
    "Queria ver um post sobre a nova loja",
    "posta no linkedin sobre a vaga, por favor",
    "escreve isso pro linkedin",
    "¿Te animas a escribir un post sobre la feria?",
    "Mándame un post sobre la feria",
    "Hazme un favor: un post sobre la feria para Instagram",
    "publícame algo en linkedin sobre la oferta de empleo",
    "Quería pedirte un post sobre la feria",
    "Échame una mano con un post sobre la feria",
    "Oye, ¿y un post sobre el nuevo local?",
    "Morning! Quick one: LinkedIn post about our team winning the regional award, keep it humble",
    "Please turn the notes from the board meeting into a summary post for LinkedIn",
    "Need a fresh post for Monday about productivity",
    "take what I said in the last audio and make it a post",
    "um texto longo sobre a história da nossa pizzaria pfv",
    "¿Nos preparas un post sobre el podcast?",
    "¿Podrías sacarme un post del audio de ayer?",
    "aver si me aces un post para el insta",
    "oi, bom dia! dá uma força aqui: um post sobre a inauguração da loja nova",
    "preciso muito de um post pra amanhã sobre o evento",
    "queria que você fizesse um post sobre a campanha",
    "escreve um negócio sobre a feira pro insta",
    "tô querendo um post pro blog sobre finanças pessoais",
    "¿me echas un cable con un post para la feria?",
    "quería pedirte que escribieras un post sobre la feria",
    "hace falta un post sobre la feria para mañana",
    "me vendría genial un post sobre la feria",
    "would be great to have a post about the fair by tomorrow, can you?",
    "got time for a linkedin post about the fair?",
    "fair recap post for linkedin please",
    "something short and casual about our new croissants pls",
    "¿harías un post en LinkedIn sobre tendencias de contratación?",
]
NOTES = [
    "I posted on LinkedIn about the workshop",
    "Ana wrote a great post about hiring",
    "Ana escreve posts ótimos sobre contratação",
    "Ana escribe un post cada semana",
    "I'm writing a post about burnout, will send it later",
    "estoy escribiendo un post sobre la feria",
    "posts on linkedin get more reach on tuesdays",
    "A post about burnout got 2k likes",
    "um post sobre burnout teve 2 mil curtidas",
    "Do you write blog posts too?",
    "Can you send me the invoice?",
    "¿puedes llamarme mañana?",
    "make sure to post the photos",
    "Write down the password: 1234",
    "Update: the meeting moved to 4",
    "The linkedin post? Loved it",
    "Tweet from Elon about AI was wild",
    "I need to write a post for the company blog",
    "Tenho que escrever um artigo pro blog da empresa",
    "Tengo que escribir un artículo para el blog",
    "todo: post about hiring",
    "can you believe the post from Globex?",
    "write a post? nah, not this week",
    "Novo post no blog!",
    "The client wants a post about their launch, deadline friday",
    "El cliente quiere un post sobre su lanzamiento, plazo viernes",
    "Hola, eh, escribe el informe. Eso es todo, gracias.",
    "how about lunch tomorrow?",
    "can we meet tomorrow at 10?",
    "Mándame el archivo cuando puedas",
    "you could write a book about this lol",
    "post this week went well",
    "publiqué en linkedin sobre la feria",
    "need a new laptop",
    "send the blog post draft to legal",
    "revisar o post antes de publicar",
    "a gente podia fazer um post sobre isso um dia",
    "reminder: write a linkedin post about the fair",
    "Fiz um post sobre a feira ontem",
    "Carla quiere que escribamos un post sobre la feria, lo hago yo",
    "a legenda do post de ontem tinha um erro",
    "ideas: post about hiring, post about pricing",
    "Escríbele al proveedor sobre el retraso",
    "we made a post last week and it did well",
    "a post on the fair would be awesome someday",
    "I was wondering if the fair post went out",
    "me vendría genial un café",
    "hace falta comprar papel",
    "bota o lixo pra fora",
    "te importaría llamarme luego?",
]


@pytest.mark.parametrize(
    ("text", "kind", "reason"),
    [
        # A pause ("tipo", "eh", "uh…") does not split a request from its object.
        ("eu queria, tipo, que você fizesse um post sobre o bazar de sábado", "order", "request"),
        ("um, so, what I need is, uh... a linkedin post about the merger", "order", "want"),
        ("queríamos, eh, un artículo sobre la mudanza", "order", "want"),
        # A letter left out is read back; a past tense one letter off is not.
        ("escrve um post sobre a reforma da loja", "order", "imperative"),
        ("Escribí un post ayer sobre la reforma", "note", "no request"),
        # Follow-ups, and a platform followed by the fields.
        ("another one for facebook pls", "order", "follow-up"),
        ("y otro para instagram, porfa", "order", "follow-up"),
        ("instagram, casual, tips for the rainy season", "order", "headline"),
        ("post curto e descontraído pro instagram sobre o bazar", "order", "headline"),
        # A thought stops a request in its own clause only.
        (
            "I was thinking about the launch, anyway go ahead and write it up for linkedin",
            "order",
            "imperative",
        ),
        ("thinking about a post on the launch", "note", "no request"),
        # A piece asked of us in words no other rule knows.
        ("you would be a star if you sent me a caption for the new menu", "order", "addressed"),
        ("ustedes me mandan un texto para la vidriera?", "order", "addressed"),
        ("did you read my article yet?", "note", "no request"),
        ("thanks for the post, you're the best", "note", "no request"),
        ("you saw the post we made for the fair?", "note", "no request"),
        # A key held down is read back.
        ("neeed a tweeet abt the yoga retreat, spots left: 4", "order", "want"),
        ("preciso que me escrevas uma publicação sobre a reabertura", "order", "request"),
        # A piece on the writer's own list, with its deadline, is asked about; with a please it is asked of us.
        (
            "write the newsletter tonight before bed",
            "unsure",
            "imperative, but perhaps the writer's own to-do",
        ),
        (
            "write the language school newsletter before friday",
            "unsure",
            "imperative, but perhaps the writer's own to-do",
        ),
        ("please write the post about our launch before friday", "order", "imperative"),
        ("Write the post for tonight's gala", "order", "imperative"),
        ("make the instagram post tonight pls", "order", "imperative"),
        # The writer's own plan to make a piece ends the reading; other plans leave the rest to read.
        ("I'll write the blog post about the launch myself tomorrow", "note", "the writer's own plan"),
        ("preciso fazer 4 posts pro insta essa semana, socorro", "note", "the writer's own plan"),
        # (What no rule knows is left to the learned reading: "no request", not the writer's plan.)
        ("I'll send the photos later. pls whip up 3 tips abt storing winter tyres", "note", "no request"),
        ("quero que faças 3 stories sobre a promoção", "note", "no request"),
        ("we should tweet about the closure", "note", "the writer's own plan"),
        # A wish, or the writer's own plan, stops a request in its own sentence or clause only.
        ("eventually a linkedin post about the award", "note", "a wish"),
        ("um dia vamos a lisboa. escreve um post sobre a feira", "order", "imperative"),
        ("I have to run, write a post about the fair pls", "order", "imperative"),
    ],
)
def test_requests_are_read_through_pauses_typos_and_unknown_wording(
    text: str, kind: str, reason: str
) -> None:
    kind_read, reason_read = rules.read(text)
    assert (kind_read, reason_read) == (kind, reason)


@pytest.mark.parametrize("text", ORDERS)
def test_requests_for_content_are_orders(text: str) -> None:
    found = rules.classify_text(text, RULES_ONLY)
    assert (found.kind, found.unsure) == ("order", False), found.reason


@pytest.mark.parametrize("text", NOTES)
def test_everything_else_is_a_note_nobody_is_asked_about(text: str) -> None:
    found = rules.classify_text(text, RULES_ONLY)
    assert (found.kind, found.unsure) == ("note", False), found.reason


@pytest.mark.parametrize(
    "text",
    [
        "should we do a post about the merger?",
        "New post: 5 lessons from 5 years of freelancing",
        "escrever um post sobre a feira",
        "maybe a post about hiring?",
        "the client asked: can you write a post about us? I said maybe next month",
        'Ana: "can you write a post about the fair?" - need to check with boss',
    ],
)
def test_a_message_that_only_looks_like_a_request_is_an_unsure_note(text: str) -> None:
    found = rules.classify_text(text, RULES_ONLY)
    assert (found.kind, found.unsure) == ("note", True), found.reason


@pytest.mark.parametrize(
    ("text", "fields"),
    [
        ("short LinkedIn post, casual", {"platform": "LinkedIn", "length": "Short", "tone": "Casual"}),
        (
            "quick casual tweet about the new coffee machine",
            {"platform": "Twitter", "length": "Short", "tone": "Casual"},
        ),
        (
            "post curto pro LinkedIn, descontraído",
            {"platform": "LinkedIn", "length": "Short", "tone": "Casual"},
        ),
        ("necesito un post sobre la feria, cortito, gracias", {"length": "Short"}),
        ("thread for X about fundraising", {"platform": "Twitter"}),
        (
            "post en LinkedIn, tono con autoridad, sobre ciberseguridad",
            {"platform": "LinkedIn", "tone": "Authoritative"},
        ),
        # Words that describe something else than the piece are not its fields.
        ("Make this a post pls -> clients don't read long emails", {}),
        ("write a post about the LinkedIn algorithm change", {}),
        ("tweet pls 🙏 we hit #1 on product hunt!!!", {"platform": "Twitter"}),
        ("write a post about our long-term plan", {}),
    ],
)
def test_fields_stated_are_read_and_nothing_else(text: str, fields: dict[str, str]) -> None:
    assert rules.extract_fields(text) == fields


def test_misspelled_platforms_are_recognised_but_a_past_tense_is_not_corrected_into_a_request() -> None:
    assert rules.extract_fields("pls writ a linkdin post") == {"platform": "LinkedIn"}
    assert rules.extract_fields("make a post for instgram") == {"platform": "Instagram"}
    assert rules.classify_text("pls writ a linkdin post abt our anniversary", RULES_ONLY).kind == "order"
    assert rules.classify_text("Escrevi um post sobre burnout ontem", RULES_ONLY).kind == "note"
