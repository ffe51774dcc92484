"""Building blocks of the decoder: norms, rotary embeddings, packed linears, paged attention, sampler."""
