"""Data pipelines that build the SFT sets: CAVSR (AV-CoT traces) and AVRT (merged teacher traces).

`python -m avcot.pipeline cavsr|avrt --input FILE --out DIR [--config YAML]`; see docs/pipeline.md.
Stages are pure row functions; ``runner`` makes them resumable (Parquet shards keyed by a content
hash), concurrent and optionally distributed on Ray Data; ``config`` selects the backends.
"""
from avcot.pipeline.avrt import run_avrt
from avcot.pipeline.cavsr import run_cavsr
from avcot.pipeline.config import PipelineConfig, load_config
from avcot.pipeline.report import Counts

__all__ = ["Counts", "PipelineConfig", "load_config", "run_avrt", "run_cavsr"]
