"""What a tab's status line says: its notes, or why the last request failed, markdown-safe."""
from __future__ import annotations

import html
import logging
import threading
from collections import OrderedDict
from contextlib import contextmanager
from typing import Iterator, List, Optional

import gradio as gr

from .errors import USER_ERRORS

log = logging.getLogger(__name__)


class Failures:
    """The last failure message of each (session, status area).

    gr.Error stops an event without touching its outputs, so the event's .failure() step reads
    the message from here to show it in the page, beside the browser's toast. Bounded: API
    callers never run .failure() steps, so their entries are dropped oldest first.
    """

    def __init__(self, limit: int = 512):
        self._messages: "OrderedDict[tuple, str]" = OrderedDict()
        self._limit = limit
        self._lock = threading.Lock()

    @contextmanager
    def reported(self, request: Optional[gr.Request], area: str) -> Iterator[None]:
        """Turn any error in the block into gr.Error (unexpected ones are logged with traceback)."""
        try:
            yield
        except USER_ERRORS as err:
            message = str(err)
        except Exception as err:  # the app must answer every request, whatever went wrong
            log.exception("%s failed", area)
            message = f"unexpected error ({type(err).__name__}: {err}); details are in the app's log"
        else:
            return
        with self._lock:
            self._messages[(_session(request), area)] = message
            while len(self._messages) > self._limit:
                self._messages.popitem(last=False)
        raise gr.Error(message, title="FaceScope could not do that") from None

    def shower(self, area: str, cleared: int):
        """The .failure() step of `area`: its status line shows the message, `cleared` outputs empty."""
        def show(request: gr.Request):
            with self._lock:
                message = self._messages.pop((_session(request), area), "it failed")
            return (f"**Problem:** {escape(message)}", *([None] * cleared))
        return show


def _session(request: Optional[gr.Request]) -> Optional[str]:
    return getattr(request, "session_hash", None)


def escape(text: str) -> str:
    """Markdown-safe: no HTML from file names or messages, quotes left readable for API callers."""
    return html.escape(text, quote=False)


def status_text(lines: List[str], lead: str = "") -> str:
    """A status line: `lead`, then one bullet per note."""
    items = ([escape(lead)] if lead else []) + [f"- {escape(line)}" for line in lines]
    return "\n".join(items)
