"""An RTMP server with FFmpeg 8's RTMP and FLV code (PyAV): waits for one
publisher on URL, reads the stream until it ends, and prints, as JSON, what
it got per stream: [{"type", "codec", "width", "height", "packets"}].

Usage: rtmp_listen.py rtmp://127.0.0.1:PORT/APP/NAME
"""
import json
import sys

import av


def main():
    container = av.open(sys.argv[1], "r", format="flv", options={"listen": "1"}, timeout=60)
    streams = {}
    try:
        for packet in container.demux():
            if packet.size == 0:
                continue
            stream = packet.stream
            entry = streams.setdefault(stream.index, {
                "type": stream.type,
                "codec": stream.codec_context.name,
                "width": getattr(stream.codec_context, "width", None),
                "height": getattr(stream.codec_context, "height", None),
                "packets": 0,
            })
            entry["packets"] += 1
    except (av.error.EOFError, av.error.OSError):
        # The publisher unpublished and closed: FFmpeg's RTMP server reads
        # that as the end of input, or as an I/O error.
        pass
    print(json.dumps([streams[i] for i in sorted(streams)]), flush=True)


main()
