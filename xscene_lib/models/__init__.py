"""Models: the estimator base and the two-tower base, the baselines, BPR-MF, the article's model, the joint
model, the sequential model, the click-through models, retrieval from a FAISS index and scenario weights. Imports
xscene_lib.evaluation, xscene_lib.training, xscene_lib.text and xscene_lib.data."""
from xscene_lib.models.article import ArticleModel
from xscene_lib.models.base import NotFittedError, Recommender
from xscene_lib.models.baselines import ItemKNN, Popularity, TextZeroShot, TrueAffinity
from xscene_lib.models.bpr import BPRMF, SingleScenario
from xscene_lib.models.ctr import ClickModel, Features, JointCTR, STAR, SharedBottom
from xscene_lib.models.ctr_protocol import click_through_split, click_through_table
from xscene_lib.models.joint import JointModel
from xscene_lib.models.retrieval import ItemIndex, default_nlist, item_vectors, recall_at_k, retrieve, user_vectors
from xscene_lib.models.scenario_weights import blended_ranks, simplex_grid, tune_scenario_weights
from xscene_lib.models.sequential import SequentialModel
from xscene_lib.models.two_tower import TwoTowerRecommender

__all__ = ['ArticleModel', 'BPRMF', 'ClickModel', 'Features', 'ItemIndex', 'ItemKNN', 'JointCTR', 'JointModel',
           'NotFittedError', 'Popularity', 'Recommender', 'STAR', 'SequentialModel', 'SharedBottom', 'SingleScenario',
           'TextZeroShot', 'TrueAffinity', 'TwoTowerRecommender', 'blended_ranks', 'click_through_split',
           'click_through_table', 'default_nlist', 'item_vectors', 'recall_at_k', 'retrieve', 'simplex_grid',
           'tune_scenario_weights', 'user_vectors']
