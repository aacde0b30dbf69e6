"""Mini world: procedural renderer with exact ground truth and an exact classical judge.

Inputs/outputs: see `render` (kinds, background, seed -> `Scene`), `judge` (image -> `Judged`),
`vocab` (names), `report` (judge accuracy study; imported on demand, it needs pandas).

Usage:
    from compseed_lib.miniworld import render_count, count_objects
    scene = render_count("ball", 3, "on the sand", seed=0)
    assert count_objects(scene.image, "ball") == 3
"""
from .judge import Judged, background_of, count_objects, judge_scene, relation_holds
from .render import Box, Scene, render_count, render_relation, render_scene
from .vocab import BACKGROUNDS, KINDS, OPPOSITE, RELATIONS, check_vocab_matches

__all__ = ["BACKGROUNDS", "KINDS", "OPPOSITE", "RELATIONS", "Box", "Judged", "Scene", "background_of",
           "check_vocab_matches", "count_objects", "judge_scene", "relation_holds", "render_count",
           "render_relation", "render_scene"]
