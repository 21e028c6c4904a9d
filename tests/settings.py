"""The project's settings with one change, for the tests and every process they start.

Signing up and logging in hash a password with PBKDF2 at Django's work factor, which makes every
hash cost real CPU so that stolen hashes are slow to crack; the suite signs up and logs in a few
hundred authors on the servers it starts. MD5 runs the same code (a hash stored at sign-up,
checked at log-in, the session's hash of it) at no cost, and no test is about the work factor.
Everything else is project.settings, which `make run`, `make stack`, `make bench`, the image and
the compose files use as it is.
"""

from project.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
