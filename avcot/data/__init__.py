"""Manifest rows -> checked items -> decoded media -> encoded examples, without Lightning.

Training (the DataModules in `datamodules/`), evaluation (`avcot.eval`) and the demo share this package:

- `rows`: reading and checking a manifest, the bad-row policy (`RejectLog`, `BadRowError`), row counts,
  the train/val split and the up-front media check.
- `clips`: `MediaSettings` with the per-task defaults (`CAVSR_MEDIA`, `MCQ_MEDIA`) and `load_clip`, the one
  clip decoder (frames, 16 kHz audio, image, fps) used by training, eval and the demo.
- `examples`: `Example`, the lazily decoding `ExampleDataset`, the (seed, epoch) sampler and the generic
  "rows of a task -> dataset" path (`prepare_rows`, `example_dataset`).
- `cavsr`, `mcq`: each task's row check, prompt and example builder (`CavsrTask`, `McqTask`).
- `loader`: `RowLoader`, the DataLoader that resumes exactly and records the rows its workers skipped.
"""
