"""The models stage: real GGUFs from the hub (download.py) or synthetic replicas (replica.py).

registry.py says which file a model id stands for and the SHA-256 it must have; vocab.py builds the
replicas' tokenizers; pinned.py loads the pinned llama.cpp's gguf-py and llama-quantize. Takes
configs/ and a pin's build; gives model files whose hashes the lock names.
"""
