"""What the bot says: the caption listing each face, and a short, friendly sentence for everything else."""

from __future__ import annotations

from faceserve.bot.client import ServiceError

HELP = ("Send me a photo — or an image as a file, or a link to one — and I will send it back with every face "
        "boxed, and tell you each face's emotion, gender and age.")
NOT_UNDERSTOOD = "I only look at photos. " + HELP
NO_FACE = "I found no face in this photo. Faces that are small, turned away or covered are hard for me."
NOT_AN_IMAGE_FILE = "That file is not an image. Send a photo, or an image as a file."
FILE_TOO_BIG = "That file is too large for me to download (Telegram lets bots fetch up to 20 MB)."
QUEUE_FULL = "I have too many photos to look at right now. Please send yours again in a minute."
FAILED = "Something went wrong on my side while looking at your photo. Please try again."
CAPTION_LIMIT = 1024  # Telegram's limit for a photo's caption


def working_on_it(ahead: int) -> str:
    return f"Working on it: {ahead} {'photo is' if ahead == 1 else 'photos are'} ahead of yours."


def describe_face(face: dict) -> str:
    parts = []
    if face.get("emotion"):
        parts.append(f"{face['emotion']['label']} ({face['emotion']['score']:.0%})")
    if face.get("gender"):
        parts.append(face["gender"]["label"])
    if isinstance(face.get("age"), (int, float)):
        parts.append(f"about {face['age']:.0f}")
    if face.get("identity"):
        parts.append(f"looks like {face['identity']['name']}")
    return ", ".join(parts) or "a face"


def caption(analysis: dict) -> str:
    """One line per face, left to right (as they stand in the photo), within Telegram's caption limit."""
    faces = sorted(analysis["faces"], key=lambda face: face["box"]["x1"] + face["box"]["x2"])
    lines = ["1 face:" if len(faces) == 1 else f"{len(faces)} faces, left to right:"]
    for number, face in enumerate(faces, 1):
        line = f"{number}. {describe_face(face)}"
        rest = f"… and {len(faces) - number + 1} more"
        if len("\n".join([*lines, line, rest])) > CAPTION_LIMIT:
            lines.append(rest)
            break
        lines.append(line)
    return "\n".join(lines)


def error_reply(error: ServiceError) -> str:
    if error.status == 0 or error.status >= 500:
        return "The face service is not answering right now. Please try again in a minute."
    if error.status == 413 or "too_large" in error.code or "too_many" in error.code:
        return f"That image is too large for me: {error.message}."
    if error.code.startswith("url") or error.code == "invalid_url":
        return f"I could not use that link: {error.message}."
    if error.status in (400, 415) and ("image" in error.code or "invalid" in error.code):
        return "That does not look like an image I can read. Send a JPEG, PNG or WEBP photo."
    if error.status == 401:
        return "The face service refused my key; the bot's owner must fix its configuration."
    return f"The face service could not look at that: {error.message}."
