"""Hostile files shared by the CLI and app tests: broken photos made from real LFW photos, and
checkpoint folders that claim to be something they are not."""
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import zoo


def write_hostile_files(folder: Path, lfw: Path) -> Path:
    """The hostile images, and the upright photo they derive from (its crop is the reference)."""
    photo = lfw / "Zico" / "Zico_0001.jpg"
    face = Image.open(photo).convert("RGB")
    (folder / "not_image.jpg").write_bytes(b"name,score\nzico,0.93\n" * 50)
    data = photo.read_bytes()
    (folder / "truncated.jpg").write_bytes(data[:len(data) // 2])
    (folder / "empty.jpg").write_bytes(b"")
    # 10,000 x 10,000: above PIL's decompression-bomb warning (89 Mpx), below its refusal (179 Mpx).
    face.convert("L").resize((10_000, 10_000), Image.BILINEAR).save(folder / "huge.jpg", quality=80)
    Image.new("RGB", (400, 300), (120, 160, 200)).save(folder / "noface.jpg")
    twenty_faces(lfw, folder / "twenty.jpg")
    face.convert("L").save(folder / "gray.png")
    rgba = face.convert("RGBA")
    rgba.putalpha(200)
    rgba.save(folder / "rgba.png")
    face.convert("CMYK").save(folder / "cmyk.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display": pixels stored sideways, as phones do
    face.transpose(Image.Transpose.ROTATE_90).save(folder / "exif.jpg", exif=exif)
    return photo


def twenty_faces(lfw: Path, path: Path) -> list:
    """A 5 x 4 grid of the first photos of 20 LFW people (250 px tiles), saved to `path`;
    returns the photos in tile order (row by row)."""
    photos = [sorted(person.glob("*.jpg"))[0] for person in sorted(p for p in lfw.iterdir() if p.is_dir())[:20]]
    grid = Image.new("RGB", (5 * 250, 4 * 250))
    for k, photo in enumerate(photos):
        grid.paste(Image.open(photo).convert("RGB"), ((k % 5) * 250, (k // 5) * 250))
    grid.save(path, quality=92)
    return photos


def break_checkpoints(tiny_model: Path, folder: Path) -> dict:
    """Checkpoint folders that claim to be something they are not, and what load must say."""
    wrong_arch = folder / "wrong-arch"  # config: ir18; weights: an SRANet
    torch.manual_seed(0)
    zoo.save(zoo.build("sranet-ir18", width=0.25), wrong_arch)
    (wrong_arch / "config.json").write_text((tiny_model / "config.json").read_text())
    wrong_width = folder / "wrong-width"  # config: ir18 x0.5; weights: ir18 x0.25 (same name)
    zoo.save(zoo.build("ir18", width=0.5), wrong_width)
    (wrong_width / "model.safetensors").write_bytes((tiny_model / "model.safetensors").read_bytes())
    truncated = folder / "truncated"
    zoo.save(zoo.load(tiny_model), truncated)
    weights = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(weights[:len(weights) // 2])
    garbage = folder / "garbage"
    zoo.save(zoo.load(tiny_model), garbage)
    (garbage / "model.safetensors").write_bytes(np.random.default_rng(0).bytes(4096))
    return {wrong_arch: "holds weights of architecture 'sranet-ir18', not 'ir18'",
            wrong_width: "of the wrong shape", truncated: "corrupted or truncated",
            garbage: "corrupted or truncated"}
