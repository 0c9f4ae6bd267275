"""The Telegram bot: a photo in a chat comes back with its faces boxed and a caption naming each face.

A process of its own (`python -m faceserve.bot`) that calls the faceserve service over HTTP, as any
client does: `client.py` talks to the service, `replies.py` words the answers, `app.py` wires
python-telegram-bot's handlers to a bounded queue of workers, `__main__.py` reads the configuration
from the environment. Its requirements are `requirements/bot.txt`; no bento carries it.

Not here: anything about faces themselves (the service decides, the bot relays).
"""
