"""The ranking stage (issue 19): a second model that re-orders the two-tower's candidates with richer features.

Retrieval (:mod:`recsys.serving.index`) scores every item with one dot product per customer; it cannot
weigh *how* a customer bought an item (how often, how long ago), what sells this week, or what goes with
what they just bought. The ranking stage takes, per customer, the union of

- the retrieval model's top ``n_retrieval`` items,
- the customer's own past items (the history snapshot, up to ``repeat_length`` of them),
- the ``n_trending`` items bought most in the days before,

builds one feature row per (customer, candidate) (:mod:`recsys.ranking.features`: one function, the same at
training and ranking time) and orders them with a small deep & cross network trained with a listwise
softmax loss on which candidates the customer bought that day (:mod:`recsys.ranking.model`), fine-tuned
day by day from its previous weights.

Layering: above ``features`` and ``model``, below ``serving``. The retrieval scorer is passed in (anything
with ``scores(user_ids)`` and ``item_ids``, as :class:`recsys.serving.index.Scorer`), so serving can import
this package without a cycle.
"""

from recsys.ranking.candidates import Candidates, DayInputs, day_inputs, generate
from recsys.ranking.features import FEATURES, Lists, build, labels, to_lists

__all__ = ["FEATURES", "Candidates", "DayInputs", "Lists", "build", "day_inputs", "generate", "labels", "to_lists"]
