"""Where the tests and benchmarks find real data: ``shared/`` beside the repository (as laid
for a developer and for CI), read in place and never copied into the repository."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
SEEDS = SHARED / "seeds"  # protocol notes and captured samples of the Stocktwits APIs
REAL_DATA = SHARED / "data" / "stocktwits-real"
CRAWLER = REAL_DATA / "anshulrao-stocktwits-crawler"
API_JSON = CRAWLER / "api_json"  # REST API v2 responses
HISTORY = CRAWLER / "history"  # per-symbol message histories (CSV, some gzipped)
COLLECTOR = REAL_DATA / "bilardi-stocktwits-collector"
