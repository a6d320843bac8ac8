"""The document KV cache: entries on disk (store), what identifies one (keys), their signature (mac) and the
checks an entry passes before it is used (check)."""
