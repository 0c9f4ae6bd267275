"""The Telegram bot (`python -m faceserve.bot`, the real python-telegram-bot) against a stand-in Bot API server
and the real service: users send photos, files, links and words; every message gets the right answer."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from faceserve.bot import replies
from faceserve.dev import photos
from tests import botapi_standin
from tests.hostile_corpus import image_server
from tests.support import LOG_DIR, QUADRANT_EMOTIONS, ROOT, jpeg, png

CONCURRENCY, BUSY_AFTER = 2, 4


@pytest.fixture(scope="module")
def telegram(front_end_service):
    """The stand-in Bot API, with the bot process polling it and calling the service."""
    log = LOG_DIR / "faceserve-bot-test.log"
    with botapi_standin.running() as standin, open(log, "w") as output:
        env = {**os.environ, "TELEGRAM_BOT_TOKEN": botapi_standin.TOKEN,
               "TELEGRAM_API_URL": f"{standin.url}/bot", "TELEGRAM_FILE_URL": f"{standin.url}/file/bot",
               "FACESERVE_URL": front_end_service, "FACESERVE_BOT_CONCURRENCY": str(CONCURRENCY),
               "FACESERVE_BOT_BUSY_AFTER": str(BUSY_AFTER)}
        bot = subprocess.Popen([sys.executable, "-m", "faceserve.bot"], cwd=ROOT, env=env, stdout=output,
                               stderr=subprocess.STDOUT)
        try:
            if not standin.polled.wait(timeout=60):
                pytest.fail(f"the bot never polled for updates; see {log}: {log.read_text()[-800:]}")
            yield standin
        finally:
            bot.send_signal(signal.SIGINT)  # python-telegram-bot stops polling and shuts down on SIGINT
            try:
                bot.wait(timeout=30)
            except subprocess.TimeoutExpired:
                bot.kill()
                bot.wait()
    assert "STAND-IN-TOKEN" not in log.read_text()  # the token is never logged


def reply(standin, message_id: int, method: str | None = None) -> botapi_standin.Call:
    """The bot's answer to a message: the photo or text sent in reply to it (not "working on it")."""
    def answered(calls):
        return [c for c in calls if c.reply_to == message_id and c.method in ("sendPhoto", "sendMessage")
                and not c.text.startswith("Working on it")]
    (call,) = answered(standin.wait_for(lambda calls: answered(calls)))
    if method:
        assert call.method == method, call.text
    return call


def reply_photo(call: botapi_standin.Call) -> Image.Image:
    return Image.open(io.BytesIO(call.files["photo"]))


def test_start_and_help(telegram):
    for command in ("/start", "/help"):
        assert reply(telegram, telegram.send_text(1, command), "sendMessage").text == replies.HELP


def test_grid_photo_annotated_with_each_face_named(telegram, emotion_grid):
    message = telegram.send_photo(2, jpeg(emotion_grid))
    answer = reply(telegram, message, "sendPhoto")
    assert reply_photo(answer).size == (emotion_grid.shape[1], emotion_grid.shape[0])
    lines = answer.text.splitlines()
    assert lines[0] == "4 faces, left to right:"
    assert Counter(line.split(". ")[1].split(" (")[0] for line in lines[1:]) == Counter(QUADRANT_EMOTIONS.values())
    assert any(c.method == "sendChatAction" and c.chat_id == 2 for c in telegram.calls)


def test_image_sent_as_a_file(telegram, gender_age_built):
    message = telegram.send_document(3, png(photos.astronaut()), "astronaut.png", "image/png")
    answer = reply(telegram, message, "sendPhoto")
    assert reply_photo(answer).size == (512, 512)
    assert answer.text.startswith("1 face:\n1. happy (") and ", female, about " in answer.text


def test_link_fetched_by_the_service(telegram):
    with image_server() as port:
        message = telegram.send_text(4, f"what about this one? http://localhost:{port}/face.jpg")
        answer = reply(telegram, message, "sendPhoto")
    assert reply_photo(answer).size == (512, 512) and "1. happy (" in answer.text


def test_friendly_words_for_everything_else(telegram):
    noise = np.random.default_rng(0).integers(0, 256, (800, 1000, 3), dtype=np.uint8)
    sent = {
        telegram.send_photo(5, jpeg(photos.no_face_photos()["coffee"])): replies.NO_FACE,
        telegram.send_document(5, b"shopping: eggs, milk", "notes.txt", "text/plain"): replies.NOT_AN_IMAGE_FILE,
        telegram.send_document(5, b"not really a jpeg", "fake.jpg", "image/jpeg"): "That does not look like an image",
        telegram.send_document(5, png(noise), "huge.png", "image/png"): "That image is too large for me",
        telegram.send_text(5, "hello bot"): replies.NOT_UNDERSTOOD,
        telegram.send_text(5, "http://localhost:1/none.jpg"): "I could not use that link",
    }
    for message, words in sent.items():
        assert reply(telegram, message, "sendMessage").text.startswith(words)


def test_burst_from_ten_chats_all_answered(telegram):
    face = jpeg(photos.astronaut())
    messages = [telegram.send_photo(100 + n % 10, face) for n in range(50)]
    for message in messages:
        answer = reply(telegram, message, "sendPhoto")
        assert answer.chat_id in range(100, 110) and "1. happy (" in answer.text
    # 50 photos at once for 2 workers: later senders were told their photo waits.
    busy = [c for c in telegram.calls if c.method == "sendMessage" and c.text.startswith("Working on it")]
    assert busy and {c.reply_to for c in busy} <= set(messages)
