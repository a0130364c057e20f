"""Recommendations learned from the stream: pure functions over small msgspec states.

- ``bounded``: time-decayed weights in a map of fixed capacity (space-saving),
  the building block that keeps every item's memory bounded.
- ``relations``: item-to-item relations (co-viewed, viewed then bought, bought
  together), one ``ItemRelations`` per item, fed by ``PairSignal`` values.
- ``shopper``: what the recommender remembers per customer (recent items with
  their categories, purchases) and the pair signals each event gives.
- ``trending``: popular and trending items, overall and per category.
- ``ranker``: the personalised ranking with its filters and request contexts.

Nothing here does I/O: the dataflow feeds events in and writes the states'
serving views to Redis; the API reads those and calls ``ranker.recommend``.
"""
