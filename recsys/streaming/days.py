"""Which closed day an event-driven run may process, and which comes next: the order of event-driven runs.

With a sink in front, the daily DAG runs when the sink announces a closed day (``recsys_airflow.assets``). The
announcements alone cannot keep the days in order: one can be lost (the Kafka trigger commits its offset
before Airflow stores the asset event) and a run has no logical date, so ``depends_on_past`` does not hold a
day after a failed one. The store can: a day is **closed** when ``raw/events/dt=D/_SUCCESS`` exists, and
**processed** when the registry says its run got to the end (:func:`is_processed`). Days are processed in
date order, each after the newest processed day, so:

- a run of day X first looks for closed days between the newest processed day before X and X
  (:func:`earlier_unprocessed`); if there is one, X waits: the run fails naming the oldest such day E
  (:func:`waiting_message`), and E is announced again, so the next run retries E;
- a run that processed its day announces the oldest closed day after the newest processed day
  (:func:`next_unprocessed`), so each closed day gets its run, in order, even when its own announcement
  was lost (it is then processed when the next day's announcement finds it, or after the run before it).

Only days after the newest processed one count: a day that on-call chose to leave behind (a quarantined
partition nobody will accept) stops holding the later ones once a later day is processed by hand (the
**Partition date** parameter), as marking the failed run successful does on the daily schedule. Nothing
before ``RECSYS_SCHEDULE_START`` counts (the first date the DAG processes).
"""

from __future__ import annotations

from datetime import date

from recsys import registry
from recsys.config import Settings
from recsys.storage import PartitionStore, layout


def is_processed(reg: registry.Registry, day: date) -> bool:
    """True when ``day``'s run got to the end: its candidate was evaluated (the decision is recorded; a day too
    thin to train records one too) and, if blessed, deployed (or on-call skipped the deploy).

    A decision alone is not enough: a blessed candidate whose deploy failed would otherwise be deployed later,
    by a retry of that day, over the champion of a later day.
    """
    decision = reg["decisions"].get(day.isoformat())
    if decision is None:
        return False
    version = decision.get("candidate_version")
    if not decision.get("blessed") or version is None:
        return True
    return reg["champion"] == version or any(
        (entry.get("action") == registry.DEPLOYED and entry.get("to") == version)
        or (entry.get("action") == registry.DEPLOY_SKIPPED and entry.get("date") == day.isoformat())
        for entry in reg["history"]
    )


def _unprocessed_closed(store: PartitionStore, settings: Settings, reg: registry.Registry,
                        before: date | None) -> list[date]:
    """Closed days after the newest processed day (and from the schedule's start on), before ``before`` if
    given, oldest first."""
    first = date.fromisoformat(settings.schedule_start)
    candidates = [d for d in store.partitions(layout.RAW_EVENTS, complete_only=False)
                  if d >= first and (before is None or d < before)]
    processed = [d for d in candidates if is_processed(reg, d)]
    after = max(processed, default=None)
    # only the days after the newest processed one are read for their marker (one store call each)
    return [d for d in candidates if (after is None or d > after) and store.is_complete(layout.raw_events(d))]


def earlier_unprocessed(store: PartitionStore, settings: Settings, day: date) -> list[date]:
    """The closed days that must be processed before ``day``, oldest first (empty: ``day`` may run; so for a
    processed ``day``, whose rerun changes nothing)."""
    reg = registry.load(store)
    if is_processed(reg, day):
        return []
    return _unprocessed_closed(store, settings, reg, day)


def next_unprocessed(store: PartitionStore, settings: Settings) -> date | None:
    """The closed day the next event-driven run should process: the oldest after the newest processed day."""
    days = _unprocessed_closed(store, settings, registry.load(store), None)
    return days[0] if days else None


def status(store: PartitionStore, day: date) -> str:
    """What happened to an unprocessed closed ``day`` so far, in words for on-call (from its validation
    summary, quarantine and registry decision)."""
    reg = registry.load(store)
    decision = reg["decisions"].get(day.isoformat())
    if decision is not None:
        return (f"its candidate v{decision.get('candidate_version')} was blessed but is not deployed "
                "(the deploy failed or did not run)")
    if store.exists(layout.validation_summary(day)):
        summary = store.read_json(layout.validation_summary(day))
        if not summary.get("success") and not summary.get("accepted"):
            what = summary.get("problem") or ", ".join(summary.get("failed") or []) or "see the report"
            return (f"it failed validation ({what}) and is quarantined "
                    f"({store.uri(layout.quarantine_events(day))}); report {store.uri(layout.validation_summary(day))}")
        return "it passed validation, but its run stopped before its candidate was evaluated"
    return "no run has validated it yet (its announcement may have been lost)"


def waiting_message(store: PartitionStore, day: date, earlier: list[date]) -> str:
    """Why ``day`` waits for ``earlier`` (its closed, unprocessed predecessors, oldest first) and what to do."""
    first = earlier[0]
    more = f" (and {len(earlier) - 1} later closed day(s) after it)" if len(earlier) > 1 else ""
    return (f"{day} waits for {first}{more}: {first} is closed but not processed: {status(store, first)}. Days "
            f"are processed in date order, so {day} runs after {first}. {first} was announced again and runs "
            f"next; its run fails again until it is fixed (republish the partition, or rerun {first} by hand "
            f"with 'Partition date' = {first}, 'Accept invalid partition' and a reason; clear a failed task of a "
            f"transient failure). To leave {first} behind, run a later day by hand ('Partition date'). Once "
            f"{first} is processed, the days after it are announced again in order.")
