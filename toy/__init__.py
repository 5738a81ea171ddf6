"""The ShapeWorld toy, in one place: a procedural world of coloured shapes with GenEval prompts (world.py), the
toy model's word encoder and configuration (model.py), its hand-written detector (detector.py), its no-reference
quality score (quality.py) and the script that pretrains the shipped weights (train.py: `python -m toy.train`).

It sits on common/ (GenEval's rules and templates, the LlamaGen model); the rewards registry (rewards/__init__.py)
reaches the detector and the quality score by name ("geneval", "geneval_strict", "shapeworld_quality").
"""
