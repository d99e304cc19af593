"""Text features: the BERT encoder and its on-disk cache, item-text recipes, PCA and whitening, int8
vectors, and TF-IDF / random-BERT vectors for comparison. Imports only xscene_lib.data."""
from xscene_lib.text.baselines import random_bert, tfidf_vectors
from xscene_lib.text.cache import (PartsError, TextCacheWarning, VectorCache, merge_parts, part_name, settings_key,
                                   text_hash, write_part)
from xscene_lib.text.encoder import (ModelNotFoundError, TextEncoder, load_model, locate_model, model_fingerprint,
                                     model_size)
from xscene_lib.text.int8 import quantize_int8
from xscene_lib.text.pca import PCA, normalize, reduce
from xscene_lib.text.recipes import Recipe, item_texts

__all__ = ['ModelNotFoundError', 'PCA', 'PartsError', 'Recipe', 'TextCacheWarning', 'TextEncoder', 'VectorCache',
           'item_texts', 'load_model', 'locate_model', 'merge_parts', 'model_fingerprint', 'model_size', 'normalize',
           'part_name', 'quantize_int8', 'random_bert', 'reduce', 'settings_key', 'text_hash', 'tfidf_vectors',
           'write_part']
