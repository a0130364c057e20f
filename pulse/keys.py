"""Redis key layout, shared by the dataflow (writer) and the API (reader).

Every per-customer key carries the customer id in a hash tag ``{...}`` so all
of one customer's keys land on the same Redis Cluster slot.
"""

from __future__ import annotations


class RedisKeys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def profile(self, customer_id: str) -> str:
        return f"{self.prefix}:{{{customer_id}}}:profile"

    def email(self, digest: str) -> str:
        """Customers known by one e-mail address: a set of customer ids, keyed by
        the address's digest (engine/email_index.py), never the address itself."""
        return f"{self.prefix}:email:{digest}"

    def emails(self, customer_id: str) -> str:
        """The e-mail digests a customer is indexed under: a set, so an erasure
        can take the customer out of each."""
        return f"{self.prefix}:{{{customer_id}}}:emails"

    def inbox(self, customer_id: str) -> str:
        """In-app messages: a sorted set of message JSON scored by fired_at."""
        return f"{self.prefix}:{{{customer_id}}}:inbox"

    def delivery(self, trigger_id: str) -> str:
        """Dispatcher's idempotency record for one trigger."""
        return f"{self.prefix}:delivery:{{{trigger_id}}}"

    def segment(self, name: str) -> str:
        """Set of customer keys in a segment (one key per segment, not per customer)."""
        return f"{self.prefix}:segment:{name}"

    def progress(self) -> str:
        """Dataflow input positions: "<topic>:<partition>" -> next offset."""
        return f"{self.prefix}:dataflow:progress"

    def workers(self) -> str:
        """Dataflow workers: index -> JSON {processed, started_at, at}."""
        return f"{self.prefix}:dataflow:workers"

    def item(self, sku: str) -> str:
        return f"{self.prefix}:item:{{{sku}}}"

    def similar(self, sku: str) -> str:
        """An item's similar items (engine/recs/relations.py), MessagePack."""
        return f"{self.prefix}:item:{{{sku}}}:similar"

    def item_categories(self) -> str:
        """Each item's category (sku -> category), one hash: what the API shows
        for the items of the overall lists, which hold bare SKUs."""
        return f"{self.prefix}:items:categories"

    def ranking(self, name: str) -> str:
        """A popularity list (engine/recs/trending.py: ``popular``, ``trending``,
        ``popular:{category}``, ``trending:{category}``), a sorted set."""
        return f"{self.prefix}:rank:{name}"

    def model(self, name: str) -> str:
        """A published model (``scores``: engine/scores/serving.py PublishedScores), MessagePack."""
        return f"{self.prefix}:model:{name}"

    def also_bought(self, sku: str) -> str:
        return f"{self.prefix}:item:{{{sku}}}:also"

    def nba_decision(self, decision_id: str) -> str:
        """A next-best-action decision's customer, for reward calls; expires with
        its window. (The customer's live decision is the profile hash's ``nba``
        field, dataflows/nba_step.py.)"""
        return f"{self.prefix}:nba:decision:{decision_id}"

    def caught_up(self) -> str:
        """Input partitions read to their end: "<topic>:<partition>" -> JSON [at, yes]."""
        return f"{self.prefix}:dataflow:caught_up"

    def rules_status(self) -> str:
        """The rule version the dataflow loaded last (JSON), for `pulse status`."""
        return f"{self.prefix}:dataflow:rules"

    def rule_stats(self, rule_id: str) -> str:
        """Decision counts of one rule: outcome[:reason] -> count (absolute values)."""
        return f"{self.prefix}:rule:{{{rule_id}}}:stats"

    def console_samples(self) -> str:
        """The console's pipeline samples (api/console/history.py): a sorted set
        of JSON by time, the last hour; what "in the last hour" and its charts
        are computed from."""
        return f"{self.prefix}:console:samples"

    def console_slot(self, slot: int) -> str:
        """Claimed by the one API process that writes the sample of this slot."""
        return f"{self.prefix}:console:slot:{slot}"
