"""`python -m faceserve.bot`: run the Telegram bot until interrupted.

    TELEGRAM_BOT_TOKEN=<token from @BotFather> FACESERVE_URL=http://127.0.0.1:3000 python -m faceserve.bot

Optional: FACESERVE_API_KEY, FACESERVE_BOT_CONCURRENCY (4), FACESERVE_BOT_BUSY_AFTER (4),
FACESERVE_BOT_MAX_QUEUE (200), TELEGRAM_API_URL / TELEGRAM_FILE_URL (a local Bot API server).
"""

from __future__ import annotations

import argparse
import logging

from telegram import Update

from faceserve.bot.app import BotConfig, FaceBot


def main(argv: list[str] | None = None) -> None:
    # Configuration is the environment's (a token does not belong on a command line); --help needs none of it.
    argparse.ArgumentParser(prog="python -m faceserve.bot", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # its request lines carry the bot token
    config = BotConfig.from_env()
    logging.getLogger(__name__).info("faceserve bot: service %s, %d workers", config.service_url, config.concurrency)
    FaceBot(config).application().run_polling(allowed_updates=[Update.MESSAGE])


if __name__ == "__main__":
    main()
