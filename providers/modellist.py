"""Model lists in each client dialect's shape (`/v1/models`, `/v1beta/models`)."""

import time
from datetime import datetime, timezone
from typing import Any

from pool.account import Account
from providers.catalog import OWNERS

CREATED = int(time.mktime((2025, 1, 1, 0, 0, 0, 0, 0, 0)))


def openai_models(models: list[tuple[str, Account]]) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"id": model, "object": "model", "created": CREATED, "owned_by": OWNERS[account.family]}
            for model, account in models
        ],
    }


def anthropic_models(models: list[tuple[str, Account]]) -> dict[str, Any]:
    created_at = datetime.fromtimestamp(CREATED, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    data = [
        {
            "type": "model",
            "id": model,
            "display_name": model,
            "created_at": created_at,
        }
        for model, _ in models
    ]
    return {
        "data": data,
        "has_more": False,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }


def gemini_model(model: str) -> dict[str, Any]:
    return {
        "name": f"models/{model}",
        "version": "001",
        "displayName": model,
        "description": f"{model}, served through cliproxy",
        "inputTokenLimit": 1048576,
        "outputTokenLimit": 65536,
        "supportedGenerationMethods": ["generateContent", "streamGenerateContent", "countTokens"],
    }


def gemini_models(models: list[tuple[str, Account]]) -> dict[str, Any]:
    return {"models": [gemini_model(model) for model, _ in models]}
