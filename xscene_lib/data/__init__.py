"""Data: datasets and their sources, verified storage, the Dataset with its scenario views and splits, the
toy generator, and the one way to validate arguments (`DataError`). The bottom of the pipeline: imports
nothing else from xscene_lib."""
from xscene_lib.data.dataset import Dataset, Description, Split, cold_start
from xscene_lib.data.food_kitchen import parse_food_kitchen, read_plain_pickle
from xscene_lib.data.formats import (RawFormat, Tables, delimited_table, integer_column, movie_text,
                                     parse_ml100k_atomic, parse_ml100k_grouplens, parse_ml1m_atomic,
                                     parse_ml1m_grouplens, split_title)
from xscene_lib.data.loading import FetchError, default_data_dir, fetch, load
from xscene_lib.data.perturb import blank_texts, relabel_scenarios
from xscene_lib.data.registry import DatasetSpec, Fallback, Pin, available, spec_of
from xscene_lib.data.scenarios import assign_scenarios, scenario_views
from xscene_lib.data.store import (copy_atomically, read_tables, sha256_file, tables_problem, write_atomically,
                                   write_tables)
from xscene_lib.data.synthetic import SyntheticTruth
from xscene_lib.data.validation import (DataError, DataTypeError, check_choice, check_flag, check_int, check_number,
                                        check_positive_int, checked_ids, require_columns)

__all__ = ['DataError', 'DataTypeError', 'Dataset', 'DatasetSpec', 'Description', 'Fallback', 'FetchError', 'Pin',
           'RawFormat', 'Split', 'SyntheticTruth', 'Tables', 'assign_scenarios', 'available', 'blank_texts',
           'check_choice', 'check_flag', 'check_int', 'check_number', 'check_positive_int', 'checked_ids', 'cold_start',
           'copy_atomically', 'default_data_dir', 'delimited_table', 'fetch', 'integer_column', 'load', 'movie_text',
           'parse_food_kitchen', 'parse_ml100k_atomic', 'parse_ml100k_grouplens', 'parse_ml1m_atomic',
           'parse_ml1m_grouplens', 'read_plain_pickle', 'read_tables', 'relabel_scenarios', 'require_columns',
           'scenario_views', 'sha256_file', 'spec_of', 'split_title', 'tables_problem', 'write_atomically',
           'write_tables']
