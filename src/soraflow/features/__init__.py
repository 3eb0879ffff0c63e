"""The feature cache: VAE latents at each clip's bucket size and caption embeddings, in shards.

Open-Sora 1.1 re-encoded every clip with the frozen VAE and T5 at every step; soraflow encodes
once (stage ``features``, :func:`soraflow.features.cache.build_feature_cache`) and training
reads tensors (:class:`soraflow.features.cache.FeatureCache`). ``train.use_feature_cache:
false`` keeps the online path for data too large to cache.
"""
