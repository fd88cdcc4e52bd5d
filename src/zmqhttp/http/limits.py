"""Bounds on what one HTTP connection may make us hold.

Every buffer the sans-IO core keeps is bounded by one of these numbers; each
says why it has its value. Units are bytes unless the name says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["KIB", "MIB", "Limits"]

KIB = 1024
MIB = 1024 * KIB


@dataclass(frozen=True, slots=True)
class Limits:
    #: Longest request-target. 8 KiB as gunicorn's limit_request_line and
    #: nginx's large_client_header_buffers; RFC 9112 §3 recommends supporting at
    #: least 8000 octets. Longer: 414.
    max_request_line: int = 8 * KIB
    #: Largest whole request head (request line, fields, CRLFs). 64 KiB is
    #: between h11's 16 KiB and node's 16 KiB-per-field and comfortably above
    #: browsers' cookie headers. Larger: 431. Also bounds what httptools buffers
    #: for a field value that never ends.
    max_head: int = 64 * KIB
    #: Most header fields in one request (gunicorn: 100, Apache: 100). More: 431.
    max_fields: int = 100
    #: Largest single field line, name and value (gunicorn 8190, Apache 8190).
    max_field_size: int = 8190
    #: Largest request body, declared or chunked. Larger: 413. 1 GiB lets
    #: large uploads through while stopping an endless chunked body.
    max_body: int = 1024 * MIB
    #: Raw bytes held for pipelined requests while a response is in progress
    #: (we cannot stop reading one ZMQ_STREAM peer). Beyond it the connection
    #: stops taking requests and closes after the ones already read; clients
    #: retry unanswered pipelined requests (RFC 9112 §9.3.2).
    max_pipeline_bytes: int = 256 * KIB
    #: Request body bytes the server reads and discards after a response that
    #: did not need them, to keep the connection alive. Beyond it: close.
    max_drain: int = 1 * MIB
