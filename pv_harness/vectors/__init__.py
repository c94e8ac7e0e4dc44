"""Stage 3, vectors: persona-vector files (`files`), pooled activations (`activations`), and extraction
from collection logs (`extraction`, its default filter in `thresholds`), and other tools' formats (`interop`: llama.cpp
GGUF, repeng, steering-vectors, the paper's .pt). Torch loads only when a vector
or a model does."""
