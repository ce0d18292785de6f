"""Print `.env.example` as the settings declare it; `--check` compares the file with it instead.

python scripts/env_example.py > .env.example
python scripts/env_example.py --check
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.config import env_example, settings_table  # noqa: E402


def main(argv: list[str]) -> int:
    if argv not in ([], ["--check"], ["--table"]):
        sys.stderr.write(__doc__ or "")
        return 2
    if argv == ["--check"]:
        path = ROOT / ".env.example"
        if path.read_text() != env_example():
            sys.stderr.write(
                f"{path} differs from the settings: python scripts/env_example.py > .env.example\n"
            )
            return 1
        return 0
    sys.stdout.write(settings_table() if argv == ["--table"] else env_example())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
