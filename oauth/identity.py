"""Who a login belongs to: email, account id, plan and project, per provider.

- Codex: the `id_token` JWT from the token endpoint carries the email and, under the claim
  `https://api.openai.com/auth`, the ChatGPT account id (`chatgpt_account_id`) and plan
  (`chatgpt_plan_type`).
- Claude: the token response contains `account` (`email_address`, `uuid`) and `organization`
  (`uuid`, `name`) objects.
- Gemini: the email comes from Google's userinfo endpoint. The Code Assist project is the one
  the user gave, or else the one Code Assist reports for the account:

      POST {code-assist-url}/v1internal:loadCodeAssist
      Authorization: Bearer <access token>
      {"metadata": {"ideType": "IDE_UNSPECIFIED", "platform": "PLATFORM_UNSPECIFIED",
                    "pluginType": "GEMINI"}}

  whose response names the project in `cloudaicompanionProject`, either as a string or as an
  object with an `id`.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests

from oauth.errors import IdentityError
from oauth.http import HttpSettings
from oauth.providers import Endpoints, ProviderOAuth
from oauth.tokens import TokenSet

logger = logging.getLogger(__name__)

OPENAI_AUTH_CLAIM = "https://api.openai.com/auth"

LOAD_CODE_ASSIST_BODY: Mapping[str, Any] = {
    "metadata": {
        "ideType": "IDE_UNSPECIFIED",
        "platform": "PLATFORM_UNSPECIFIED",
        "pluginType": "GEMINI",
    }
}


@dataclass(frozen=True)
class AccountIdentity:
    """The identity fields of one login. Which fields are set depends on the provider.

    `account_id` is the ChatGPT account id (Codex) or the account uuid (Claude). `plan` is the
    ChatGPT plan type. `project_auto` is True when the Gemini project was discovered through
    Code Assist instead of given by the user.
    """

    email: str | None = None
    account_id: str | None = None
    plan: str | None = None
    organization_uuid: str | None = None
    organization_name: str | None = None
    project_id: str | None = None
    project_auto: bool = False


def decode_jwt_claims(token: str) -> dict[str, Any]:
    """Return the payload claims of a JWT without verifying its signature.

    The signature is not checked because the token was just received over TLS from the token
    endpoint in response to our own request, and its claims only label the account (file name,
    email, plan, the ChatGPT-Account-Id header). Nothing is authorized on them.
    Raises IdentityError for a value that is not a JWT with a JSON object payload.
    """
    parts = token.split(".")
    if len(parts) != 3:
        raise IdentityError("id_token is not a JWT: expected three dot-separated parts")
    payload = parts[1]
    payload += "=" * (-len(payload) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (ValueError, UnicodeDecodeError) as exc:
        raise IdentityError(f"id_token payload is not base64url-encoded JSON: {exc}") from exc
    if not isinstance(claims, dict):
        raise IdentityError("id_token payload is not a JSON object")
    return claims


def codex_identity_from_id_token(id_token: str) -> AccountIdentity:
    """Read email, ChatGPT account id and plan from a Codex id token."""
    claims = decode_jwt_claims(id_token)
    auth = claims.get(OPENAI_AUTH_CLAIM)
    auth = auth if isinstance(auth, dict) else {}
    return AccountIdentity(
        email=_str_or_none(claims.get("email")),
        account_id=_str_or_none(auth.get("chatgpt_account_id")),
        plan=_str_or_none(auth.get("chatgpt_plan_type")),
    )


def codex_identity(tokens: TokenSet) -> AccountIdentity:
    """Return the Codex identity of a token response. Raises IdentityError without an id token."""
    if not tokens.id_token:
        raise IdentityError("codex token response has no id_token, so the account cannot be identified")
    return codex_identity_from_id_token(tokens.id_token)


def claude_identity(tokens: TokenSet) -> AccountIdentity:
    """Return the Claude identity from the token response's `account` and `organization` objects.

    Fields missing from the response stay None.
    """
    account = tokens.response.get("account")
    account = account if isinstance(account, Mapping) else {}
    organization = tokens.response.get("organization")
    organization = organization if isinstance(organization, Mapping) else {}
    return AccountIdentity(
        email=_str_or_none(account.get("email_address")),
        account_id=_str_or_none(account.get("uuid")),
        organization_uuid=_str_or_none(organization.get("uuid")),
        organization_name=_str_or_none(organization.get("name")),
    )


def gemini_identity(
    tokens: TokenSet,
    endpoints: Endpoints,
    http: HttpSettings,
    *,
    project_id: str | None = None,
) -> AccountIdentity:
    """Fetch the Gemini account's email and find its Code Assist project (blocking HTTP).

    `project_id` is the user's choice. When it is empty, the project comes from loadCodeAssist.
    Raises IdentityError when userinfo fails or no project can be found.
    """
    if not endpoints.userinfo_url or not endpoints.code_assist_url:
        raise IdentityError("gemini endpoints need userinfo-url and code-assist-url")

    headers = {"Authorization": f"Bearer {tokens.access_token}", "Accept": "application/json"}
    with http.new_session() as session:
        userinfo = _get_json(session, "GET", endpoints.userinfo_url, headers, None, http)
        email = _str_or_none(userinfo.get("email"))
        if email is None:
            raise IdentityError("Google userinfo response has no email")

        project = (project_id or "").strip()
        if project:
            return AccountIdentity(email=email, project_id=project, project_auto=False)

        url = f"{endpoints.code_assist_url}/v1internal:loadCodeAssist"
        load_response = _get_json(session, "POST", url, headers, LOAD_CODE_ASSIST_BODY, http)

    discovered = _project_from_load_code_assist(load_response)
    if discovered is None:
        # TODO: accounts that were never onboarded need Code Assist's onboardUser call, which
        # is not implemented, so such users must pass a project id.
        raise IdentityError(
            f"Code Assist reported no project for {email}: pass a Google Cloud project id "
            "with the login, or sign in to the Gemini CLI once to set one up"
        )
    logger.info("discovered Code Assist project for %s", email)
    return AccountIdentity(email=email, project_id=discovered, project_auto=True)


def identity_for(
    provider: ProviderOAuth,
    tokens: TokenSet,
    endpoints: Endpoints,
    http: HttpSettings,
    *,
    project_id: str | None = None,
) -> AccountIdentity:
    """Return the identity of a fresh login for any provider (blocking HTTP for Gemini)."""
    if provider.name == "codex":
        return codex_identity(tokens)
    if provider.name == "claude":
        return claude_identity(tokens)
    if provider.name == "gemini":
        return gemini_identity(tokens, endpoints, http, project_id=project_id)
    raise IdentityError(f"no identity lookup for provider {provider.name!r}")


def _project_from_load_code_assist(response: Mapping[str, Any]) -> str | None:
    project = response.get("cloudaicompanionProject")
    if isinstance(project, Mapping):
        project = project.get("id")
    return _str_or_none(project)


def _get_json(
    session: requests.Session,
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: Mapping[str, Any] | None,
    http: HttpSettings,
) -> Mapping[str, Any]:
    try:
        response = session.request(method, url, headers=dict(headers), json=body, timeout=http.timeout)
    except requests.RequestException as exc:
        raise IdentityError(f"{method} {_without_query(url)} failed: {type(exc).__name__}: {exc}") from exc
    if response.status_code != 200:
        raise IdentityError(f"{method} {_without_query(url)} failed with HTTP {response.status_code}")
    try:
        data = response.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise IdentityError(f"{method} {_without_query(url)} did not return a JSON object")
    return data


def _without_query(url: str) -> str:
    return url.split("?", 1)[0]


def _str_or_none(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None
