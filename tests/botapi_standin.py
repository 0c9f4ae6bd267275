"""A stand-in Telegram Bot API server on 127.0.0.1, for testing the bot with the real python-telegram-bot.

It implements the few methods the bot uses: getMe, deleteWebhook, getUpdates (long polling), getFile and
the file download, sendPhoto, sendMessage, sendChatAction. Tests play the users: `send_photo`,
`send_document` and `send_text` queue updates as Telegram would deliver them; every call the bot makes
is recorded in `calls`, and `wait_for` waits (bounded) until the recorded calls satisfy a condition.
"""

from __future__ import annotations

import contextlib
import email.parser
import email.policy
import io
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterator
from urllib.parse import parse_qsl, unquote

from PIL import Image

TOKEN = "123456789:STAND-IN-TOKEN"
BOT_USER = {"id": 123456789, "is_bot": True, "first_name": "faceserve", "username": "faceserve_test_bot"}
LONG_POLL_CAP_S = 1.0  # hold getUpdates at most this long: a stopping bot is not kept waiting


@dataclass
class Call:
    method: str
    fields: dict[str, str]
    files: dict[str, bytes] = field(default_factory=dict)

    @property
    def chat_id(self) -> int:
        return int(self.fields["chat_id"])

    @property
    def reply_to(self) -> int | None:
        if "reply_parameters" in self.fields:
            return json.loads(self.fields["reply_parameters"])["message_id"]
        return int(self.fields["reply_to_message_id"]) if "reply_to_message_id" in self.fields else None

    @property
    def text(self) -> str:
        return self.fields.get("text") or self.fields.get("caption") or ""


class BotApiStandIn:
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._updates: list[dict] = []
        self._files: dict[str, bytes] = {}
        self._next_update = 1
        self._next_message = 1
        self._changed = threading.Condition()
        self.polled = threading.Event()  # set by the bot's first getUpdates: it is up
        self.url = ""

    # ---- the users' side

    def _deliver(self, chat_id: int, content: dict) -> int:
        with self._changed:
            message_id = self._next_message
            self._next_message += 1
            message = {"message_id": message_id, "date": int(time.time()),
                       "chat": {"id": chat_id, "type": "private", "first_name": f"user{chat_id}"},
                       "from": {"id": chat_id, "is_bot": False, "first_name": f"user{chat_id}"}, **content}
            self._updates.append({"update_id": self._next_update, "message": message})
            self._next_update += 1
            self._changed.notify_all()
            return message_id

    def _file(self, data: bytes) -> dict:
        file_id = f"file-{len(self._files) + 1}"
        self._files[file_id] = data
        return {"file_id": file_id, "file_unique_id": f"unique-{file_id}", "file_size": len(data)}

    def send_photo(self, chat_id: int, data: bytes) -> int:
        """A photo message; its largest size is the photo itself (Telegram lists smaller sizes first)."""
        image = Image.open(io.BytesIO(data)).convert("RGB")
        small = image.copy()
        small.thumbnail((90, 90))
        buffer = io.BytesIO()
        small.save(buffer, "JPEG")
        sizes = [{**self._file(buffer.getvalue()), "width": small.width, "height": small.height},
                 {**self._file(data), "width": image.width, "height": image.height}]
        return self._deliver(chat_id, {"photo": sizes})

    def send_document(self, chat_id: int, data: bytes, name: str, mime_type: str) -> int:
        return self._deliver(chat_id, {"document": {**self._file(data), "file_name": name, "mime_type": mime_type}})

    def send_text(self, chat_id: int, text: str) -> int:
        entities = ([{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
                    if text.startswith("/") else [])
        return self._deliver(chat_id, {"text": text, **({"entities": entities} if entities else {})})

    def wait_for(self, condition: Callable[[list[Call]], bool], timeout_s: float = 90.0) -> list[Call]:
        """The calls so far, once `condition(calls)` holds; AssertionError after `timeout_s` (a deadline, not a pace)."""
        with self._changed:
            if not self._changed.wait_for(lambda: condition(self.calls), timeout=timeout_s):
                raise AssertionError(f"the bot did not answer as expected; its calls: "
                                     f"{[(c.method, c.fields.get('chat_id'), c.text[:60]) for c in self.calls]}")
            return list(self.calls)

    def replies_to(self, message_id: int) -> list[Call]:
        with self._changed:
            return [call for call in self.calls if call.reply_to == message_id]

    # ---- the bot's side

    def answer(self, method: str, fields: dict[str, str], files: dict[str, bytes]) -> tuple[int, dict]:
        if method in ("sendPhoto", "sendMessage", "sendChatAction"):
            with self._changed:
                self.calls.append(Call(method, fields, files))
                self._changed.notify_all()
        if method == "getMe":
            return 200, {"ok": True, "result": BOT_USER}
        if method in ("deleteWebhook", "sendChatAction"):
            return 200, {"ok": True, "result": True}
        if method == "getUpdates":
            self.polled.set()
            return 200, {"ok": True, "result": self._updates_after(int(fields.get("offset", 0)),
                                                                      float(fields.get("timeout", 0)))}
        if method == "getFile":
            file_id = fields["file_id"]
            if file_id not in self._files:
                return 400, {"ok": False, "error_code": 400, "description": "Bad Request: invalid file_id"}
            return 200, {"ok": True, "result": {"file_id": file_id, "file_unique_id": f"unique-{file_id}",
                                                "file_size": len(self._files[file_id]), "file_path": f"photos/{file_id}"}}
        if method in ("sendPhoto", "sendMessage"):
            chat_id = int(fields["chat_id"])
            with self._changed:
                message_id = self._next_message
                self._next_message += 1
            content = {"photo": [{"file_id": "sent", "file_unique_id": "sent", "width": 1, "height": 1}]} \
                if method == "sendPhoto" else {"text": fields.get("text", "")}
            return 200, {"ok": True, "result": {"message_id": message_id, "date": int(time.time()),
                                                "chat": {"id": chat_id, "type": "private"}, "from": BOT_USER,
                                                **content}}
        return 404, {"ok": False, "error_code": 404, "description": f"Not Found: method {method} is not stood in for"}

    def _updates_after(self, offset: int, timeout_s: float) -> list[dict]:
        with self._changed:
            # Confirmed updates (below the offset) are forgotten, as Telegram does.
            self._updates = [update for update in self._updates if update["update_id"] >= offset]
            self._changed.wait_for(lambda: self._updates, timeout=min(timeout_s, LONG_POLL_CAP_S))
            return list(self._updates)

    def file(self, file_path: str) -> bytes | None:
        return self._files.get(file_path.rsplit("/", 1)[-1])


def _form(content_type: str, body: bytes) -> tuple[dict[str, str], dict[str, bytes]]:
    """The fields and files of a urlencoded or multipart body (what python-telegram-bot sends)."""
    if content_type.startswith("multipart/form-data"):
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
        fields, files = {}, {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            if part.get_filename() is not None:
                files[name] = payload
            else:
                fields[name] = payload.decode()
        return fields, files
    if content_type.startswith("application/json"):
        return {k: v if isinstance(v, str) else json.dumps(v) for k, v in json.loads(body or b"{}").items()}, {}
    return dict(parse_qsl(body.decode())), {}


def _handler(standin: BotApiStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        def _send(self, status: int, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # a stopping bot hangs up on its long poll

        def do_POST(self):  # noqa: N802
            prefix = f"/bot{TOKEN}/"
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if not self.path.startswith(prefix):
                return self._send(401, b'{"ok":false,"error_code":401,"description":"Unauthorized"}', "application/json")
            fields, files = _form(self.headers.get("Content-Type", ""), body)
            status, answer = standin.answer(self.path[len(prefix):].split("?")[0], fields, files)
            self._send(status, json.dumps(answer).encode(), "application/json")

        def do_GET(self):  # noqa: N802
            prefix, path = f"/file/bot{TOKEN}/", unquote(self.path)  # the library quotes the token's colon
            data = standin.file(path[len(prefix):]) if path.startswith(prefix) else None
            if data is None:
                return self._send(404, b"not found", "text/plain")
            self._send(200, data, "application/octet-stream")

    return Handler


@contextlib.contextmanager
def running() -> Iterator[BotApiStandIn]:
    """The stand-in, serving on a free 127.0.0.1 port (`standin.url`) until the block ends."""
    standin = BotApiStandIn()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(standin))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    standin.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield standin
    finally:
        server.shutdown()
        server.server_close()
