"""The bot's words without Telegram or a service: captions within Telegram's limit, an answer for every error."""

from __future__ import annotations

from faceserve.bot import replies
from faceserve.bot.client import ServiceError


def face(x1: float, emotion: str, identity: str | None = None) -> dict:
    return {"box": {"x1": x1, "y1": 0, "x2": x1 + 10, "y2": 10}, "score": 0.9,
            "emotion": {"label": emotion, "score": 0.87, "scores": {}}, "gender": {"label": "female", "score": 0.9},
            "age": 31.4, "identity": {"id": "1", "name": identity, "similarity": 0.8} if identity else None}


def test_caption_lists_faces_left_to_right():
    text = replies.caption({"faces": [face(50, "sad"), face(0, "happy", identity="Ada")]})
    assert text == ("2 faces, left to right:\n1. happy (87%), female, about 31, looks like Ada\n"
                    "2. sad (87%), female, about 31")
    assert replies.caption({"faces": [face(0, "angry")]}).startswith("1 face:\n1. angry (87%)")


def test_caption_stays_within_telegrams_limit():
    text = replies.caption({"faces": [face(n, "surprise") for n in range(100)]})
    assert len(text) <= replies.CAPTION_LIMIT and text.endswith("more")
    shown = len(text.splitlines()) - 2
    assert text.splitlines()[-1] == f"… and {100 - shown} more"


def test_every_error_gets_a_sentence():
    assert "not answering" in replies.error_reply(ServiceError(0, "unreachable", "connect failed"))
    assert "not answering" in replies.error_reply(ServiceError(503, "backend_unavailable", "down"))
    assert "too large" in replies.error_reply(ServiceError(413, "body_too_large", "the body is at least 5 bytes"))
    assert "too large" in replies.error_reply(ServiceError(422, "image_too_large", "the image is 9x9 pixels"))
    assert "link" in replies.error_reply(ServiceError(403, "url_forbidden", "not a public address"))
    assert "image I can read" in replies.error_reply(ServiceError(400, "invalid_image", "not an image"))
    assert "configuration" in replies.error_reply(ServiceError(401, "unauthorized", "no key"))
    assert replies.working_on_it(1) == "Working on it: 1 photo is ahead of yours."
