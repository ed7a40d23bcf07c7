"""Users and roles: local accounts (technician, clinician, admin) with argon2id passwords, API
tokens and login sessions (:mod:`.directory`), and ``bedside users`` (:mod:`.commands`)."""

from gateway.users.directory import (
    USERS_FILE,
    LockedError,
    Role,
    Session,
    User,
    UserDirectory,
    UserError,
)

__all__ = ["USERS_FILE", "LockedError", "Role", "Session", "User", "UserDirectory", "UserError"]
