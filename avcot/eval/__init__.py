"""Evaluation: CAVSR CER with ablations, MCQ accuracy, benchmark loaders and reports."""
