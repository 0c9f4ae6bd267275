"""Decoding: limits hold for every frame of every multi-frame format and for the final array,
frames are counted from the container without decoding them, and colour conversion makes one
full-size copy. Costs are shown by counting Pillow's decoders and tracing allocations, never by a clock."""

from __future__ import annotations

import io
import tracemalloc

import numpy as np
import pytest
from PIL import Image, ImageOps, TiffImagePlugin

from faceserve.dev import photos
from faceserve.errors import InvalidImage, LimitExceeded
from faceserve.pipeline import imaging
from tests import hostile_corpus as corpus
from tests.support import jpeg

LIMITS = imaging.DecodeLimits()  # 40 Mpixel, 20000 a side, 100 frames


@pytest.fixture
def decoders(monkeypatch) -> list[str]:
    """The name of every decoder Pillow creates: one per tile of each frame it decodes."""
    made: list[str] = []
    create = Image._getdecoder

    def counting(mode, decoder_name, args, extra=()):
        made.append(decoder_name)
        return create(mode, decoder_name, args, extra)

    monkeypatch.setattr(Image, "_getdecoder", counting)
    return made


def refused(data: bytes, code: str, limits: imaging.DecodeLimits = LIMITS) -> str:
    with pytest.raises(LimitExceeded) as caught:
        imaging.decode(data, limits)
    assert caught.value.code == code and caught.value.status == 422
    return caught.value.message


# ---- GIF: frames may lie outside the logical screen, and Pillow's seek composites every frame

def test_gif_frame_outside_a_tiny_screen_is_refused_before_decoding(decoders):
    data = corpus.gif_frame_outside_screen()
    assert len(data) == 50
    assert "8000x8000" in refused(data, "image_too_large")
    assert decoders == []


def test_gif_first_frame_is_decoded_on_its_own_canvas():
    """A later frame within the limits but outside the screen does not grow the first frame's canvas."""
    data = corpus.gif((10, 10), [(0, 0, 1, 1), (20, 20, 5, 5)])
    assert imaging.decode(data).shape == (10, 10, 3)


def test_gif_frames_are_counted_without_decoding_them(decoders):
    """2000x2000 canvas, 100 one-pixel frames: only the first frame is decoded."""
    pixels = imaging.decode(corpus.gif_canvas_of_tiny_frames(2000, 100))
    assert pixels.shape == (2000, 2000, 3)
    assert decoders == ["gif"]


def test_gif_past_the_frame_limit_decodes_nothing(decoders):
    refused(corpus.gif_canvas_of_tiny_frames(2000, 101), "too_many_frames")
    assert decoders == []


# ---- APNG: the frame count is in acTL, each frame's extent in its fcTL

def test_apng_frames_are_counted_without_decoding_them(decoders):
    assert imaging.decode(corpus.apng(100)).shape == (1, 1, 3)
    assert decoders == ["zip"]


def test_apng_past_the_frame_limit_decodes_nothing(decoders):
    refused(corpus.apng(101), "too_many_frames")
    assert decoders == []


def test_apng_frame_past_the_limit_is_refused():
    assert "8000x8000" in refused(corpus.apng_frame_outside_canvas(), "image_too_large")


def test_apng_canvas_past_the_limit_is_refused(decoders):
    assert "30000x30000" in refused(corpus.apng_huge_canvas(), "image_too_large")
    assert decoders == []


# ---- WebP: libwebp allocates the whole canvas when the file is opened

def test_webp_canvas_is_checked_before_libwebp_allocates_it(monkeypatch):
    from PIL import WebPImagePlugin

    opened = []
    anim_decoder = WebPImagePlugin._webp.WebPAnimDecoder
    monkeypatch.setattr(WebPImagePlugin._webp, "WebPAnimDecoder", lambda data: opened.append(1) or anim_decoder(data))
    assert "16384x16384" in refused(corpus.webp_huge_canvas(), "image_too_large")
    assert opened == []
    assert imaging.decode(corpus.animated_webp(3)).shape == (1, 1, 3) and opened == [1]


def test_animated_webp_past_the_frame_limit():
    refused(corpus.animated_webp(101), "too_many_frames")


# ---- TIFF and MPO: every page has its own size

def test_tiff_later_page_past_the_limit_is_refused(decoders):
    assert "30000x30000" in refused(corpus.tiff([(4, 4), (8, 8), (30_000, 30_000)]), "image_too_large")
    assert decoders == []


def test_tiff_past_the_page_limit():
    refused(corpus.tiff([(4, 4)] * 101), "too_many_frames")
    assert imaging.decode(corpus.tiff([(4, 4)] * 100)).shape == (4, 4, 3)


def test_mpo_later_image_past_the_limit_is_refused(decoders):
    assert "30000x30000" in refused(corpus.mpo_huge_second_image(), "image_too_large")
    assert decoders == []


def test_mpo_past_the_image_limit():
    refused(corpus.mpo(101), "too_many_frames")


@pytest.mark.parametrize("data, colour", [
    (corpus.gif((1, 1), [(0, 0, 1, 1, 1), (0, 0, 1, 1, 0)]), (255, 255, 255)),
    (corpus.apng(3, (2, 2)), (0, 0, 0)),
    (corpus.animated_webp(3, (2, 2)), (0, 0, 255)),
    (corpus.mpo(3), (255, 0, 0)),
], ids=["gif", "apng", "webp", "mpo"])
def test_only_the_first_frame_is_returned(data, colour):
    pixels = imaging.decode(data)
    assert np.abs(pixels.reshape(-1, 3).astype(int) - colour).max() <= 3


def test_multi_page_tiff_gives_its_first_page():
    first = Image.new("RGB", (6, 4), (10, 200, 30))
    buffer = io.BytesIO()
    first.save(buffer, "TIFF", save_all=True, append_images=[Image.new("RGB", (50, 50), (255, 255, 255))])
    pixels = imaging.decode(buffer.getvalue())
    assert pixels.shape == (4, 6, 3) and (pixels == (10, 200, 30)).all()


# ---- what Pillow raises, and what it must not hide

def test_probe_reads_the_size_and_decodes_nothing(decoders):
    photo = jpeg(np.zeros((30, 40, 3), np.uint8))
    decoders.clear()
    assert imaging.probe(corpus.gif_canvas_of_tiny_frames(300, 5), LIMITS) == (300, 300)
    assert imaging.probe(photo, LIMITS) == (40, 30)
    assert decoders == []
    with pytest.raises(LimitExceeded):
        imaging.probe(corpus.gif_frame_outside_screen(), LIMITS)


def test_corrupt_later_page_is_an_invalid_image():
    data = bytearray(corpus.tiff([(4, 4), (4, 4)]))
    second_ifd = len(data) - (2 + 12 * 9 + 4)
    data[second_ifd + 2:second_ifd + 4] = b"\xff\x00"  # its ImageWidth (256) becomes tag 255: Pillow raises TypeError
    with pytest.raises(InvalidImage, match="frames"):
        imaging.decode(bytes(data))


def test_a_bug_while_reading_frames_is_not_reported_as_a_bad_image(monkeypatch):
    def broken(self, frame):
        raise ZeroDivisionError("a bug, not a bad file")

    monkeypatch.setattr(TiffImagePlugin.TiffImageFile, "seek", broken)
    with pytest.raises(ZeroDivisionError):
        imaging.decode(corpus.tiff([(4, 4), (4, 4)]))


def test_jpeg_fast_path_result_is_checked_against_the_limits(monkeypatch):
    """OpenCV decodes without seeing our limits: its array is checked too."""
    monkeypatch.setattr(imaging.cv2, "imdecode", lambda *args: np.zeros((2000, 1000, 3), np.uint8))
    message = refused(jpeg(np.zeros((10, 10, 3), np.uint8)), "image_too_large",
                      imaging.DecodeLimits(max_pixels=1_000_000))
    assert "1000x2000" in message


def test_premultiplied_alpha_tiff_is_decoded():
    """TIFF grey with associated alpha opens as mode La, which Pillow cannot convert to RGB directly."""
    data = corpus.tiff([(2, 2)], samples=2)
    assert Image.open(io.BytesIO(data)).mode == "La"
    assert (imaging.decode(data) == 255).all()  # transparent: composited on white


# ---- colour conversion: one full-size array, converted a strip at a time

@pytest.mark.parametrize("mode, fmt", [("RGB", "BMP"), ("RGBA", "PNG"), ("P", "PNG"), ("I;16", "PNG")])
def test_conversion_allocates_one_full_size_array(mode, fmt):
    rng = np.random.default_rng(0)
    source = Image.fromarray(rng.integers(0, 256, (1500, 2000, 4), np.uint8), "RGBA")
    image = {"RGB": source.convert("RGB"), "RGBA": source, "P": source.convert("RGB").quantize(64),
             "I;16": Image.fromarray(rng.integers(0, 65536, (1500, 2000), np.uint16))}[mode]
    buffer = io.BytesIO()
    image.save(buffer, fmt, **({"compress_level": 1} if fmt == "PNG" else {}))
    data = buffer.getvalue()
    tracemalloc.start()
    try:
        pixels = imaging.decode(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert pixels.shape == (1500, 2000, 3)
    assert peak < 1.3 * pixels.nbytes, (peak, pixels.nbytes)


# ---- EXIF, alpha and the JPEG fast path

def test_decode_applies_exif_and_drops_alpha():
    upright = np.zeros((40, 60, 3), np.uint8)
    upright[:, :10] = 255  # a white band on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated; viewers turn it 90 degrees clockwise
    stored = np.ascontiguousarray(np.rot90(upright, k=1))
    decoded = imaging.decode(jpeg(stored, quality=100, exif=exif))
    assert decoded.shape == (40, 60, 3) and decoded[:, :8].mean() > 200 and decoded[:, 20:].mean() < 30
    rgba = np.zeros((4, 4, 4), np.uint8)  # fully transparent -> white
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, "PNG")
    assert imaging.decode(buffer.getvalue()).min() == 255


@pytest.mark.parametrize("orientation", range(1, 9))
def test_jpeg_fast_path_gives_pillows_pixels(orientation):
    """Colour JPEGs are decoded by OpenCV: the same pixels and orientation as Pillow's own path."""
    photo = photos.grace_hopper()  # not square, so a wrong rotation changes the shape
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = jpeg(photo, exif=exif)
    fast = imaging.decode(data)
    image = Image.open(io.BytesIO(data))
    image.load()
    expected = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    assert fast.shape == expected.shape and np.array_equal(fast, expected)


def test_truncated_jpeg_is_refused_not_decoded_grey():
    data = jpeg(photos.grace_hopper())
    with pytest.raises(InvalidImage, match="corrupt or truncated"):
        imaging.decode(data[: len(data) // 2])
