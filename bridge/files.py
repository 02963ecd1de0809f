"""Files only the service user may read: the instance folder, the database, the secret key.

The database holds the bot token, the webhook token and the callback secret in
plain text, so its files must not be readable by other accounts on the
Mattermost box, whatever umask the bridge was started with (a shell's 0022 or
0002). New files are created owner-only; files an older version (or a copy
with another umask) left readable to others are tightened when opened.
"""

from __future__ import annotations

import logging
import os
import stat

log = logging.getLogger(__name__)

PRIVATE_DIRECTORY = 0o700
PRIVATE_FILE = 0o600
# SQLite keeps these beside the database (WAL mode: -wal and -shm).
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


def private_directory(path: str) -> None:
    """Create ``path`` (and missing parents) and leave it owner-only (0700)."""
    os.makedirs(path, mode=PRIVATE_DIRECTORY, exist_ok=True)
    restrict(path)


def create_private_file(path: str) -> bool:
    """Create ``path`` empty and owner-only (0600) unless it exists; True if created.

    ``O_EXCL`` makes it safe when several gunicorn workers start at once.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def restrict(path: str) -> None:
    """Take group and other permissions off ``path``, if it exists.

    Owner bits are left as they are; a file this process does not own is
    logged, not fatal (the admin set it up that way).
    """
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return
    if mode & 0o077:
        try:
            os.chmod(path, mode & 0o700)
        except OSError as exc:
            log.warning("cannot make %s private (mode %o): %s", path, mode, exc)


def private_database(path: str) -> None:
    """Make sure the SQLite file and its companions are owner-only before opening it.

    SQLite creates ``-wal`` and ``-shm`` with the database file's own
    permissions (os_unix.c findCreateFileMode / robust_open), so a 0600
    database gives 0600 companions whatever the umask.
    """
    if path == ":memory:" or path.startswith("file:"):
        return
    try:
        create_private_file(path)
    except FileNotFoundError:
        return  # no such folder: sqlite3.connect reports it as before
    for name in (path, *(path + suffix for suffix in SQLITE_COMPANIONS)):
        restrict(name)
