#!/usr/bin/env python3
"""Write a development `.env` (random SECRET_KEY and encryption key) if there is none.

Standard library only, so it runs before the virtualenv has anything in it.
"""

from __future__ import annotations

import base64
import os
import secrets
import sys
from pathlib import Path


def main() -> int:
    target = Path(sys.argv[1] if len(sys.argv) > 1 else ".env")
    if target.exists():
        print(f"{target} exists; leaving it as it is.")
        return 0
    fernet_key = base64.urlsafe_b64encode(os.urandom(32)).decode()
    target.write_text(
        "# Development settings written by `make run`. See deploy/env.example for all variables.\n"
        "DJANGO_DEBUG=on\n"
        f"SECRET_KEY={secrets.token_urlsafe(50)}\n"
        f"ENCRYPTION_KEYS={fernet_key}\n"
    )
    target.chmod(0o600)
    print(f"Wrote {target} with a new SECRET_KEY and encryption key.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
