"""Writing analyses out: HTML (interactive), JSON (the plain data) and PNG (static).

PNG export is plotly's, through kaleido >= 1, which drives a Chrome/Chromium it finds on
the machine ($BROWSER_PATH, else `chromium`, `google-chrome`, ... on PATH). Offline that
means Debian's `chromium` package: `apt-get install -y chromium` and `pip install
"kaleido>=1"`; kaleido's own `get_chrome` downloads a browser and cannot work offline.
Each export starts a browser (seconds); `image_server()` keeps one running for a batch.
"""
from __future__ import annotations

import dataclasses
import json
import os
import warnings
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple, Union

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio

PNG_INSTALL_HINT = 'PNG export needs `pip install "kaleido>=1"` and a Chromium (`apt-get install -y chromium`)'


def png_export_status() -> Tuple[bool, str]:
    """(available, why not / which browser)."""
    try:
        version = metadata.version("kaleido")
    except metadata.PackageNotFoundError:
        return False, f"kaleido is not installed; {PNG_INSTALL_HINT}"
    if int(version.split(".")[0]) < 1:
        return False, f"kaleido {version} is too old for plotly {metadata.version('plotly')}; {PNG_INSTALL_HINT}"
    from choreographer.browsers.chromium import Chromium

    browser = Chromium.find_browser(skip_local=False)
    if browser is None or not os.access(browser, os.X_OK):
        return False, f"no Chrome/Chromium found (BROWSER_PATH={os.environ.get('BROWSER_PATH')}); {PNG_INSTALL_HINT}"
    return True, browser


@contextmanager
def image_server() -> Iterator[None]:
    """One browser for every PNG written inside the block (instead of one per export call)."""
    import kaleido

    kaleido.start_sync_server(silence_warnings=True)
    try:
        yield
    finally:
        kaleido.stop_sync_server(silence_warnings=True)


def write_pngs(figures: Mapping[Path, go.Figure]) -> List[Path]:
    """Export several figures to PNG at their layout size, in one batch."""
    available, reason = png_export_status()
    if not available:
        raise RuntimeError(reason)
    paths = list(figures)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The kopts argument is ignored if using a server")
        pio.write_images(list(figures.values()), paths, format="png",
                         width=[f.layout.width or 900 for f in figures.values()],
                         height=[f.layout.height or 600 for f in figures.values()])
    return paths


def to_jsonable(value: Any) -> Any:
    """Plain JSON values from analysis data: dataclasses (minus their `json_skip` image
    fields), numpy arrays and scalars, NaN as null."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        skip = set(getattr(value, "json_skip", ()))
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value) if f.name not in skip}
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def save(out_dir: Union[str, Path], name: str, figure: go.Figure, data: Any = None,
         png: Optional[bool] = None) -> Dict[str, Path]:
    """Write `<name>.html`, `<name>.json` (the data, when given) and `<name>.png`.

    `png=None` writes the PNG when export is available and skips it otherwise; True requires it.
    """
    return save_all(out_dir, {name: (figure, data)}, png)[name]


def save_all(out_dir: Union[str, Path], items: Mapping[str, Tuple[go.Figure, Any]],
             png: Optional[bool] = None) -> Dict[str, Dict[str, Path]]:
    """`save` for several figures, their PNGs exported in one batch."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: Dict[str, Dict[str, Path]] = {}
    for name, (figure, data) in items.items():
        files = {"html": out_dir / f"{name}.html"}
        figure.write_html(files["html"], include_plotlyjs="directory")
        if data is not None:
            files["json"] = out_dir / f"{name}.json"
            files["json"].write_text(json.dumps(to_jsonable(data), allow_nan=False) + "\n")
        written[name] = files
    if png is None:
        png = png_export_status()[0]
    if png:
        pngs = write_pngs({out_dir / f"{name}.png": figure for name, (figure, _) in items.items()})
        for name, path in zip(items, pngs):
            written[name]["png"] = path
    return written
