"""A real SMTP server for tests (aiosmtpd), recording every mail it accepts."""

from __future__ import annotations

import asyncio
import email
import email.policy
import threading
from dataclasses import dataclass, field
from email.message import EmailMessage

from aiosmtpd.controller import Controller


@dataclass
class SmtpServer:
    """Listens on 127.0.0.1:``port`` until :meth:`stop`; ``delay_s``: a slow server, which
    takes that long to accept each mail's data."""

    port: int
    delay_s: float = 0.0
    messages: list[EmailMessage] = field(default_factory=list)
    _controller: Controller | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> SmtpServer:
        server = self

        class Handler:
            async def handle_DATA(self, _server, _session, envelope):  # noqa: N802 - aiosmtpd's
                if server.delay_s:
                    await asyncio.sleep(server.delay_s)
                message = email.message_from_bytes(envelope.original_content,
                                                   policy=email.policy.default)
                with server._lock:
                    server.messages.append(message)
                return "250 Message accepted for delivery"

        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def received(self) -> list[EmailMessage]:
        with self._lock:
            return list(self.messages)


def parts(message: EmailMessage) -> tuple[str, str]:
    """(plain text, HTML) of a multipart/alternative mail."""
    text = message.get_body(preferencelist=("plain",)).get_content()
    html = message.get_body(preferencelist=("html",)).get_content()
    return text, html
