"""Start FaceScope's app: verify, blur and explain faces with every model of the zoo.

    python app.py                                  # http://127.0.0.1:7860, the embedded zoo
    python app.py --port 8000 --zoo my-checkpoints
    python app.py --runtime torch                  # embeddings by torch (default auto: onnxruntime on the CPU)

Runs offline on the CPU: no analytics, no share link, no font or script from a CDN; only
"Pull" in the Zoo tab goes to the network, to one hub the server chooses (--hub-endpoint).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

# Before gradio (and huggingface_hub) are imported: they read these once.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

MAX_UPLOAD = "100mb"  # a 50-megapixel photo (the service's limit) fits; anything bigger is refused up front
START_CHECK_SECONDS = 120
CONCURRENT_REQUESTS = 16  # per event: enough for a lab's worth of clients, each waiting on the model lock


def patient_start_check() -> None:
    """Give gradio's "is localhost reachable" check minutes, not 3 s.

    launch() sends one HEAD to the new server with a 3 s timeout and, when it times out,
    refuses to start unless share=True. On a CPU busy with training the first answer can
    take longer, so retry the same check until START_CHECK_SECONDS have passed.
    """
    from gradio import networking

    quick_check = networking.url_ok

    def url_ok(url: str) -> bool:
        deadline = time.monotonic() + START_CHECK_SECONDS
        while not quick_check(url):
            if time.monotonic() > deadline:
                return False
            time.sleep(1)
        return True

    networking.url_ok = url_ok


def aligner_choices():
    from zoo.data.align import aligner_names

    return aligner_names()


def runtime_choices():
    from zoo.runtime import runtime_names

    return runtime_names(auto=True)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python app.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="address to listen on (default $GRADIO_SERVER_NAME, else 127.0.0.1; 0.0.0.0 serves the "
                             "whole network, as a Hugging Face Space does)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)),
                        help="port (default $GRADIO_SERVER_PORT, else 7860)")
    parser.add_argument("--zoo", type=Path, default=None,
                        help="folder of checkpoints to serve (default $FACESCOPE_ZOO, else zoo/checkpoints)")
    parser.add_argument("--hub-endpoint", default=None, metavar="URL",
                        help="the Hugging Face Hub that the Zoo tab's Pull downloads from (default $HF_ENDPOINT, else "
                             "https://huggingface.co); visitors cannot change it")
    parser.add_argument("--aligner", choices=aligner_choices(), default=None,
                        help="face detector + landmarks for uploaded photos (default: the first listed, the one "
                             "the zoo was fine-tuned and evaluated with)")
    parser.add_argument("--no-peers", action="store_true",
                        help="leave out the pretrained peers (peer:dlib, peer:sface), which are listed after the zoo "
                             "models as reference points by default")
    parser.add_argument("--runtime", choices=runtime_choices(), default=runtime_choices()[0],
                        help="what computes the embeddings that Verify, the blur lab and the occlusion lab compare: "
                             "onnx (onnxruntime on each model's ONNX export, made once and kept in the cache folder, "
                             "$FACESCOPE_CACHE or cache/; 10-20 s a model the first time), torch, or auto (default: "
                             "the app starts at once on torch and moves each model to onnxruntime when its export is "
                             "ready, in the background). Grad-CAM, the methods' maps and the other analyses use "
                             "torch either way, and peers their own engine. The JSON of each verdict says which ran")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch and OpenCV threads (default 1: a request is a batch of two faces through small models, "
                             "which more threads slow down rather than speed up, badly so on a busy CPU)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.zoo is not None:
        if not args.zoo.is_dir():
            print(f"error: --zoo {args.zoo} is not a folder", file=sys.stderr)
            return 2
        os.environ["FACESCOPE_ZOO"] = str(args.zoo.resolve())  # zoo.LOCAL_ZOO reads it when zoo is imported,
        import zoo  # which the --aligner choices (zoo.data) may have done already: then move it here too

        zoo.LOCAL_ZOO = args.zoo.resolve()
    if args.hub_endpoint is not None and not args.hub_endpoint.startswith(("http://", "https://")):
        print(f"error: --hub-endpoint {args.hub_endpoint!r} is not a URL: give http(s)://HOST[:PORT]", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio logs every request it makes to itself
    import torch

    torch.set_num_threads(max(1, args.threads))
    import cv2

    cv2.setNumThreads(max(1, args.threads))

    from app.service import Service
    from app.ui import EXAMPLES, EXAMPLES_DIR, build
    from zoo.data import make_aligner
    from zoo.runtime import AUTO

    service = Service(hub_endpoint=args.hub_endpoint, aligner=make_aligner(args.aligner), peers=not args.no_peers)
    log = logging.getLogger("facescope.app")
    log.info("zoo %s: %s", service.zoo_dir, ", ".join(service.model_names()) or "empty")
    background = args.runtime == AUTO
    if args.runtime != "torch":
        log.info("runtime %s: exporting each model once (kept for the next start)%s", args.runtime,
                 "; serving by torch until each is ready" if background else "")
    service.models.use_runtime(args.runtime, background=background)  # logs what serves each model
    first, second, _ = EXAMPLES[0]
    service.warm_up(EXAMPLES_DIR / first, EXAMPLES_DIR / second)
    demo = build(service)
    patient_start_check()
    # Requests run side by side (Gradio's default is one at a time per event): model work still
    # takes turns under the service's lock, but concurrent verifications share forward passes.
    demo.queue(default_concurrency_limit=CONCURRENT_REQUESTS).launch(
        server_name=args.host, server_port=args.port, share=False, ssr_mode=False, max_file_size=MAX_UPLOAD,
        allowed_paths=[str(EXAMPLES_DIR)], footer_links=["api", "settings"], show_error=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
