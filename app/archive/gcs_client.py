"""A Google Cloud Storage client from the settings: service-account fields, a key file, or the emulator."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
from google.oauth2 import service_account

if TYPE_CHECKING:
    from app.config import Settings

EMULATOR_PROJECT = "local-project"
"""Project id used against an emulator when GCS_PROJECT_ID is not set."""


def project_id(settings: Settings) -> str:
    return settings.gcs_project_id or EMULATOR_PROJECT


def key_credentials(settings: Settings) -> service_account.Credentials | None:
    """The service account's credentials from the GCS_* fields, or GOOGLE_APPLICATION_CREDENTIALS;
    None when neither is set (the emulator, or the platform's credentials)."""
    if settings.gcs_private_key:
        info = {
            "type": "service_account",
            "project_id": settings.gcs_project_id,
            "private_key_id": settings.gcs_private_key_id,
            "private_key": settings.gcs_private_key,
            "client_email": settings.gcs_client_email,
            "token_uri": "https://oauth2.googleapis.com/token",
        }
        return service_account.Credentials.from_service_account_info(info)  # type: ignore[no-untyped-call, no-any-return]
    if settings.google_application_credentials:
        return service_account.Credentials.from_service_account_file(  # type: ignore[no-untyped-call, no-any-return]
            settings.google_application_credentials
        )
    return None


def make_client(settings: Settings) -> storage.Client:
    if settings.storage_emulator_host:
        # The library also reads this variable for its upload and download URLs.
        os.environ["STORAGE_EMULATOR_HOST"] = settings.storage_emulator_host
        return storage.Client(
            project=project_id(settings),
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            client_options=ClientOptions(api_endpoint=settings.storage_emulator_host),
        )
    if settings.gcs_private_key:
        return storage.Client(project=settings.gcs_project_id, credentials=key_credentials(settings))
    # GOOGLE_APPLICATION_CREDENTIALS (or the platform's default credentials).
    return storage.Client(project=settings.gcs_project_id or None)
