"""Next-best-action: which offer to show a customer, learned from what follows.

- ``config``: the format of ``rules/actions.yaml`` (msgspec Structs).
- ``book``: that file checked (every problem at its line and column, with the
  trigger rules' checker) and compiled into an ``ActionBook``.
- ``features``: the context vector a decision sees of the profile.
- ``customer``: per event, on the customer's side where the profile is: the
  ``Context`` (eligible actions, features) and the reward ``Signal``.
- ``linucb``: River's LinUCB, its bounds, and its state as msgspec values.
- ``pending``: decisions waiting for their rewards, in bounded memory.
- ``policy``: ``NextBestAction``: decides, credits rewards, learns, snapshots.
- ``records``: the inputs, the ``Decision`` and ``Outcome`` records, the ids.

Pure like the rest of ``engine``: no I/O, no clocks, no random state; the
dataflow feeds inputs in and writes the records out (docs/next-best-action.md).
"""
