"""The web page at `/`, in Debian's Chromium driven by Playwright: what a person sees on it.

One service for the session (`front_end_service`), one browser for this module (its fake camera plays the
astronaut photo), a fresh browser context per test. Screenshots go to tests/artifacts/.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import re
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from faceserve.dev import photos
from tests.hostile_corpus import image_server
from tests.support import QUADRANT_EMOTIONS, ROOT, jpeg, png, serve

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is in requirements/dev.txt")
expect = playwright_api.expect

CHROMIUM = Path("/usr/bin/chromium")  # Debian's (requirements/debian.txt); Playwright's own browsers are never fetched
ARTIFACTS = ROOT / "tests" / "artifacts"
KEY = "fs-web-test-key-3c9d1e"  # every scope (FACESERVE_API_KEYS)
ANALYZE_KEY = "fs-web-analyze-key-81f0a2"  # `analyze` only (the key file)
# Model calls on a busy 2-core machine: auto-waiting assertions get room, they never sleep.
expect.set_options(timeout=30_000)

READING_ORDER = [QUADRANT_EMOTIONS[quadrant] for quadrant in ((0, 0), (1, 0), (0, 1), (1, 1))]


def y4m(image: np.ndarray) -> bytes:
    """One frame as a YUV4MPEG2 4:2:0 stream, the format Chromium's fake camera plays in a loop."""
    height, width = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
    ycbcr = Image.fromarray(image[:height, :width]).convert("YCbCr")  # full-range BT.601, as `C420jpeg` says
    luma, cb, cr = ycbcr.split()
    half = (width // 2, height // 2)
    planes = luma.tobytes() + cb.resize(half, Image.BOX).tobytes() + cr.resize(half, Image.BOX).tobytes()
    return f"YUV4MPEG2 W{width} H{height} F15:1 Ip A1:1 C420jpeg\n".encode() + b"FRAME\n" + planes


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make system` installs Debian's chromium (requirements/debian.txt)")
    camera = tmp_path_factory.mktemp("camera") / "astronaut.y4m"
    camera.write_bytes(y4m(photos.astronaut()))
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox",  # CI runs as root
            "--use-fake-device-for-media-stream", f"--use-file-for-fake-video-capture={camera}"])
        yield chromium
        chromium.close()


@pytest.fixture
def context(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    yield context
    context.close()


def open_page(context, url: str, *, ready: bool = True):
    page = context.new_page()
    page.goto(url)
    if ready:
        expect(page.locator("body[data-ready]")).to_be_attached()
    return page


def photo(name: str, data: bytes, kind: str) -> dict:
    return {"name": name, "mimeType": kind, "buffer": data}


def rows(page, title: str):
    return page.get_by_role("table", name=f"Faces in {title}").locator("tbody tr")


def top_labels(page, title: str, column: int = 1) -> list[str]:
    return [row.locator("td").nth(column - 1).locator(".top-label").inner_text() for row in rows(page, title).all()]


def canvas_of(page, title: str):
    return page.get_by_role("img", name=f"{title} with")


def canvas_size(canvas) -> tuple[int, int]:
    return int(canvas.get_attribute("width")), int(canvas.get_attribute("height"))


def pixels_near(canvas, point: tuple[float, float], radius: int = 4) -> np.ndarray:
    """The screenshot pixels (RGB) around a point given in the photo's own pixels."""
    shot = np.asarray(Image.open(io.BytesIO(canvas.screenshot())).convert("RGB")).astype(int)
    width, _ = canvas_size(canvas)
    scale = shot.shape[1] / width
    x, y = round(point[0] * scale), round(point[1] * scale)
    return shot[max(0, y - radius):y + radius + 1, max(0, x - radius):x + radius + 1].reshape(-1, 3)


def is_green(rgb: np.ndarray) -> np.ndarray:  # the page's box colour, #00ff00
    return (rgb[:, 1] > 180) & (rgb[:, 0] < 110) & (rgb[:, 2] < 110)


def is_orange(rgb: np.ndarray) -> np.ndarray:  # the highlighted box, #ff8c00
    return (rgb[:, 0] > 200) & (rgb[:, 1] > 90) & (rgb[:, 1] < 190) & (rgb[:, 2] < 90)


def is_pink(rgb: np.ndarray) -> np.ndarray:  # a landmark dot, #ff2d95
    return (rgb[:, 0] > 200) & (rgb[:, 1] < 110) & (rgb[:, 2] > 100)


def analyze(url: str, data: bytes, kind: str) -> dict:
    return httpx.post(f"{url}/analyze", files={"image": ("photo", data, kind)}, timeout=60).raise_for_status().json()


def model_labels(url: str, task: str, headers: dict | None = None) -> list[str]:
    models = httpx.post(f"{url}/models", headers=headers, timeout=30).raise_for_status().json()["models"]
    (model,) = [m for m in models if m["task"] == task]
    return model["labels"]


def feedback_summary(url: str) -> dict:
    """Per field, the count and each (model said, correct) pair's count, as the service sums them up."""
    summary = httpx.post(f"{url}/feedback/summary", timeout=30).raise_for_status().json()
    return {f["field"]: (f["count"], {(c["model_said"], c["correct"]): c["count"] for c in f["confusions"]})
            for f in summary["fields"]} | {"total": summary["total"]}


def summary_row(page, field: str):
    table = page.get_by_role("table", name="Corrections by field")
    return table.locator("tbody tr").filter(has=page.get_by_role("rowheader", name=field, exact=True))


def downloaded_csv(page) -> tuple[str, list[dict]]:
    """Click the Feedback tab's "Download CSV": the file name the browser saved under, and its rows."""
    with page.expect_download() as downloading:
        page.get_by_role("button", name="Download CSV").click()
    download = downloading.value
    return download.suggested_filename, list(csv.DictReader(io.StringIO(Path(download.path()).read_text())))


def test_grid_photo_four_faces_boxed_in_green_and_highlighted_from_the_table(front_end_service, context,
                                                                              emotion_grid, gender_age_built):
    requested = []
    context.on("request", lambda request: requested.append(request.url))
    page = open_page(context, front_end_service)
    data = jpeg(emotion_grid)
    page.get_by_label("Photos").set_input_files(photo("grid.jpg", data, "image/jpeg"))

    expect(rows(page, "grid.jpg")).to_have_count(4)
    assert top_labels(page, "grid.jpg") == READING_ORDER
    canvas = canvas_of(page, "grid.jpg")
    assert canvas_size(canvas) == (emotion_grid.shape[1], emotion_grid.shape[0])
    expect(page.get_by_role("status")).to_have_text("1 photo analysed.")
    page.screenshot(path=ARTIFACTS / "web-grid.png", full_page=True)

    # The first face (top left): the middle of its box's left edge is drawn green, orange once its row is hovered.
    first = min(analyze(front_end_service, data, "image/jpeg")["faces"], key=lambda f: f["box"]["x1"] + f["box"]["y1"])
    left_edge = (first["box"]["x1"], (first["box"]["y1"] + first["box"]["y2"]) / 2)
    assert is_green(pixels_near(canvas, left_edge)).any()
    rows(page, "grid.jpg").first.hover()
    expect(rows(page, "grid.jpg").first).to_have_class("highlighted")
    assert is_orange(pixels_near(canvas, left_edge)).any() and not is_green(pixels_near(canvas, left_edge, 1)).any()
    page.screenshot(path=ARTIFACTS / "web-grid-highlighted.png", full_page=True)
    # Every asset and call went to the service itself.
    assert requested and all(u.startswith(front_end_service) or u.startswith(("blob:", "data:")) for u in requested)


def test_astronaut_one_happy_female_face_at_the_photo_size(front_end_service, context, gender_age_built):
    page = open_page(context, front_end_service)
    image = photos.astronaut()
    page.get_by_label("Photos").set_input_files(photo("astronaut.png", png(image), "image/png"))
    expect(rows(page, "astronaut.png")).to_have_count(1)
    assert top_labels(page, "astronaut.png") == ["happy"]
    expect(rows(page, "astronaut.png").first.locator("td").nth(1)).to_contain_text("female")
    assert canvas_size(canvas_of(page, "astronaut.png")) == (512, 512)
    page.screenshot(path=ARTIFACTS / "web-astronaut.png")  # README's docs/web-page.png
    # The service knows people: an Identities tab, an identity column.
    expect(page.get_by_role("tab", name="Identities")).to_be_visible()
    expect(page.get_by_role("columnheader", name="Identity")).to_have_count(1)


def test_enrol_a_face_then_it_is_recognised_listed_and_deleted(front_end_service, context):
    """The identity API of the real service: the page asks `analyze` to identify, enrols a face under a name,
    lists and deletes the identity; the face's landmarks and pose are shown."""
    forms: list[bytes] = []

    def passed_on(route):
        forms.append(route.request.post_data_buffer)
        route.continue_()

    context.route("**/analyze", passed_on)
    page = open_page(context, front_end_service)
    astronaut = jpeg(photos.astronaut())
    page.get_by_label("Photos").set_input_files(photo("astronaut.jpg", astronaut, "image/jpeg"))
    row = rows(page, "astronaut.jpg").first
    expect(row).to_contain_text("5 points")
    expect(row).to_contain_text(re.compile(r"yaw -?\d+°\s*pitch -?\d+°\s*roll -?\d+°"))
    assert b'name="identify"' in forms[0]
    (face,) = analyze(front_end_service, astronaut, "image/jpeg")["faces"]
    left_eye = face["landmarks"][0]
    assert is_pink(pixels_near(canvas_of(page, "astronaut.jpg"), left_eye, 2)).any()  # a landmark dot

    row.get_by_label("Name of face 1").fill("Eileen")
    row.get_by_role("button", name="Enrol").click()
    expect(row).to_contain_text("enrolled as Eileen")
    page.screenshot(path=ARTIFACTS / "web-identity.png", full_page=True)

    # The same photo again: the face is recognised.
    page.get_by_label("Photos").set_input_files(photo("again.jpg", astronaut, "image/jpeg"))
    expect(rows(page, "again.jpg").first).to_contain_text("Eileen")

    page.get_by_role("tab", name="Identities").click()
    people = page.get_by_role("table", name="Enrolled identities").locator("tbody tr")
    expect(people).to_have_count(1)
    expect(people.first).to_contain_text("Eileen")
    expect(people.first.locator("td").nth(1)).to_have_text("1")
    page.get_by_role("button", name="Delete Eileen").click()
    expect(people.first).to_have_text("Nobody is enrolled yet.")
    listed = httpx.post(f"{front_end_service}/identities", json={}, timeout=30).json()
    assert listed["total"] == 0


def js_round(value: float) -> int:
    """Math.round, as the page rounds (Python's round() goes to the even neighbour at .5)."""
    return math.floor(value + 0.5)


def test_the_faces_table_shows_each_faces_quality_and_fits_a_1280_px_window(front_end_service, browser, emotion_grid,
                                                                            gender_age_built):
    """Every column the grid's faces fill (emotion bars, gender, age, identity's enrol form, feedback, and quality
    with the pose and landmarks) is within the table's visible area at 1280x800, beside the photo: nothing cut,
    no scrolling sideways."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = open_page(context, front_end_service)
        data = jpeg(emotion_grid)
        page.get_by_label("Photos").set_input_files(photo("grid.jpg", data, "image/jpeg"))
        expect(rows(page, "grid.jpg")).to_have_count(4)
        table = page.get_by_role("table", name="Faces in grid.jpg")
        names = table.locator("thead th").all_inner_texts()
        assert names == ["Face", "Emotion", "Gender", "Age", "Identity", "Feedback", "Quality"]
        faces = analyze(front_end_service, data, "image/jpeg")["faces"]
        # the table's reading order: the grid's top row, then its bottom row, each left to right
        faces.sort(key=lambda f: (f["box"]["y1"] > emotion_grid.shape[0] / 2, f["box"]["x1"]))
        for row, face in zip(rows(page, "grid.jpg").all(), faces):
            measured = face["quality"]
            cell = row.locator("td").nth(names.index("Quality") - 1)
            assert cell.locator("li").all_inner_texts() == [
                f"{js_round(measured['size'])} px", f"sharpness {js_round(measured['sharpness'])}",
                f"turned {js_round(measured['turn'])}°", f"presence {js_round(measured['presence'] * 100)} %",
                f"detection {js_round(face['score'] * 100)} %", *(f"{angle} {js_round(face['pose'][angle])}°"
                                                                  for angle in ("yaw", "pitch", "roll")),
                "5 points"]
        page.screenshot(path=ARTIFACTS / "web-quality-1280.png", full_page=True)

        visible = page.get_by_role("article", name="Result for grid.jpg").locator(".table-wrap").bounding_box()
        assert visible["x"] >= 0 and visible["x"] + visible["width"] <= 1280
        for header in table.locator("thead th").all():
            box = header.bounding_box()
            assert box["x"] >= visible["x"] and box["x"] + box["width"] <= visible["x"] + visible["width"] + 0.5, (
                header.inner_text(), box, visible)
    finally:
        context.close()


def test_several_photos_with_a_non_image_and_a_too_large_one(front_end_service, context):
    page = open_page(context, front_end_service)
    limit = httpx.get(f"{front_end_service}/features").json()["max_body_bytes"]
    noise = np.random.default_rng(0).integers(0, 256, (800, 1000, 3), dtype=np.uint8)
    too_large = png(noise)
    assert len(too_large) > limit
    page.get_by_label("Photos").set_input_files([
        photo("astronaut.jpg", jpeg(photos.astronaut()), "image/jpeg"),
        photo("notes.txt", b"shopping: eggs, milk", "text/plain"),
        photo("huge.png", too_large, "image/png")])

    expect(page.get_by_role("status")).to_have_text("3 photos: 1 analysed, 2 could not be.")
    expect(rows(page, "astronaut.jpg")).to_have_count(1)
    not_image = page.get_by_role("article", name="Result for notes.txt").get_by_role("alert")
    expect(not_image).to_contain_text("notes.txt is not an image the service can read.")
    expect(not_image).to_contain_text("not an image in a supported format")
    huge = page.get_by_role("article", name="Result for huge.png").get_by_role("alert")
    expect(huge).to_contain_text("huge.png is too large.")
    expect(huge).to_contain_text(f"the limit is {limit} bytes")
    page.screenshot(path=ARTIFACTS / "web-errors.png", full_page=True)


def test_drop_and_paste(front_end_service, context):
    page = open_page(context, front_end_service)
    data = list(jpeg(photos.astronaut()))
    dropped = page.evaluate_handle("""(bytes) => {
        const transfer = new DataTransfer();
        transfer.items.add(new File([new Uint8Array(bytes)], "dropped.jpg", { type: "image/jpeg" }));
        return transfer; }""", data)
    page.get_by_text("Or drop photos here").dispatch_event("drop", {"dataTransfer": dropped})
    expect(rows(page, "dropped.jpg")).to_have_count(1)
    page.evaluate("""(bytes) => {
        const clipboard = new DataTransfer();
        clipboard.items.add(new File([new Uint8Array(bytes)], "pasted.jpg", { type: "image/jpeg" }));
        document.dispatchEvent(new ClipboardEvent("paste", { clipboardData: clipboard })); }""", data)
    expect(rows(page, "pasted.jpg")).to_have_count(1)
    assert top_labels(page, "pasted.jpg") == ["happy"]


def test_photo_from_a_url_fetched_by_the_service(front_end_service, context):
    page = open_page(context, front_end_service)
    with image_server() as port:
        address = f"http://localhost:{port}/face.jpg"
        page.get_by_label("Image URL").fill(address)
        page.get_by_role("button", name="Analyze URL").click()
        expect(rows(page, address)).to_have_count(1)
    assert top_labels(page, address) == ["happy"]
    assert canvas_size(canvas_of(page, address)) == (512, 512)


def test_camera_snapshot_of_the_fake_camera(front_end_service, context):
    context.grant_permissions(["camera"])
    page = open_page(context, front_end_service)
    page.get_by_role("button", name="Use camera").click()
    expect(page.get_by_label("Camera preview")).to_be_visible()
    page.get_by_role("button", name="Take snapshot").click()
    expect(rows(page, "camera snapshot")).to_have_count(1)
    assert top_labels(page, "camera snapshot") == ["happy"]
    assert canvas_size(canvas_of(page, "camera snapshot")) == (512, 512)
    page.screenshot(path=ARTIFACTS / "web-camera.png", full_page=True)
    page.get_by_role("button", name="Stop camera").click()
    expect(page.get_by_label("Camera preview")).to_be_hidden()


def test_camera_denied_says_so(front_end_service, context):
    page = open_page(context, front_end_service)  # no camera permission granted: the browser refuses
    page.get_by_role("button", name="Use camera").click()
    expect(page.get_by_role("alert")).to_contain_text("The browser denied access to the camera")
    expect(page.get_by_label("Camera preview")).to_be_hidden()


def test_detectors_come_from_the_service(front_end_service, context, emotion_grid):
    models = httpx.post(f"{front_end_service}/models", timeout=30).json()
    page = open_page(context, front_end_service)
    detector = page.get_by_label("Detector")
    expect(detector.locator("option")).to_have_text(models["detectors"])
    expect(detector).to_have_value(models["default_detector"])
    detector.select_option("haar")
    page.get_by_label("Photos").set_input_files(photo("grid.jpg", jpeg(emotion_grid), "image/jpeg"))
    expect(page.get_by_role("article", name="Result for grid.jpg")).to_contain_text("detector haar")
    expect(rows(page, "grid.jpg")).to_have_count(4)
    assert top_labels(page, "grid.jpg") == READING_ORDER


def test_classify_tab_names_what_the_service_has(front_end_service, context):
    models = httpx.post(f"{front_end_service}/models", timeout=30).json()
    classifiers = [m["name"] for m in models["models"] if m["task"] == "image_classifier"]
    page = open_page(context, front_end_service)
    page.get_by_role("tab", name="Classify").click()
    if classifiers:
        expect(page.get_by_label("Classifier").locator("option")).to_have_text(classifiers)
    else:
        expect(page.get_by_text("This service has no whole-image classifier.")).to_be_visible()
        expect(page.get_by_label("Classifier")).to_be_disabled()
    page.get_by_role("tab", name="Classify").press("ArrowLeft")
    expect(page.get_by_role("tab", name="Faces")).to_be_focused()
    expect(page.get_by_label("Photos")).to_be_visible()


def test_correct_an_emotion_then_the_feedback_tab_counts_it_and_its_csv_holds_it(front_end_service, context,
                                                                                 emotion_grid, gender_age_built):
    """A face's emotion corrected from its row (labels from /models), the confirmation, the Feedback tab's summary
    counting it, and the CSV downloaded through the page holding it with the model's version."""
    labels = model_labels(front_end_service, "emotion")
    before = feedback_summary(front_end_service)
    page = open_page(context, front_end_service)
    with page.expect_response("**/analyze") as answered:
        page.get_by_label("Photos").set_input_files(photo("grid.jpg", jpeg(emotion_grid), "image/jpeg"))
    analysis = answered.value.json()
    expect(rows(page, "grid.jpg")).to_have_count(4)

    # Face 2 of the table (top right); its place in the service's answer is what /feedback is told.
    said = READING_ORDER[1]
    index = [face["emotion"]["label"] for face in analysis["faces"]].index(said)
    face = analysis["faces"][index]
    right = next(label for label in labels if label != said)
    row = rows(page, "grid.jpg").nth(1)
    row.get_by_role("button", name="Correct face 2").click()
    dialog = row.get_by_role("dialog", name="Correct face 2 of grid.jpg")
    expect(dialog.get_by_label("Answer to correct")).to_be_focused()
    expect(dialog.get_by_label("Answer to correct").locator("option")).to_have_text(
        [f"Emotion (said {said})", f"Gender (said {face['gender']['label']})", f"Age (said {face['age']:.1f})",
         "Identity (said unknown)"])  # the page asks analyze to identify; nobody is enrolled
    expect(dialog.get_by_label("Right answer").locator("option")).to_have_text(
        ["Choose…", *[label for label in labels if label != said]])
    dialog.get_by_label("Right answer").select_option(right)
    dialog.get_by_label("Comment (optional)").fill("the eyebrows say otherwise")
    page.screenshot(path=ARTIFACTS / "web-feedback-correct.png", full_page=True)
    dialog.get_by_role("button", name="Send correction").click()

    expect(row.get_by_role("status")).to_have_text(
        f"Correction sent: emotion {said} → {right} (“the eyebrows say otherwise”)")
    expect(dialog).to_be_hidden()
    expect(row.get_by_role("button", name="Correct face 2")).to_be_focused()
    page.screenshot(path=ARTIFACTS / "web-feedback-sent.png", full_page=True)
    after = feedback_summary(front_end_service)
    emotions_before, pairs_before = before.get("emotion", (0, {}))
    assert after["emotion"][0] == emotions_before + 1
    assert after["emotion"][1][(said, right)] == pairs_before.get((said, right), 0) + 1

    page.get_by_role("tab", name="Feedback").click()
    emotion = summary_row(page, "emotion")
    expect(emotion.locator("td").nth(0)).to_have_text(str(after["emotion"][0]))
    expect(emotion.locator("td").nth(1)).to_contain_text(f"{said} → {right} ({after['emotion'][1][(said, right)]}×)")
    expect(page.get_by_text(re.compile(r"^\d+ corrections? in all\.$"))).to_have_text(
        f"{after['total']} correction{'s' if after['total'] != 1 else ''} in all.")
    page.screenshot(path=ARTIFACTS / "web-feedback-tab.png", full_page=True)

    name, exported = downloaded_csv(page)
    assert name == "faceserve-feedback.csv"
    (mine,) = [r for r in exported if r["request_id"] == analysis["request_id"]]
    assert (mine["face_index"], mine["field"], mine["model_said"], mine["correct"], mine["comment"]) == (
        str(index), "emotion", said, right, "the eyebrows say otherwise")
    assert f"{mine['model_name']}:{mine['model_version']}" == analysis["models"]["emotion"] == "emotion:1"
    expect(page.get_by_role("status")).to_have_text(re.compile(r"^Saved faceserve-feedback\.csv \(\d+ bytes\)\.$"))


def test_a_refused_correction_shows_the_service_message_and_is_not_counted(front_end_service, context,
                                                                          gender_age_built):
    """With the keyboard: open the dialog, correct the age to one the service refuses; its message is shown and
    nothing is stored; Escape closes the dialog and gives the focus back."""
    page = open_page(context, front_end_service)
    page.get_by_label("Photos").set_input_files(photo("astronaut.jpg", jpeg(photos.astronaut()), "image/jpeg"))
    row = rows(page, "astronaut.jpg").first
    expect(row).to_contain_text("happy")
    before = feedback_summary(front_end_service)

    toggle = row.get_by_role("button", name="Correct face 1")
    toggle.focus()
    page.keyboard.press("Enter")
    dialog = row.get_by_role("dialog", name="Correct face 1 of astronaut.jpg")
    expect(dialog.get_by_label("Answer to correct")).to_be_focused()
    dialog.get_by_label("Answer to correct").select_option("age")
    expect(dialog.get_by_label("Right age (years)")).to_have_attribute("type", "number")
    dialog.get_by_label("Right age (years)").fill("200")
    dialog.get_by_label("Right age (years)").press("Enter")
    alert = dialog.get_by_role("alert")
    expect(alert).to_have_text("The correction was not stored: age must be a number of years from 0 to 150, got '200'")
    page.screenshot(path=ARTIFACTS / "web-feedback-refused.png", full_page=True)
    assert feedback_summary(front_end_service) == before
    expect(row.get_by_role("status")).to_have_count(0)  # nothing claims it was sent

    dialog.get_by_label("Right age (years)").press("Escape")
    expect(dialog).to_be_hidden()
    expect(toggle).to_be_focused()


def test_an_answer_not_remembered_offers_no_correction(front_end_service, context):
    """When the service could not remember an answer (its store unreachable: `request_id` null), the page says so
    instead of offering corrections the service would refuse."""
    def forgotten(route):
        answer = route.fetch().json()
        route.fulfill(json={**answer, "request_id": None})

    context.route("**/analyze", forgotten)
    page = open_page(context, front_end_service)
    page.get_by_label("Photos").set_input_files(photo("astronaut.jpg", jpeg(photos.astronaut()), "image/jpeg"))
    expect(rows(page, "astronaut.jpg")).to_have_count(1)
    expect(page.get_by_role("article", name="Result for astronaut.jpg")).to_contain_text(
        "corrections off: the service did not remember this answer")
    expect(page.get_by_role("columnheader", name="Feedback")).to_have_count(0)
    expect(page.get_by_role("button", name=re.compile("^Correct"))).to_have_count(0)


def test_numbers_are_sent_as_the_service_remembers_them(front_end_service, context):
    """`model_said` for a number is the service's `f"{value:.1f}"`, exact ties (x.25, x.75) rounded to even as
    Python does, which JavaScript's toFixed does not."""
    page = open_page(context, front_end_service)
    values = [0.25, 0.75, 1.25, 2.5, 26.45, 37.15, 24.016101837158203, 23.462814331054688, 100.05, 0.05, 26.0, 27.75]
    sent = page.evaluate("async (values) => { const { said } = await import('/web/feedback.js');"
                         " return values.map(said); }", values)
    assert sent == [f"{value:.1f}" for value in values]


def test_classify_top_label_corrected(front_end_service, context):
    models = httpx.post(f"{front_end_service}/models", timeout=30).json()
    classifiers = [m for m in models["models"] if m["task"] == "image_classifier"]
    if not classifiers:
        pytest.skip("the repository has no whole-image classifier")
    labels = classifiers[0]["labels"]
    page = open_page(context, front_end_service)
    page.get_by_role("tab", name="Classify").click()
    with page.expect_response("**/classify") as answered:
        page.get_by_label("Photo", exact=True).set_input_files(
            photo("astronaut.jpg", jpeg(photos.astronaut()), "image/jpeg"))
    answer = answered.value.json()
    said = answer["top_k"][0]["label"]
    right = next(label for label in labels if label != said)
    page.get_by_role("button", name="Correct the top label of astronaut.jpg").click()
    dialog = page.get_by_role("dialog", name="Correct the top label of astronaut.jpg")
    expect(dialog.get_by_label("Right answer")).to_be_focused()  # one field: straight to the answer
    expect(dialog.get_by_label("Right answer").locator("option")).to_have_text(
        ["Choose…", *[label for label in labels if label != said]])
    dialog.get_by_label("Right answer").select_option(right)
    dialog.get_by_role("button", name="Send correction").click()
    expect(page.get_by_role("status")).to_have_text(f"Correction sent: label {said} → {right}")

    page.get_by_role("tab", name="Feedback").click()
    total, pairs = feedback_summary(front_end_service)["label"]
    expect(summary_row(page, "label").locator("td").nth(0)).to_have_text(str(total))
    expect(summary_row(page, "label").locator("td").nth(1)).to_contain_text(
        f"{said} → {right} ({pairs[(said, right)]}×)")
    _, exported = downloaded_csv(page)
    (mine,) = [r for r in exported if r["request_id"] == answer["request_id"]]
    assert (mine["face_index"], mine["field"], mine["model_said"], mine["correct"]) == ("", "label", said, right)
    assert f"{mine['model_name']}:{mine['model_version']}" == f"{answer['model']}:{classifiers[0]['version']}"


def test_phone_width(front_end_service, browser):
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True)
    try:
        page = open_page(context, front_end_service)
        page.get_by_label("Photos").set_input_files(photo("astronaut.jpg", jpeg(photos.astronaut()), "image/jpeg"))
        expect(rows(page, "astronaut.jpg")).to_have_count(1)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390  # nothing wider than the phone
        tabs = page.get_by_role("tab")
        expect(tabs).to_have_text(["Faces", "Classify", "Identities", "Feedback"])
        assert all(tab.bounding_box()["x"] + tab.bounding_box()["width"] <= 390 for tab in tabs.all())  # no tab cut off
        assert canvas_of(page, "astronaut.jpg").bounding_box()["width"] <= 390
        page.screenshot(path=ARTIFACTS / "web-phone.png", full_page=True)
    finally:
        context.close()


def csp_violations(page) -> list[str]:
    """The Content-Security-Policy refusals Chromium reports on `page` from now on."""
    refused = []
    page.on("console", lambda message: refused.append(message.text)
            if "Content Security Policy" in message.text else None)
    return refused


def test_swagger_moved_to_docs(front_end_service, context):
    page = context.new_page()
    refused = csp_violations(page)
    answer = page.goto(f"{front_end_service}/docs")
    expect(page.get_by_text("/analyze", exact=True).first).to_be_visible()
    assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
    # Only what would be fetched from another host is refused (the badges in BentoML's API description).
    assert [r for r in refused if not r.startswith("Loading the image 'https://")] == []


def test_the_page_carries_its_security_headers_and_needs_nothing_they_forbid(front_end_service, context):
    page = context.new_page()
    refused = csp_violations(page)
    answer = page.goto(front_end_service)
    expect(page.locator("body[data-ready]")).to_be_attached()
    headers = answer.headers
    assert headers["content-security-policy"].startswith("default-src 'self'")
    assert "frame-ancestors 'none'" in headers["content-security-policy"] and "unsafe" not in headers[
        "content-security-policy"]
    assert (headers["x-frame-options"], headers["x-content-type-options"], headers["referrer-policy"]) == (
        "DENY", "nosniff", "no-referrer")
    page.get_by_label("Photos").set_input_files(photo("astronaut.jpg", jpeg(photos.astronaut()), "image/jpeg"))
    expect(rows(page, "astronaut.jpg")).to_have_count(1)
    page.get_by_role("tab", name="Feedback").click()
    expect(page.get_by_role("table", name="Corrections by field")).to_be_visible()
    assert refused == []


@pytest.fixture(scope="module")
def keyed_service(repository, tmp_path_factory):
    keys_file = tmp_path_factory.mktemp("web-keys") / "keys.txt"
    keys_file.write_text(f"web-analyze analyze sha256:{hashlib.sha256(ANALYZE_KEY.encode()).hexdigest()}\n")
    with serve({"FACESERVE_WORKERS": "1", "FACESERVE_API_KEYS": KEY, "FACESERVE_API_KEYS_FILE": str(keys_file)}) as url:
        yield url


def test_a_key_without_a_scope_gets_the_services_message_on_the_page(keyed_service, context):
    page = open_page(context, keyed_service, ready=False)
    page.get_by_label("API key", exact=True).fill(ANALYZE_KEY)
    page.get_by_role("button", name="Use this key").click()
    expect(page.locator("body[data-ready]")).to_be_attached()
    page.get_by_role("tab", name="Feedback").click()
    expect(page.locator("#feedback-error")).to_have_text(
        "The summary of corrections could not be read: /feedback/summary needs the `admin` scope; "
        "the key `web-analyze` has analyze")
    expect(page.get_by_role("form", name="API key needed")).to_be_hidden()  # a 403 is no reason to ask again


def test_api_key_asked_for_and_kept_for_the_tab_only(keyed_service, context):
    page = open_page(context, keyed_service, ready=False)
    key_form = page.get_by_role("form", name="API key needed")
    expect(key_form).to_contain_text("This service asks for an API key.")
    page.screenshot(path=ARTIFACTS / "web-key-prompt.png", full_page=True)
    page.get_by_label("API key", exact=True).fill("a-wrong-key")
    page.get_by_role("button", name="Use this key").click()
    expect(key_form).to_contain_text("The service refused the key: the API key is not valid.")
    page.get_by_label("API key", exact=True).fill(KEY)
    page.get_by_role("button", name="Use this key").click()
    expect(key_form).to_be_hidden()
    expect(page.locator("body[data-ready]")).to_be_attached()
    expect(page.get_by_label("Image URL")).to_be_hidden()  # this service fetches no URL

    with page.expect_response("**/analyze") as answered:
        page.get_by_label("Photos").set_input_files(photo("astronaut.jpg", jpeg(photos.astronaut()), "image/jpeg"))
    expect(rows(page, "astronaut.jpg")).to_have_count(1)
    assert page.evaluate("[sessionStorage.length, localStorage.length]") == [1, 0]
    # Corrections and the CSV go with the key too.
    rows(page, "astronaut.jpg").first.get_by_role("button", name="Correct face 1").click()
    dialog = page.get_by_role("dialog", name="Correct face 1 of astronaut.jpg")
    said = "happy"
    right = next(label for label in model_labels(keyed_service, "emotion", {"X-API-Key": KEY}) if label != said)
    dialog.get_by_label("Right answer").select_option(right)
    page.evaluate("sessionStorage.clear()")  # the key forgotten while the dialog is open: asked for again
    dialog.get_by_role("button", name="Send correction").click()
    expect(key_form).to_be_visible()  # the dialog steps aside: a modal dialog would leave the prompt unreachable
    expect(dialog).to_be_hidden()
    expect(page.get_by_label("API key", exact=True)).to_be_focused()
    page.get_by_label("API key", exact=True).fill(KEY)
    page.get_by_role("button", name="Use this key").click()
    expect(rows(page, "astronaut.jpg").first.get_by_role("status")).to_have_text(
        f"Correction sent: emotion {said} → {right}")
    page.get_by_role("tab", name="Feedback").click()
    expect(summary_row(page, "emotion").locator("td").nth(1)).to_contain_text(f"{said} → {right}")
    _, exported = downloaded_csv(page)
    assert [(r["face_index"], r["field"], r["model_said"], r["correct"]) for r in exported
            if r["request_id"] == answered.value.json()["request_id"]] == [("0", "emotion", said, right)]
    # Another tab is another session: asked again.
    expect(open_page(context, keyed_service, ready=False).get_by_role("form", name="API key needed")).to_be_visible()
    # The API itself still asks for the key; only the page's files are open.
    assert httpx.post(f"{keyed_service}/models", timeout=30).status_code == 401
    assert httpx.get(f"{keyed_service}/web/app.js", timeout=30).status_code == 200
