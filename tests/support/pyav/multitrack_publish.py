"""Publishes a live multitrack stream over RTMP with FFmpeg 8's FLV muxer and
RTMP client (PyAV): two H.264 tracks (track 0 at 640x360, track 1 at 320x180,
as OBS's Enhanced Broadcasting sends renditions) and AAC, at real time.

Usage: multitrack_publish.py URL SECONDS
Prints, as JSON, the packets it sent per stream: {"video": [n0, n1], "audio": n}.
"""
import fractions
import json
import sys
import time

import av

FPS = 25
RATE = 44100
SAMPLES = 1024


def main():
    url, seconds = sys.argv[1], int(sys.argv[2])
    out = av.open(url, "w", format="flv")
    video = []
    for width, height in [(640, 360), (320, 180)]:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"g": str(2 * FPS), "preset": "ultrafast", "tune": "zerolatency"}
        video.append(stream)
    audio = out.add_stream("aac", rate=RATE, layout="stereo")
    sent = {"video": [0, 0], "audio": 0}

    def mux(packets, count):
        for packet in packets:
            out.mux(packet)
            count()

    def count_video(i):
        def add():
            sent["video"][i] += 1
        return add

    def count_audio():
        sent["audio"] += 1

    start = time.monotonic()
    audio_pts = 0
    for n in range(seconds * FPS):
        due = start + n / FPS
        time.sleep(max(0.0, due - time.monotonic()))
        for i, stream in enumerate(video):
            frame = av.VideoFrame(stream.width, stream.height, "yuv420p")
            for plane in frame.planes:
                plane.update(bytes([(n * 7 + i * 60 + plane.line_size) % 255]) * plane.buffer_size)
            frame.pts, frame.time_base = n, fractions.Fraction(1, FPS)
            mux(stream.encode(frame), count_video(i))
        while audio_pts < (n + 1) * RATE // FPS:
            frame = av.AudioFrame(format="fltp", layout="stereo", samples=SAMPLES)
            for plane in frame.planes:
                plane.update(bytes(plane.buffer_size))
            frame.sample_rate, frame.pts = RATE, audio_pts
            frame.time_base = fractions.Fraction(1, RATE)
            audio_pts += SAMPLES
            mux(audio.encode(frame), count_audio)
    for i, stream in enumerate(video):
        mux(stream.encode(), count_video(i))
    mux(audio.encode(), count_audio)
    out.close()
    print(json.dumps(sent), flush=True)


main()
