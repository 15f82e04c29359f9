"""Image decoding: every mode becomes HxWx3 uint8 RGB; broken files name themselves."""
import io
import warnings

import numpy as np
import pytest
from PIL import Image

from zoo.data import ImageDecodeError, MissingFileError, decode_image, load_image


def _save(tmp_path, name, image, **kwargs):
    path = tmp_path / name
    image.save(path, **kwargs)
    return path


def test_real_lfw_jpeg(data_root):
    image = load_image(data_root / "lfw" / "images" / "Aaron_Eckhart" / "Aaron_Eckhart_0001.jpg")
    assert image.shape == (160, 160, 3) and image.dtype == np.uint8


@pytest.mark.fast
@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "P", "LA", "I;16"])
def test_modes_become_rgb(tmp_path, mode):
    rgb = Image.new("RGB", (20, 10), (200, 100, 50))
    image = rgb.convert(mode) if mode != "I;16" else Image.new("I;16", (20, 10), 4000)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    out = load_image(_save(tmp_path, f"x.{fmt.lower()}", image, format=fmt))
    assert out.shape == (10, 20, 3) and out.dtype == np.uint8
    if mode == "I;16":
        assert out.max() == 255  # rescaled, not clipped or zeroed


@pytest.mark.fast
def test_transparent_pixels_become_white(tmp_path):
    image = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert (load_image(_save(tmp_path, "t.png", image)) == 255).all()


@pytest.mark.fast
def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (30, 10), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 10, 10))  # white block at the left
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display needs a 90 degree clockwise turn
    out = load_image(_save(tmp_path, "o.jpg", image, exif=exif.tobytes(), quality=95))
    assert out.shape == (30, 10, 3)
    assert out[:10].mean() > 200 and out[20:].mean() < 50  # the white block is now at the top


def test_truncated_jpeg_names_the_file(tmp_path, data_root):
    data = (data_root / "lfw" / "images" / "Aaron_Eckhart" / "Aaron_Eckhart_0001.jpg").read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageDecodeError, match="cut.jpg"):
        load_image(path)


@pytest.mark.fast
def test_non_image_names_the_file(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("not an image")
    with pytest.raises(ImageDecodeError, match=r"notes\.jpg.*not an image"):
        load_image(path)


@pytest.mark.fast
def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(MissingFileError, match="nowhere.jpg"):
        load_image(tmp_path / "nowhere.jpg")


@pytest.mark.fast
def test_bytes_errors_use_the_given_source():
    with pytest.raises(ImageDecodeError, match=r"train\.rec \(record 7\)"):
        decode_image(b"\x00" * 10, source="train.rec (record 7)")


@pytest.mark.fast
def test_decode_bytes_roundtrip():
    buffer = io.BytesIO()
    Image.new("RGB", (5, 6), (1, 2, 3)).save(buffer, format="PNG")
    assert decode_image(buffer.getvalue())[0, 0].tolist() == [1, 2, 3]


@pytest.mark.fast
def test_large_scan_decodes_quietly_and_a_bomb_names_the_file(tmp_path):
    """100 MP (past PIL's warning) is data; 200 MP (past its hard limit) is refused by name."""
    large = _save(tmp_path, "scan.png", Image.new("L", (10_000, 10_000)), format="PNG")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL's DecompressionBombWarning would fail here
        assert load_image(large).shape == (10_000, 10_000, 3)
    bomb = _save(tmp_path, "bomb.png", Image.new("1", (15_000, 15_000)), format="PNG")
    with pytest.raises(ImageDecodeError, match=r"bomb.png.*unreadable image .*exceeds limit"):
        load_image(bomb)
