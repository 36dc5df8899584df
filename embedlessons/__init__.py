"""embedlessons: tested teaching implementations behind the book *Training better text embedding models*.

One module per idea; import what you need, e.g. ``from embedlessons.models import load_model``:

- :mod:`embedlessons.data`: loaders for the real datasets (STS-B, SciFact, SICK, SNLI, AG News, ...).
- :mod:`embedlessons.models`: bi-encoders (MiniLM offline, small random BERTs), pooling, save/load.
- :mod:`embedlessons.encoding`: batched, length-sorted, cached encoding.
- :mod:`embedlessons.evaluation`: NDCG/MRR/Recall/MAP (equal to pytrec_eval), Spearman/Pearson.
- :mod:`embedlessons.lexical`: vectorised BM25 (equal to rank-bm25), word overlap.
- :mod:`embedlessons.retrieval`: dense search, retrieve-then-rerank, reciprocal rank fusion.
- :mod:`embedlessons.geometry`: isotropy, alignment/uniformity, silhouette.
- :mod:`embedlessons.losses`, :mod:`embedlessons.training`: contrastive losses and training loops.
- :mod:`embedlessons.negatives`, :mod:`embedlessons.indexing`, :mod:`embedlessons.ance`: hard negatives, FAISS.
- :mod:`embedlessons.task_losses`, :mod:`embedlessons.multitask`: classification / clustering losses, tasks,
  task samplers and task weighting on top of the trainer (Part 4).
- :mod:`embedlessons.matryoshka`, :mod:`embedlessons.quantization`: Matryoshka loss, truncation, two-stage
  search; int8 and binary embeddings (Part 4).
- :mod:`embedlessons.experiments`: the recipes a part's notebooks share; :mod:`embedlessons.recorded`: the
  recorded full-size experiments and their stored results.
- :mod:`embedlessons.landscape`: published MTEB figures, as cited data.
- :mod:`embedlessons.profile`: CPU vs GPU scale settings.
- :mod:`embedlessons.exercises`: checkers for the exercises.
- :mod:`embedlessons.book`, :mod:`embedlessons.progress`: glue for the book build, progress bars.
"""

__version__ = "0.2.0"
