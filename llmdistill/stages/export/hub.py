"""``export.push_to_hub``: the written folder uploaded to a Hub dataset repo."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from llmdistill.atomic import MARK
from llmdistill.errors import UserError

log = logging.getLogger(__name__)


def hub_api(token: str):
    """The Hugging Face Hub client (a seam for tests: no network there)."""
    from huggingface_hub import HfApi

    return HfApi(token=token)


def push(folder: Path, repo_id: str, private: bool) -> None:
    """Upload the export folder to a dataset repo; one line naming what failed, the local copy kept."""
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if not token:
        raise UserError(f"--push-to-hub {repo_id}: no Hugging Face token in HF_TOKEN; everything is written locally in {folder}")
    try:
        api = hub_api(token)
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        api.upload_folder(
            folder_path=str(folder), repo_id=repo_id, repo_type="dataset", ignore_patterns=[MARK]
        )  # the marker is local bookkeeping
    except Exception as e:  # offline, unreachable, refused: all end the same way for the user
        reason = " ".join(str(e).split())[:200]
        raise UserError(
            f"--push-to-hub {repo_id}: the Hub could not be reached or refused the upload ({type(e).__name__}: {reason}); "
            f"everything is written locally in {folder}"
        ) from None
    log.info("pushed %s to the Hub as dataset %s (%s)", folder, repo_id, "private" if private else "public")
