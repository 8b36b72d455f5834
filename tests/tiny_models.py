"""Tiny randomly initialized transformers saved offline, for tests."""

import torch
import transformers

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "john", "smith", "lives", "in", "new", "york", "paris", "is",
         "nice", "hi", "the", "city", ".", ",", "un", "##believ", "##able", "##s"]


def write_tiny_bert(directory, layers=4, max_positions=16, seed=0):
    """A random BERT (hidden 32, 2 heads) and its WordPiece tokenizer saved to ``directory``."""
    torch.manual_seed(seed)
    tokenizer = transformers.BertTokenizerFast(vocab={w: i for i, w in enumerate(VOCAB)})
    tokenizer.save_pretrained(str(directory))
    config = transformers.BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=layers,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=max_positions)
    transformers.BertModel(config).save_pretrained(str(directory))
    return str(directory)
