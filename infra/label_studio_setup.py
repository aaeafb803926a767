"""Administrative fixes for the local Label Studio server, done through Django's ORM.

Run with the Label Studio venv's python (NOT the project venv) and the same
``LABEL_STUDIO_BASE_DATA_DIR`` as the server; ``infra/label_studio.sh`` does this
for you. Every command is idempotent and prints one JSON object on stdout.

Commands
--------
``ensure-admin-token --email E`` (token read from env ``LABELLOOP_LS_TOKEN``)
    Switch legacy API tokens on for every organisation the user belongs to and
    make ``E``'s legacy token equal to the given one. Used when a data folder was
    created without ``--enable-legacy-api-token`` (LS >= 1.23 disables legacy
    tokens for new organisations) or when the credentials file was lost/rotated.

``annotator-tokens --admin-email E EMAIL [EMAIL ...]``
    Create the given users if missing, add them to the admin's organisation and
    print ``{"annotators": {email: {"id": ..., "token": ...}}}`` — per-user
    legacy tokens, so simulated annotators can act as themselves.

Why the ORM: LS 1.23 has no API for an administrator to read another user's
token, and ``POST /api/users`` ignores passwords, so per-user credentials can
only be minted server-side.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def _django() -> None:
    import label_studio

    ls_path = os.path.dirname(label_studio.__file__)
    sys.path.insert(0, ls_path)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "core.settings.label_studio")
    # keep Django/LS start-up chatter off stdout (stdout carries our JSON)
    real_stdout = sys.stdout
    sys.stdout = sys.stderr
    try:
        import django

        django.setup()
    finally:
        sys.stdout = real_stdout


def _enable_legacy(user) -> list[int]:
    from jwt_auth.models import JWTSettings

    changed = []
    orgs = list(user.organizations.all())
    if user.active_organization is not None and user.active_organization not in orgs:
        orgs.append(user.active_organization)
    for org in orgs:
        jwt, _ = JWTSettings.objects.get_or_create(organization=org)
        if not jwt.legacy_api_tokens_enabled:
            jwt.legacy_api_tokens_enabled = True
            jwt.save()
            changed.append(org.id)
    return changed


def ensure_admin_token(email: str, token: str) -> dict:
    from rest_framework.authtoken.models import Token
    from users.models import User

    user = User.objects.filter(email=email).first()
    if user is None:
        return {"ok": False, "error": f"no user {email}"}
    enabled = _enable_legacy(user)
    token_changed = False
    if token:
        if len(token) > 40:
            return {"ok": False, "error": "legacy tokens are at most 40 characters"}
        current = Token.objects.filter(user=user).first()
        if current is None or current.key != token:
            Token.objects.filter(user=user).delete()
            Token.objects.filter(key=token).delete()
            Token.objects.create(user=user, key=token)
            token_changed = True
    return {"ok": True, "user_id": user.id, "legacy_enabled_for_orgs": enabled, "token_changed": token_changed}


def annotator_tokens(admin_email: str, emails: list[str]) -> dict:
    from rest_framework.authtoken.models import Token
    from users.models import User

    admin = User.objects.filter(email=admin_email).first()
    if admin is None or admin.active_organization is None:
        return {"ok": False, "error": f"no admin {admin_email} with an organisation"}
    org = admin.active_organization
    _enable_legacy(admin)
    out = {}
    for email in emails:
        user = User.objects.filter(email=email).first()
        if user is None:
            user = User.objects.create_user(email=email, username=email.split("@")[0])
            user.set_unusable_password()
            user.save()
        org.add_user(user)
        if user.active_organization_id != org.id:
            user.active_organization = org
            user.save(update_fields=["active_organization"])
        token, _ = Token.objects.get_or_create(user=user)
        out[email] = {"id": user.id, "token": token.key}
    return {"ok": True, "annotators": out}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("ensure-admin-token")
    a.add_argument("--email", required=True)
    b = sub.add_parser("annotator-tokens")
    b.add_argument("--admin-email", required=True)
    b.add_argument("emails", nargs="+")
    args = ap.parse_args(argv)

    _django()
    if args.cmd == "ensure-admin-token":
        result = ensure_admin_token(args.email, os.environ.get("LABELLOOP_LS_TOKEN", ""))
    else:
        result = annotator_tokens(args.admin_email, args.emails)
    print(json.dumps(result))
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
