"""The app as the app benchmarks see it: started on a free port (or found at a URL), spoken to over
Gradio's HTTP API, with the models a visitor gets by default and once its runtime is attached.

`GradioHttp` is a thin client of Gradio's documented HTTP API (upload the photos, POST
/gradio_api/call/<endpoint> in the client's own session, read the result's event stream), as a
remote user's code calls it:
the load test runs its clients on the app's own two cores, where gradio_client's threads and
polling would take CPU that a deployment's remote clients never take from the server.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_WAIT_S = 900  # first start: every model exported to ONNX in the background, 10-20 s each


@dataclass
class RunningApp:
    url: str
    pid: Optional[int]  # None for an app the benchmark did not start

    def cpu_seconds(self) -> Optional[float]:
        """User + system CPU seconds of the app's process so far (Linux /proc; None when unknown)."""
        if self.pid is None:
            return None
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def app_server(url: Optional[str], zoo: Optional[Path], args: Sequence[str] = (),
               timeout: float = 600) -> Iterator[RunningApp]:
    """`url` as is, or a fresh `python app.py [args]` on a free port (stopped afterwards)."""
    if url:
        yield RunningApp(url, None)
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, str(ROOT / "app.py"), "--port", str(port), *(["--zoo", str(zoo)] if zoo else []), *args]
    log = tempfile.NamedTemporaryFile("w+", prefix="facescope-app-", suffix=".log", delete=False)
    process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"app.py did not start (log: {log.name}):\n{Path(log.name).read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(url, timeout=5):
                    break
            except OSError:
                time.sleep(1)
        yield RunningApp(url, process.pid)
    finally:
        process.terminate()
        process.wait(timeout=30)


class GradioHttp:
    """One client of the app's Gradio HTTP API (not thread-safe: one per thread)."""

    def __init__(self, url: str, timeout: float = 300):
        import httpx

        self.http = httpx.Client(base_url=url, timeout=timeout)
        self.session = uuid.uuid4().hex  # one session per client, as a browser tab keeps one

    def upload(self, path: Path) -> dict:
        """The file as the app's inputs take it (uploaded first, as every client does)."""
        with open(path, "rb") as handle:
            response = self.http.post("/gradio_api/upload", files={"files": (Path(path).name, handle)})
        response.raise_for_status()
        return {"path": response.json()[0], "meta": {"_type": "gradio.FileData"}}

    def call(self, endpoint: str, *data) -> list:
        """The endpoint's outputs; RuntimeError with the app's message when it reports an error."""
        response = self.http.post(f"/gradio_api/call/{endpoint}", json={"data": list(data), "session_hash": self.session})
        response.raise_for_status()
        event = ""
        with self.http.stream("GET", f"/gradio_api/call/{endpoint}/{response.json()['event_id']}") as stream:
            for line in stream.iter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:") and event in ("complete", "error"):
                    payload = json.loads(line[5:]) if line[5:].strip() not in ("", "null") else None
                    if event == "error":
                        raise RuntimeError(f"/{endpoint}: {payload}")
                    return payload
        raise RuntimeError(f"/{endpoint}: the result stream ended without a result")

    def verify(self, first: Path, second: Path, models: Sequence[str]) -> dict:
        return self.call("verify", self.upload(first), self.upload(second), 1, 1, list(models))[0]

    def close(self) -> None:
        self.http.close()


def zoo_models(client: GradioHttp, peers: bool = False) -> List[str]:
    """The app's usable models; without `peers`, its default selection (the zoo, peers left out)."""
    table = client.call("zoo_list")[0]
    headers = table["headers"]
    rows = [dict(zip(headers, row)) for row in table["data"] if row[headers.index("parameters (M)")] != "not loaded"]
    return [row["model"] for row in rows if peers or row["method"] != "peer"]


def wait_for_runtime(client: GradioHttp, photos: Sequence[Path], models: Sequence[str],
                     timeout: float = RUNTIME_WAIT_S) -> List[str]:
    """Verify `photos` until no model is still served by torch while its ONNX export is made in the
    background (the app's default runtime); returns each model's runtime. A model whose export
    failed stays on torch: after `timeout` the benchmark goes on with what serves it."""
    deadline = time.monotonic() + timeout
    while True:
        served = [m["runtime"] for m in client.verify(photos[0], photos[1], models)["models"]]
        if not any(r.startswith("torch") for r in served) or time.monotonic() > deadline:
            return served
        time.sleep(5)
