"""Times as people type them: `--since yesterday`, `--until 2026-11-01`, `--since 2h`.

Everything is read in the machine's local time zone and returned as an
aware datetime, which the archive compares in UTC. A bare date or day name
means the start of that day, or with ``end=True`` (for ``--until``) the end
of it, so ``--since monday --until monday`` is all of Monday.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from .config import parse_duration

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
FORMS = "a date (2026-11-01), a time (2026-11-01T09:00), today, yesterday, monday, or 2h / 7d ago"


def parse_when(text: str, *, end: bool = False, now: datetime | None = None) -> datetime:
    """An aware datetime; ValueError naming the accepted forms if ``text`` is none of them."""
    now = (now or datetime.now()).astimezone()
    word = text.strip().lower().removesuffix(" ago")
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    day: datetime | None = None
    if word == "now":
        return now
    if word == "today":
        day = midnight
    elif word == "yesterday":
        day = midnight - timedelta(days=1)
    elif word in WEEKDAYS:  # the latest such day, today included
        day = midnight - timedelta(days=(now.weekday() - WEEKDAYS.index(word)) % 7)
    if day is not None:
        return day + timedelta(days=1) if end else day
    try:
        return now - timedelta(seconds=parse_duration(word))
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a time; give {FORMS}") from None
    if parsed.tzinfo is None:
        parsed = parsed.astimezone()  # local time
    is_date = len(text.strip()) <= 10  # 2026-11-01: the whole day
    return parsed + timedelta(days=1) if end and is_date else parsed


def between(
    since: str | datetime | None,
    until: str | datetime | None,
    *,
    names: tuple[str, str] = ("--since", "--until"),
) -> tuple[datetime | None, datetime | None]:
    """``since`` and ``until`` as aware times (None where not given): text as
    :func:`parse_when` reads it, ``until``'s as the end of its day; a datetime as it
    is, in local time if naive (as a typed one is). ValueError, naming them by
    ``names``, if one is not a time or they are the wrong way round (an error, not
    "no match")."""
    times = []
    for name, given, end in zip(names, (since, until), (False, True), strict=True):
        try:
            times.append(parse_when(given, end=end) if isinstance(given, str) else given)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    after, before = (t if t is None or t.tzinfo else t.astimezone() for t in times)
    if after is not None and before is not None and after >= before:
        raise ValueError(
            f"{names[0]} {str(since)!r} is not before {names[1]} {str(until)!r}; "
            "nothing was said between them"
        )
    return after, before
