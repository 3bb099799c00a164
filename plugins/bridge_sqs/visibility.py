"""Keeping held SQS messages invisible while the applier works on them.

A received message comes back to other consumers when its visibility timeout runs out. A large
batch (or a throttled target table) can take longer than that, so a background thread extends the
visibility of every held message (received, not yet deleted or released) every third of the
timeout, with ChangeMessageVisibilityBatch. Core's apply loop never has to know. If the process
dies, the extensions stop and SQS hands the messages out again within one timeout.

SQS caps a message's total invisibility at 12 hours from its first receipt; past that the
extension fails, the message becomes visible again, and the applier's dedupe absorbs the repeat.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

log = logging.getLogger(__name__)

BATCH = 10  # ChangeMessageVisibilityBatch entries per call


class VisibilityKeeper:
    def __init__(self, client: Any, queue_url: str, timeout: int, where: str) -> None:
        self._client = client
        self._queue_url = queue_url
        self.timeout = timeout
        self.interval = max(0.5, timeout / 3)
        self.where = where
        self.extensions = 0  # successful per-message extensions, for tests and metrics
        self._held: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def hold(self, receipt_handles: list[str]) -> None:
        with self._lock:
            self._held.update(receipt_handles)
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name="sqs-visibility", daemon=True)
                self._thread.start()

    def drop(self, receipt_handles: list[str]) -> None:
        with self._lock:
            self._held.difference_update(receipt_handles)

    def held(self) -> list[str]:
        with self._lock:
            return list(self._held)

    def stop(self) -> list[str]:
        """Stop extending; returns what was still held."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        with self._lock:
            held, self._held = list(self._held), set()
        return held

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            handles = self.held()
            for start in range(0, len(handles), BATCH):
                if self._stop.is_set():
                    return
                self._extend(handles[start : start + BATCH])

    def _extend(self, handles: list[str]) -> None:
        entries = [{"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": self.timeout} for i, h in enumerate(handles)]
        try:
            response = self._client.change_message_visibility_batch(QueueUrl=self._queue_url, Entries=entries)
        except (ClientError, BotoCoreError) as exc:
            # The next tick tries again; if the link stays down the messages are redelivered later.
            log.warning("%s: could not extend the visibility of %d held messages: %s", self.where, len(handles), exc)
            return
        failed = response.get("Failed") or []
        self.extensions += len(handles) - len(failed)
        gone = [handles[int(failure["Id"])] for failure in failed]
        still_held = set(self.held())
        for handle, failure in zip(gone, failed, strict=True):
            if handle in still_held:  # not just deleted or released meanwhile
                log.warning(
                    "%s: visibility of a held message not extended (%s: %s); it may be redelivered",
                    self.where,
                    failure.get("Code"),
                    failure.get("Message"),
                )
        if gone:
            self.drop(gone)
