"""Pieces the benchmarks share: audio loading, raw PocketSphinx, scoring, reading an archive.

Only the standard library is imported at module level: the pipeline's children
are spawned, and a spawned child re-imports the benchmark script (and so this
module), so anything heavy imported here would be charged to their start-up.
"""

from __future__ import annotations

import re
import sqlite3
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    from pocketsphinx import Decoder

RATE = 16000
ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
CORPUS = DATA / "corpus"
MEETING_WAV = DATA / "festival" / "meeting.wav"
MEETING_JSON = DATA / "festival" / "meeting.json"

# raw PocketSphinx: the same endpointer settings and decoder the pipeline uses
EP_WINDOW = 0.3
EP_RATIO = 0.9
_FILLER = re.compile(r"^[<\[].*[>\]]$")  # <s>, </s>, <sil>, [NOISE], [SPEECH]
_ALT_PRON = re.compile(r"\(\d+\)$")  # "the(2)"


# --- audio ------------------------------------------------------------------------


def load_mono16k(path: Path) -> np.ndarray:
    """Any file soundfile reads → int16 mono at 16 kHz (down-mix, then soxr if needed)."""
    import numpy as np
    import soundfile as sf
    import soxr

    data, rate = sf.read(str(path), dtype="int16", always_2d=True)
    if data.shape[1] == 1:
        mono = data[:, 0]
    else:
        mono = np.round(data.astype(np.float32).mean(axis=1)).astype(np.int16)
    if rate != RATE:
        mono = soxr.resample(mono, rate, RATE)
    return np.ascontiguousarray(mono, dtype=np.int16)


# --- PocketSphinx with no pipeline -----------------------------------------------


def pocketsphinx_utterances(decoder: Decoder, pcm: bytes) -> list[str]:
    """16 kHz int16 mono PCM → the text of each utterance (possibly ''), in order.

    What a user of the library would write: ``Endpointer`` splits the audio,
    ``decoder`` decodes each piece whole; fillers and ``(2)`` suffixes are dropped.
    """
    from pocketsphinx import Endpointer

    ep = Endpointer(window=EP_WINDOW, ratio=EP_RATIO, sample_rate=RATE)
    fb = ep.frame_bytes
    speech: list[bytes] = []
    chunks: list[bytes] = []
    end = len(pcm) // fb * fb
    for i in range(0, end, fb):
        got = ep.process(pcm[i : i + fb])
        if got is not None:
            speech.append(got)
            if not ep.in_speech:
                chunks.append(b"".join(speech))
                speech = []
    got = ep.end_stream(pcm[end:] or b"\0\0")  # it raises on an empty buffer
    if got is not None:
        speech.append(got)
    if speech:
        chunks.append(b"".join(speech))
    texts: list[str] = []
    for utt in chunks:
        decoder.start_utt()
        decoder.process_raw(utt, full_utt=True)
        decoder.end_utt()
        words = [_ALT_PRON.sub("", s.word) for s in decoder.seg() if not _FILLER.match(s.word)]
        texts.append(" ".join(words))
    return texts


# --- scoring ----------------------------------------------------------------------


def normalize(text: str) -> str:
    """Lower case, no punctuation (apostrophes inside words kept), single spaces.

    Letters and digits of any script are kept, so Korean survives it.
    """
    text = text.lower().replace("\u2019", "'")
    text = re.sub(r"[^\w' ]+|_", " ", text)
    text = re.sub(r"(?<![^\W_])'|'(?![^\W_])", " ", text)
    return " ".join(text.split())


def corpus_wer(references: list[str], hypotheses: list[str]) -> float:
    """Word error rate over all files together (errors / reference words)."""
    import jiwer

    refs = [normalize(r) for r in references]
    hyps = [normalize(h) for h in hypotheses]
    return jiwer.wer(refs, hyps)


def corpus_cer(references: list[str], hypotheses: list[str]) -> float:
    """Character error rate over all files together, spaces left out.

    For scripts whose word segmentation is loose (Korean): a word split in
    two costs nothing here, a wrong syllable costs one character.
    """
    import jiwer

    refs = [normalize(r).replace(" ", "") for r in references]
    hyps = [normalize(h).replace(" ", "") for h in hypotheses]
    return jiwer.cer(refs, hyps)


# --- the pipeline's archive -------------------------------------------------------


def read_archive(db_path: Path, paths: list[Path]) -> tuple[dict[Path, str], int]:
    """Each file's session text, utterances in time order; a missing session reads as ''."""
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        sessions: dict[str, list[int]] = {}
        for sid, source in con.execute("SELECT id, source FROM sessions ORDER BY id"):
            sessions.setdefault(source, []).append(sid)
        hypotheses: dict[Path, str] = {}
        total = 0
        for path in paths:
            ids = sessions.get(str(path.resolve()), [])
            if len(ids) != 1:
                print(f"  warning: {len(ids)} sessions for {path.name}", file=sys.stderr)
            texts: list[str] = []
            for sid in ids:
                rows = con.execute(
                    'SELECT text FROM utterances WHERE session_id = ? ORDER BY start, "end", id',
                    (sid,),
                ).fetchall()
                texts += [t for (t,) in rows]
                total += len(rows)
            hypotheses[path] = " ".join(texts)
        return hypotheses, total
    finally:
        con.close()
