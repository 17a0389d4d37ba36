"""Accounts: sign-up, sign-in, refresh-token rotation and revocation (``/auth``)."""
