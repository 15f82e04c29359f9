"""The app's photo cache: a new photo is read and its faces found while another request holds the
models (the app's model lock, held for seconds by an occlusion map or Grad-CAM), and a photo
brought again is not detected again."""
from __future__ import annotations

import threading

from app.service import Service


def test_a_new_photo_is_read_while_the_models_are_busy_and_read_once(data_root):
    service = Service(peers=False)
    photo_path = next((data_root / "lfw" / "images").glob("*/*.jpg"))
    models_taken, release = threading.Event(), threading.Event()

    def busy_models():
        with service._lock:
            models_taken.set()
            release.wait(60)

    holder = threading.Thread(target=busy_models)
    holder.start()
    try:
        assert models_taken.wait(30)
        read = {}
        reader = threading.Thread(target=lambda: read.setdefault("photo", service.photo(photo_path)))
        reader.start()
        reader.join(60)
        assert not reader.is_alive(), "reading a photo waited for the models' lock"
        assert len(read["photo"].faces) >= 1 and read["photo"].faces[0].crop.shape == (112, 112, 3)
    finally:
        release.set()
        holder.join()

    calls = []
    detect = service.photos.aligner.detect
    service.photos.aligner.detect = lambda *args, **kwargs: calls.append(1) or detect(*args, **kwargs)
    again = service.photo(photo_path)
    assert calls == [] and again.faces[0].crop is read["photo"].faces[0].crop
