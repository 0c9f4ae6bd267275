"""The bot's wiring: python-telegram-bot handlers put each photo on a bounded queue that a few workers drain.

Handlers only queue (so a burst of photos from many chats never blocks the polling loop); `concurrency`
workers each download a photo, ask the service and reply. A sender whose photo waits behind
`busy_after` others is told so; when the queue is full the sender is asked to retry. Every message
gets an answer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import re
from typing import Mapping

from telegram import Document, Message, PhotoSize, Update
from telegram.constants import ChatAction
from telegram.error import BadRequest, TelegramError
from telegram.ext import Application, CommandHandler, ContextTypes, MessageHandler, filters

from faceserve.bot import replies
from faceserve.bot.client import FaceserveClient, ServiceError

log = logging.getLogger(__name__)

URL = re.compile(r"https?://\S+", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class BotConfig:
    token: str
    service_url: str = "http://127.0.0.1:3000"
    api_key: str | None = None
    concurrency: int = 4  # photos worked on at once
    busy_after: int = 4  # photos waiting beyond which a sender hears "working on it"
    max_queue: int = 200
    telegram_url: str = "https://api.telegram.org/bot"  # a local Bot API server or a test stand-in may replace it
    telegram_file_url: str = "https://api.telegram.org/file/bot"

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "BotConfig":
        token = env.get("TELEGRAM_BOT_TOKEN", "").strip()
        if not token:
            raise SystemExit("set TELEGRAM_BOT_TOKEN to the token @BotFather gave the bot")
        defaults = cls(token=token)
        return cls(
            token=token,
            service_url=env.get("FACESERVE_URL", defaults.service_url),
            api_key=env.get("FACESERVE_API_KEY") or None,
            concurrency=int(env.get("FACESERVE_BOT_CONCURRENCY", defaults.concurrency)),
            busy_after=int(env.get("FACESERVE_BOT_BUSY_AFTER", defaults.busy_after)),
            max_queue=int(env.get("FACESERVE_BOT_MAX_QUEUE", defaults.max_queue)),
            telegram_url=env.get("TELEGRAM_API_URL", defaults.telegram_url),
            telegram_file_url=env.get("TELEGRAM_FILE_URL", defaults.telegram_file_url),
        )


@dataclasses.dataclass(frozen=True)
class Job:
    message: Message
    attachment: PhotoSize | Document | None = None  # a photo or image file to download, or
    url: str | None = None  # a link for the service's guarded URL fetcher


class FaceBot:
    """Every reply quotes the message it answers: in a burst, each sender sees which photo is which."""

    def __init__(self, config: BotConfig, client: FaceserveClient | None = None):
        self.config = config
        self.client = client or FaceserveClient(config.service_url, config.api_key)
        self.queue: asyncio.Queue[Job] = asyncio.Queue(maxsize=config.max_queue)
        self.workers: list[asyncio.Task] = []

    def application(self) -> Application:
        application = (Application.builder().token(self.config.token)
                       .base_url(self.config.telegram_url).base_file_url(self.config.telegram_file_url)
                       .post_init(self.start).post_shutdown(self.stop).build())
        application.add_handler(CommandHandler(["start", "help"], self.on_help))
        application.add_handler(MessageHandler(filters.PHOTO, self.on_photo))
        application.add_handler(MessageHandler(filters.Document.ALL, self.on_document))
        application.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, self.on_text))
        application.add_error_handler(self.on_error)
        return application

    async def start(self, _: Application) -> None:
        self.workers = [asyncio.create_task(self.work(), name=f"bot-worker-{n}") for n in range(self.config.concurrency)]

    async def stop(self, _: Application) -> None:
        for worker in self.workers:
            worker.cancel()
        await asyncio.gather(*self.workers, return_exceptions=True)
        await self.client.close()

    # ---- handlers: answer at once, or queue

    async def on_help(self, update: Update, _: ContextTypes.DEFAULT_TYPE) -> None:
        await update.effective_message.reply_text(replies.HELP, do_quote=True)

    async def on_photo(self, update: Update, _: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        await self.enqueue(Job(message, attachment=message.photo[-1]))  # the largest size comes last

    async def on_document(self, update: Update, _: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if not (message.document.mime_type or "").startswith("image/"):
            await message.reply_text(replies.NOT_AN_IMAGE_FILE, do_quote=True)
            return
        await self.enqueue(Job(message, attachment=message.document))

    async def on_text(self, update: Update, _: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        link = URL.search(message.text or "")
        if link is None:
            await message.reply_text(replies.NOT_UNDERSTOOD, do_quote=True)
            return
        await self.enqueue(Job(message, url=link.group(0)))

    async def enqueue(self, job: Job) -> None:
        if self.queue.full():
            await job.message.reply_text(replies.QUEUE_FULL, do_quote=True)
            return
        ahead = self.queue.qsize()
        self.queue.put_nowait(job)
        if ahead >= self.config.busy_after:
            await job.message.reply_text(replies.working_on_it(ahead), do_quote=True)

    async def on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        log.error("while handling an update: %s", context.error, exc_info=context.error)

    # ---- workers

    async def work(self) -> None:
        while True:
            job = await self.queue.get()
            try:
                await self.answer(job)
            except Exception:  # noqa: BLE001 -- one failed photo must not stop a worker; its sender hears of it
                log.exception("answering message %s in chat %s", job.message.message_id, job.message.chat_id)
                try:
                    await job.message.reply_text(replies.FAILED, do_quote=True)
                except TelegramError:
                    log.exception("could not tell chat %s", job.message.chat_id)
            finally:
                self.queue.task_done()

    async def answer(self, job: Job) -> None:
        message = job.message
        await message.chat.send_action(ChatAction.UPLOAD_PHOTO)
        try:
            if job.attachment is not None:
                data = bytes(await (await job.attachment.get_file()).download_as_bytearray())
                image_type = getattr(job.attachment, "mime_type", None) or "image/jpeg"
                analysis, drawn = await self.client.look(image=data, image_type=image_type)
            else:
                analysis, drawn = await self.client.look(url=job.url)
        except ServiceError as error:
            log.info("chat %s: the service answered %s %s", message.chat_id, error.code, error.message)
            await message.reply_text(replies.error_reply(error), do_quote=True)
            return
        except BadRequest as error:
            if "too big" not in str(error).lower():
                raise
            await message.reply_text(replies.FILE_TOO_BIG, do_quote=True)
            return
        if drawn is None:
            await message.reply_text(replies.NO_FACE, do_quote=True)
            return
        await message.reply_photo(photo=drawn, caption=replies.caption(analysis), do_quote=True)
