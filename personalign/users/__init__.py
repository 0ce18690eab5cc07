"""User models (docs/user-models.md): frozen features φ(x, y), learned user
representations (bt, mean-diff, lowrank, mixture, embedding, latent), few-shot adaptation of new
users, the seen/unseen-user protocol, and the preference-direction model."""
