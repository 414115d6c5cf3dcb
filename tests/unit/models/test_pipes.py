"""The worker's side of a prediction process's pipes: whole messages from a non-blocking pipe, however they arrive."""

from __future__ import annotations

import multiprocessing
import os
import struct
import threading
from collections.abc import Iterator
from multiprocessing.connection import Connection

import pytest

from stateservice.models.pipes import Frames


@pytest.fixture
def pipe() -> Iterator[tuple[int, Connection]]:
    """A non-blocking read fd and the Connection that writes to it, as a prediction process's answers pipe."""
    reader, writer = multiprocessing.Pipe(duplex=False)
    os.set_blocking(reader.fileno(), False)
    yield reader.fileno(), writer
    reader.close()
    writer.close()


def test_small_messages_arrive_whole_and_in_order(pipe: tuple[int, Connection]) -> None:
    fd, writer = pipe
    frames = Frames()
    assert frames.read(fd) == ([], False)  # nothing yet: no wait, no error
    for message in (b"one", b"", b"three"):
        writer.send_bytes(message)
    assert frames.read(fd) == ([b"one", b"", b"three"], False)


def test_a_message_larger_than_the_pipe_arrives_whole_over_several_reads(pipe: tuple[int, Connection]) -> None:
    fd, writer = pipe
    frames = Frames()
    message = bytes(range(256)) * 4096  # 1 MiB: 16 times what a Linux pipe holds
    sending = threading.Thread(target=writer.send_bytes, args=(message,))
    sending.start()
    got: list[bytes] = []
    while not got:
        found, ended = frames.read(fd)
        assert not ended
        got += found
    sending.join()
    assert got == [message]
    assert frames.buffer == bytearray()


def test_the_end_of_the_pipe_comes_after_the_messages_before_it(pipe: tuple[int, Connection]) -> None:
    fd, writer = pipe
    frames = Frames()
    writer.send_bytes(b"last words")
    writer.close()
    assert frames.read(fd) == ([b"last words"], True)


def test_the_long_length_form_is_read_and_a_partial_message_waits(pipe: tuple[int, Connection]) -> None:
    fd, writer = pipe  # Connection writes an 8-byte length only past 2 GiB: written by hand here
    frames = Frames()
    os.write(writer.fileno(), struct.pack("!i", -1) + struct.pack("!Q", 5) + b"hello" + struct.pack("!i", 3) + b"ab")
    assert frames.read(fd) == ([b"hello"], False)  # the second is not whole yet
    os.write(writer.fileno(), b"c")
    assert frames.read(fd) == ([b"abc"], False)
